"""A LoRA trained on a full-weight warm-up names the warm-up as its base, loads with plain PEFT +
transformers and answers as the run did; `export --base-model-id` refuses an id that is not this model."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from echodistill.cli import main

from train_helpers import make_dataset, tiny_config


@pytest.fixture(scope="module")
def stacked_run(tmp_path_factory, tiny_qwen2_audio_dir):
    """models/tiny -> full-weight warm-up (2 steps) -> LoRA GRPO from it (2 steps); paths as a user gives them."""
    from echodistill.train.sft import run_warmup
    from echodistill.train.trainer import run_train

    root = tmp_path_factory.mktemp("stacked")
    data = make_dataset(root / "data")
    shutil.copytree(tiny_qwen2_audio_dir, root / "models" / "tiny")
    old = os.getcwd()
    os.chdir(root)
    try:
        run_warmup(tiny_config(data, "models/tiny", "runs/warm", "warmup.max_steps=2", "warmup.learning_rate=3e-2",
                               "warmup.prompts_per_device=4", "warmup.eval_steps=0"), progress=False)
        lora = ["model.lora.enabled=true", "model.lora.r=4", "model.lora.alpha=8", "train.learning_rate=3e-2"]
        run_train(tiny_config(data, "models/tiny", "runs/lora", *lora, "train.variant=grpo",
                              "train.init_from=runs/warm/final", "train.eval_steps=0"))
    finally:
        os.chdir(old)
    return root, data


def _inputs(adapter, data):
    from echodistill.audio.io import load_audio

    wavs = [load_audio(data / "audio" / f"val{i}.wav") for i in range(3)]
    return adapter.build_inputs(["Which tone is it? Choices: low, high, mid, rising"] * 3, wavs)


@pytest.mark.slow
def test_lora_on_full_weight_warmup_names_the_warmup_and_loads_with_plain_peft(stacked_run, monkeypatch):
    from peft import PeftModel
    from transformers import Qwen2AudioForConditionalGeneration

    from echodistill.models import load_adapter
    from echodistill.run_config import config_for_checkpoint

    root, data = stacked_run
    monkeypatch.chdir(root)
    final = root / "runs" / "lora" / "final"
    assert json.loads((final / "adapter_config.json").read_text())["base_model_name_or_path"] == "runs/warm/final"
    assert 'base_model: "runs/warm/final"' in (final / "README.md").read_text()

    out = root / "export"
    assert main(["export", "runs/lora", "--out", str(out)]) == 0
    base = json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert base == "runs/warm/final"

    ours = load_adapter(config_for_checkpoint(final).model, path=final, train=False)
    batch = _inputs(ours, data)
    with torch.no_grad():
        want_logits = ours.hf(**batch).logits
        want = ours.hf.generate(**batch, max_new_tokens=4, do_sample=False)
    # the standard PEFT way, from the exported folder alone
    plain = PeftModel.from_pretrained(Qwen2AudioForConditionalGeneration.from_pretrained(base), str(out)).eval()
    raw = PeftModel.from_pretrained(Qwen2AudioForConditionalGeneration.from_pretrained("models/tiny"),
                                    str(out)).eval()
    with torch.no_grad():
        got_logits = plain(**batch).logits
        got = plain.generate(**batch, max_new_tokens=4, do_sample=False)
        raw_logits = raw(**batch).logits
    torch.testing.assert_close(got_logits, want_logits, rtol=1e-4, atol=1e-4)
    assert torch.equal(got, want)  # the same answers, token for token
    assert not torch.allclose(raw_logits, want_logits, atol=1e-3)  # on the raw model it would be another model


@pytest.mark.slow
def test_export_refuses_a_base_model_id_that_is_not_this_model(stacked_run, tiny_qwen_omni_dir, monkeypatch,
                                                               capsys, tmp_path):
    root, _ = stacked_run
    monkeypatch.chdir(root)
    assert main(["export", "runs/lora", "--out", str(tmp_path / "a"),
                 "--base-model-id", "Qwen/Qwen2-Audio-7B-Instruct"]) == 2
    err = capsys.readouterr().err
    assert "names a 7B-parameter model" in err and "runs/warm/final" in err and not (tmp_path / "a").exists()
    assert main(["export", "runs/lora", "--out", str(tmp_path / "b"),
                 "--base-model-id", "Qwen/Qwen2.5-Omni-7B"]) == 2
    assert "qwen2.5-omni" in capsys.readouterr().err
    assert main(["export", "runs/lora", "--out", str(tmp_path / "c"), "--base-model-id", str(tiny_qwen_omni_dir)]) == 2
    assert "model_type" in capsys.readouterr().err  # a local folder: compared config to config
    assert main(["export", "runs/lora", "--out", str(tmp_path / "d"), "--base-model-id", "models/tiny"]) == 0
    assert main(["export", "runs/lora", "--out", str(tmp_path / "e"), "--base-model-id", "me/tiny-audio"]) == 0
