"""The reasoning format end to end on the tiny random Qwen2-Audio: warm-up targets, eval rows, metrics,
predict; and the clear error for a manifest without evidence."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from echodistill.audio.io import write_audio
from echodistill.config import load_config
from echodistill.data.manifest import read_manifest
from echodistill.data.prompts import target_text
from echodistill.errors import UserError
from echodistill.eval.evaluate import Condition, evaluate_items
from echodistill.eval.metrics import compute_metrics
from echodistill.inference import Query, predict_queries
from echodistill.models import load_adapter
from echodistill.train.sft import completion_ids, load_warmup_model, run_warmup

WORDS = ["low", "high", "middle", "none"]


@pytest.fixture
def tiny_data(tmp_path) -> Path:
    """train: 4 items with evidence; val: 2; a noise folder."""
    root = tmp_path / "bench"
    (root / "audio").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = {"train": [], "val": []}
    for split, n in (("train", 4), ("val", 2)):
        for k in range(n):
            path = root / "audio" / f"{split}{k}.wav"
            t = np.arange(8000) / 16000
            write_audio(path, (0.3 * np.sin(2 * np.pi * (300 + 300 * k) * t)).astype(np.float32))
            rows[split].append({"id": f"{split}{k}", "audio": str(path), "question": "Which tone is it?",
                                "choices": list(WORDS), "target": WORDS[k % 2], "task": "tone", "split": split,
                                "evidence": f"a tone, {('low', 'high')[k % 2]} pitch"})
    for split, rs in rows.items():
        (root / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rs))
    write_audio(root / "noise" / "music" / "m0.wav", (0.2 * rng.standard_normal(32000)).astype(np.float32))
    return root


def _cfg(data: Path, model: Path, out: Path, *extra: str):
    return load_config(None, [
        f"run.output_dir={out}", "run.num_threads=1", "run.log_with=null", f"data.bench_dir={data}",
        "data.max_duration_s=1.0", "data.response_format=reasoning", "model.backbone=embedded", f"model.path={model}",
        "noise.train_types=[white,music]", "warmup.prompts_per_device=2", "warmup.max_steps=2",
        "warmup.warmup_ratio=0.0", "warmup.eval_steps=2", "warmup.eval_items=2", "eval.batch_size=2",
        "eval.max_new_tokens=12", *extra])


def test_reasoning_warmup_eval_metrics_predict(tiny_data, tiny_qwen2_audio_dir, tmp_path):
    cfg = _cfg(tiny_data, tiny_qwen2_audio_dir, tmp_path / "run")
    item = read_manifest(cfg.data.train_manifest)[0]
    ad = load_warmup_model(cfg)
    ids = completion_ids(ad, target_text(item.target, item.evidence, "reasoning"))
    assert ad.tokenizer.decode(ids[:-1]) == "<think>a tone, low pitch</think><answer>low</answer>"
    s = run_warmup(cfg, progress=False)
    assert s["steps"] == 2
    evals = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any("val_clean_acc" in r for r in evals)

    model = load_adapter(cfg.model, path=tmp_path / "run" / "final", train=False)
    rows, bad = evaluate_items(model, read_manifest(cfg.data.val_manifest),
                               [Condition("clean"), Condition("noisy", "white", 0.0), Condition("silent")], cfg)
    assert not bad and len(rows) == 6
    for r in rows:
        assert {"evidence", "evidence_target", "well_formed"} <= set(r)
        assert r["evidence_target"].startswith("a tone") and isinstance(r["well_formed"], bool)
    m = compute_metrics(rows, n_boot=20)
    assert set(m["evidence"]) >= {"clean", "noisy", "silent", "noisy_by_snr"}
    assert m["evidence"]["clean"]["EvidenceF1"]["n"] == 2

    q = Query("q", str(tiny_data / "audio" / "val0.wav"), "Which tone is it?", list(WORDS))
    free = Query("f", str(tiny_data / "audio" / "val0.wav"), "What do you hear?", [])
    out = predict_queries(model, [q, free], cfg)
    assert all("evidence" in r and r["error"] is None for r in out)


def test_reasoning_warmup_needs_evidence(tiny_data, tiny_qwen2_audio_dir, tmp_path):
    for split in ("train", "val"):
        p = tiny_data / f"{split}.jsonl"
        rows = [json.loads(x) for x in p.read_text().splitlines()]
        p.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "evidence"}) + "\n" for r in rows))
    with pytest.raises(UserError, match="evidence"):
        run_warmup(_cfg(tiny_data, tiny_qwen2_audio_dir, tmp_path / "run"), progress=False)


def test_reasoning_rl_step_logs_the_evidence_signals(tiny_data, tiny_qwen2_audio_dir, tmp_path):
    from echodistill.train.trainer import run_train

    out = tmp_path / "rl"
    cfg = _cfg(tiny_data, tiny_qwen2_audio_dir, out, "train.variant=echodistill-evidence", "train.max_steps=1",
               "train.num_generations=2", "train.prompts_per_device=2", "train.eval_steps=0", "train.save_steps=1",
               f"noise.noise_dir={tiny_data}/noise", "train.learning_rate=1e-3", "train.warmup_ratio=0.0")
    assert cfg.train.max_completion_length == 24  # the format's length
    run_train(cfg)
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    for key in ("reward_accuracy_mean", "reward_format_mean", "reward_consistency_mean",
                "reward_evidence_grounding_mean"):
        assert key in row, key
    assert row["reward_format_mean"] == 0.0  # a random model writes no well-formed completion
