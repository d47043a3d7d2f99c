"""Warm-up / sft-noisy (train/sft.py) on the tiny random Qwen2-Audio and a tiny manifest made here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from echodistill.audio.io import write_audio
from echodistill.config import load_config
from echodistill.data.manifest import read_manifest
from echodistill.eval.evaluate import Condition, evaluate_items
from echodistill.train.sft import (AudioCache, WarmupData, completion_ids, item_prompt, load_warmup_model,
                                   prepare_rows, run_warmup, sft_forward)

from train_helpers import read_metrics, tone

WORDS = ["yes", "no", "maybe", "music"]


@pytest.fixture
def tiny_data(tmp_path) -> Path:
    """train: 6 items on 3 distinct clips (two questions per clip); val: 2 items; a noise folder."""
    root = tmp_path / "bench"
    (root / "audio").mkdir(parents=True)
    rows = {"train": [], "val": []}
    for c in range(3):
        path = root / "audio" / f"c{c}.wav"
        write_audio(path, tone(300 + 200 * c, 0.4 + 0.2 * c, seed=c))
        for q, question in enumerate(["What is the spoken word?", "Which sound is it?"]):
            rows["train"].append({"id": f"t{c}{q}", "audio": str(path), "question": question,
                                  "choices": list(WORDS), "target": WORDS[(c + q) % 4], "task": "tone"})
    for v in range(2):
        path = root / "audio" / f"v{v}.wav"
        write_audio(path, tone(300 + 200 * v, 0.5, seed=10 + v))
        rows["val"].append({"id": f"v{v}", "audio": str(path), "question": "Which sound is it?",
                            "choices": list(WORDS), "target": WORDS[v], "task": "tone"})
    for split, rs in rows.items():
        (root / f"{split}.jsonl").write_text("".join(json.dumps(dict(r, split=split)) + "\n" for r in rs))
    rng = np.random.default_rng(1)
    write_audio(root / "noise" / "music" / "m0.wav", (0.2 * rng.standard_normal(32000)).astype(np.float32))
    return root


def _cfg(data: Path, model: Path, out: Path, *extra: str):
    return load_config(None, [
        f"run.output_dir={out}", "run.num_threads=1", "run.log_with=null", "run.seed=3",
        f"data.bench_dir={data}", "data.max_duration_s=1.0", "model.backbone=embedded", f"model.path={model}",
        "noise.train_types=[white,music]", "warmup.prompts_per_device=4", "warmup.max_steps=3",
        "warmup.learning_rate=3e-3", "warmup.warmup_ratio=0.0", "warmup.eval_steps=2", "warmup.eval_items=2",
        "warmup.logging_steps=1", "eval.batch_size=2", "eval.max_new_tokens=3", *extra])


def test_loss_decreases_on_a_repeated_batch(tiny_data, tiny_qwen2_audio_dir, tmp_path):
    cfg = _cfg(tiny_data, tiny_qwen2_audio_dir, tmp_path / "run")
    ad = load_warmup_model(cfg)
    items = read_manifest(cfg.data.train_manifest)
    data = WarmupData(cfg, items)
    rows = [data.row(it, 0) for it in items]
    cache = AudioCache(True)
    prompt_ids, hidden = prepare_rows(ad, rows, cache, cfg.data.choice_seed)
    assert cache.encoded == 3  # three distinct clips for six items
    targets = [completion_ids(ad, it.target) for it in items]
    assert all(t[-1] in ad.eos_token_ids for t in targets)
    # prompts equal the ones generation sees (build_inputs on the same text and clip)
    b = ad.build_inputs([item_prompt(items[0], cfg.data.choice_seed)[0]], [data.clean(items[0])])
    assert b["input_ids"][0].tolist() == prompt_ids[0]
    params = [p for p in ad.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-2)
    losses = []
    for _ in range(8):
        feats = ad.project_audio(ad.hf, torch.cat(hidden))
        loss, _ = sft_forward(ad, prompt_ids, targets, feats)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.6 * losses[0] and losses[-1] < losses[1]
    # cached path == the adapter's own encode path (teacher-forced log-probs agree)
    with torch.no_grad():
        loss_cached, _ = sft_forward(ad, prompt_ids, targets, ad.project_audio(ad.hf, torch.cat(hidden)))
        full = ad.build_inputs([item_prompt(it, cfg.data.choice_seed)[0] for it in items],
                               [data.clean(it) for it in items])
        loss_full, _ = sft_forward(ad, prompt_ids, targets, ad.family.encode_audio(ad.hf, full))
    assert abs(float(loss_cached) - float(loss_full)) < 1e-4


@pytest.mark.slow
def test_run_warmup_encodes_each_clip_once_and_checkpoint_loads(tiny_data, tiny_qwen2_audio_dir, tmp_path):
    out = tmp_path / "run"
    cfg = _cfg(tiny_data, tiny_qwen2_audio_dir, out, "warmup.max_steps=4")
    s = run_warmup(cfg, progress=False)
    assert s["steps"] == 4 and s["stopped"] == "max_steps"
    assert s["clips_encoded"] == 3  # 16 samples over 3 distinct clips: the encoder saw each once
    assert s["audio_cache"] and s["projector_trains"] and not s["lora"]
    assert (out / "config.yaml").is_file() and (out / "summary.json").is_file()
    rows = read_metrics(out)
    evals = [r for r in rows if "val_clean_acc" in r]
    assert [r["step"] for r in evals] == [0, 2, 4]
    assert all(0 <= r["val_clean_acc"] <= 1 and "val_noisy_acc" in r for r in evals)
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4]
    # the checkpoint is an HF directory the adapter loads; its weights are the trained ones
    cfg2 = _cfg(tiny_data, tiny_qwen2_audio_dir, tmp_path / "ev")
    from echodistill.models import load_adapter

    trained = load_adapter(cfg2.model, path=out / "final", train=False)
    base = load_adapter(cfg2.model, path=tiny_qwen2_audio_dir, train=False)
    w_t = trained.hf.model.multi_modal_projector.linear.weight
    w_b = base.hf.model.multi_modal_projector.linear.weight
    assert not torch.allclose(w_t, w_b)
    assert torch.equal(trained.hf.model.audio_tower.conv1.weight, base.hf.model.audio_tower.conv1.weight)
    rows, bad = evaluate_items(trained, read_manifest(cfg2.data.val_manifest), [Condition("clean")], cfg2)
    assert len(rows) == 2 and not bad and all(r["answer"] is None or r["answer"] in WORDS for r in rows)
    # resume continues from the saved step with the optimizer state
    cfg3 = _cfg(tiny_data, tiny_qwen2_audio_dir, out, "warmup.max_steps=5", "warmup.eval_steps=0")
    s3 = run_warmup(cfg3, resume=True, progress=False)
    assert s3["steps"] == 5 and s3["samples"] == 4


@pytest.mark.slow
def test_wall_clock_cap_stops_and_saves(tiny_data, tiny_qwen2_audio_dir, tmp_path):
    out = tmp_path / "run"
    s = run_warmup(_cfg(tiny_data, tiny_qwen2_audio_dir, out, "warmup.max_minutes=0.00001",
                        "warmup.eval_steps=0"), progress=False)
    assert s["stopped"] == "max_minutes" and (out / "final" / "config.json").is_file()


@pytest.mark.slow
def test_lora_trains_only_adapter_params(tiny_data, tiny_qwen2_audio_dir, tmp_path):
    out = tmp_path / "run"
    cfg = _cfg(tiny_data, tiny_qwen2_audio_dir, out, "model.lora.enabled=true", "model.lora.r=4",
               "warmup.eval_steps=0")
    s = run_warmup(cfg, progress=False)
    assert s["lora"] and not s["projector_trains"] and s["clips_encoded"] == 3
    assert (out / "final" / "adapter_config.json").is_file()
    ad = load_warmup_model(cfg)
    names = [n for n, p in ad.model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    # the saved adapter loads and differs from the base (lora_B was trained away from 0)
    from echodistill.models import load_adapter

    loaded = load_adapter(cfg.model, path=out / "final", train=False)
    assert loaded.peft is not None
    assert any(float(p.abs().sum()) > 0 for n, p in loaded.model.named_parameters() if "lora_B" in n)


@pytest.mark.slow
def test_sft_noisy_versions_are_seeded_and_cached(tiny_data, tiny_qwen2_audio_dir, tmp_path):
    out = tmp_path / "run"
    cfg = _cfg(tiny_data, tiny_qwen2_audio_dir, out, "warmup.noisy=true", "warmup.noise_versions=2",
               "warmup.max_steps=6", "warmup.prompts_per_device=3", "warmup.eval_steps=0")
    items = read_manifest(cfg.data.train_manifest)
    data = WarmupData(cfg, items)
    a, b, c = data.noisy_wav(items[0], 0), data.noisy_wav(items[0], 0), data.noisy_wav(items[0], 1)
    clean = data.clean(items[0])
    assert np.array_equal(a, b) and not np.array_equal(a, c) and a.shape == clean.shape
    assert not np.allclose(a, clean)
    s = run_warmup(cfg, progress=False)
    # 18 samples = 3 epochs of 6 items; versions 0, 1, 0: each (item, version) encoded once
    assert s["steps"] == 6 and s["mode"] == "sft-noisy"
    assert s["clips_encoded"] == 12
    # fresh draws each epoch: no cache, every sample encoded
    s0 = run_warmup(_cfg(tiny_data, tiny_qwen2_audio_dir, tmp_path / "r0", "warmup.noisy=true",
                         "warmup.noise_versions=0", "warmup.max_steps=2", "warmup.eval_steps=0"), progress=False)
    assert not s0["audio_cache"] and s0["clips_encoded"] == 8


@pytest.mark.slow
def test_init_from_starts_from_a_checkpoint(tiny_data, tiny_qwen2_audio_dir, tmp_path):
    first = tmp_path / "clean"
    run_warmup(_cfg(tiny_data, tiny_qwen2_audio_dir, first, "warmup.eval_steps=0"), progress=False)
    cfg = _cfg(tiny_data, tiny_qwen2_audio_dir, tmp_path / "noisy", "warmup.noisy=true",
               f"warmup.init_from={first / 'final'}", "warmup.max_steps=0", "warmup.eval_steps=0")
    run_warmup(cfg, progress=False)
    from echodistill.models import load_adapter

    a = load_adapter(cfg.model, path=first / "final", train=False)
    b = load_adapter(cfg.model, path=tmp_path / "noisy" / "final", train=False)
    assert torch.equal(a.hf.model.multi_modal_projector.linear.weight, b.hf.model.multi_modal_projector.linear.weight)
