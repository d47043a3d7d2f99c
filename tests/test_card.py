"""Model cards written with every final model, and `echodistill export` (push_to_hub-ready, no upload):
base model named as the user gave it, LoRA stages shipped along, the exported folder loads on its own."""

from __future__ import annotations

import json
import shutil

import pytest

from echodistill.cli import main
from echodistill.config import load_config

from train_helpers import tiny_config


def _answers(model_dir, cfg, wav_dir):
    from echodistill.inference import gather_queries, predict_queries
    from echodistill.models import load_adapter

    model = load_adapter(cfg.model, path=model_dir, train=False)
    qs = gather_queries(wav_dir, "Which tone is it?", ["low", "high", "mid", "rising"])
    return [r["response"] for r in predict_queries(model, qs, cfg, batch_size=4)]


@pytest.mark.slow
def test_cards_and_export_of_a_lora_run_on_a_lora_warmup(data_dir, tiny_qwen2_audio_dir, tmp_path, monkeypatch,
                                                          capsys):
    from echodistill.eval.evaluate import run_eval
    from echodistill.train.sft import run_warmup
    from echodistill.train.trainer import run_train

    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    shutil.copytree(tiny_qwen2_audio_dir, tmp_path / "models" / "tiny")
    lora = ["model.path=models/tiny", "model.lora.enabled=true", "model.lora.r=4", "model.lora.alpha=8"]
    wcfg = tiny_config(data_dir, "models/tiny", tmp_path / "warm", *lora, "warmup.max_steps=2",
                       "warmup.prompts_per_device=4", "warmup.eval_steps=0", "warmup.logging_steps=1")
    run_warmup(wcfg, progress=False)
    warm_card = (tmp_path / "warm" / "final" / "README.md").read_text()
    assert 'base_model: "models/tiny"' in warm_card and "supervised warm-up" in warm_card
    assert "echodistill warmup -c ../config.yaml" in warm_card

    cfg = tiny_config(data_dir, "models/tiny", tmp_path / "ed", *lora, "train.variant=echodistill",
                      f"train.init_from={tmp_path / 'warm' / 'final'}")
    final = run_train(cfg)
    card = (final / "README.md").read_text()
    adapter_base = json.loads((final / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert adapter_base == "models/tiny"  # as the user gave it, not rewritten to an absolute local path
    meta = json.loads((final / "echodistill_model.json").read_text())
    assert meta["base_path"] == str((tmp_path / "models" / "tiny").resolve())  # what loading uses first
    assert 'base_model: "models/tiny"' in card and "library_name: peft" in card  # the card: as the user gave it
    assert "- variant: `echodistill`: the paper's bonus" in card and "- teacher signals: `consistency` x1" in card
    assert "- train: `" in card and "8 items (tone 8)" in card and "- val: `" in card
    assert "2 of 2 steps" in card and "LoRA" in card and "val_clean_acc" in card
    assert f"started from: `{tmp_path / 'warm' / 'final'}`" in card
    assert "echodistill train -c ../config.yaml run.output_dir=<new folder>" in card

    ev = tmp_path / "eval_ed"
    ecfg = load_config(tmp_path / "ed" / "config.yaml", ["eval.noise_types=[white]", "eval.snr_levels=[0]",
                                                          "eval.bootstrap=50", f"data.test_manifest={data_dir}/val.jsonl"])
    run_eval(ecfg, checkpoint=final, out_dir=ev, name="echodistill")
    expected = _answers(final, ecfg, data_dir / "audio")
    monkeypatch.chdir(data_dir)  # elsewhere, "models/tiny" means nothing: the recorded path loads it
    other = load_config(tmp_path / "ed" / "config.yaml", ["model.path=/nonexistent/tiny"])
    assert _answers(final, other, data_dir / "audio") == expected
    monkeypatch.chdir(tmp_path)

    out = tmp_path / "export"
    assert main(["export", str(tmp_path / "ed"), "--out", str(out), "--base-model-id", "org/tiny-audio",
                 "--eval", str(ev)]) == 0
    assert "nothing was uploaded" in capsys.readouterr().out
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == "org/tiny-audio"
    assert (out / "stages" / "0" / "adapter_config.json").is_file()  # the warm-up's LoRA, shipped along
    assert json.loads((out / "echodistill_model.json").read_text())["merged_adapters"] == ["stages/0"]
    assert not list(out.rglob("*.pt"))  # no optimizer / trainer state in a published folder
    exported = (out / "README.md").read_text()
    assert 'base_model: "org/tiny-audio"' in exported and "| echodistill | val | 4 |" in exported
    assert "echodistill train -c echodistill_config.yaml" in exported and (out / "echodistill_config.yaml").is_file()

    # the exported folder stands alone: the warm-up run is gone, the base resolves through model.path
    shutil.rmtree(tmp_path / "warm")
    assert _answers(out, ecfg, data_dir / "audio") == expected

    assert main(["export", str(tmp_path / "ed"), "--out", str(out)]) == 2  # not empty: refused, one line
    assert "is not empty" in capsys.readouterr().err
