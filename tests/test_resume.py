"""Kill-and-resume: 2 steps + resume 2 steps ends with the same weights as 4 steps straight."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from echodistill.train import loop as L, trainer as T
from echodistill.train.checkpoint import latest_checkpoint, list_checkpoints, load_weights

from train_helpers import read_metrics, tiny_config

ARGS = ("train.variant=echodistill-token", "train.max_steps=4", "train.save_steps=2", "train.eval_steps=0",
        "train.beta=0.05", "train.num_iterations=2", "train.lr_scheduler_type=cosine", "train.warmup_ratio=0.25")


class Killed(Exception):
    pass


def _final_weights(out):
    return load_weights(latest_checkpoint(out))


@pytest.mark.slow
def test_kill_and_resume_matches_uninterrupted(data_dir, tiny_qwen2_audio_dir, tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    T.run_train(tiny_config(data_dir, tiny_qwen2_audio_dir, straight, *ARGS))

    resumed = tmp_path / "resumed"
    cfg = tiny_config(data_dir, tiny_qwen2_audio_dir, resumed, *ARGS)
    orig = L.save_checkpoint

    def kill_after_first_save(*a, **k):
        path = orig(*a, **k)
        raise Killed(path)

    monkeypatch.setattr(L, "save_checkpoint", kill_after_first_save)
    with pytest.raises(Killed):
        T.run_train(cfg)
    monkeypatch.setattr(L, "save_checkpoint", orig)
    assert [s for s, _ in list_checkpoints(resumed)] == [2]
    # a save killed half-way leaves a tmp dir behind: it must be ignored
    (resumed / ".tmp-checkpoint-4").mkdir()
    (resumed / ".tmp-checkpoint-4" / "trainable.safetensors").write_bytes(b"partial")
    T.run_train(cfg, resume=True)

    a, b = _final_weights(straight), _final_weights(resumed)
    assert set(a) == set(b)
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst <= 1e-6, worst
    steps = [r["step"] for r in read_metrics(resumed)]
    assert steps == [1, 2, 3, 4]
    opt_a = torch.load(latest_checkpoint(straight) / "optimizer.pt", weights_only=True)
    opt_b = torch.load(latest_checkpoint(resumed) / "optimizer.pt", weights_only=True)
    assert opt_a["state"][0]["step"] == opt_b["state"][0]["step"]  # optimizer state restored, not restarted
    assert json.loads((latest_checkpoint(resumed) / "trainer_state.json").read_text())["step"] == 4
    assert (resumed / "final" / "config.json").is_file()


@pytest.mark.slow
def test_kill_during_the_final_save_leaves_no_final_folder(data_dir, tiny_qwen2_audio_dir, tmp_path, monkeypatch):
    """final/ appears only complete (written as final.partial/, renamed last); a resume writes it."""
    from echodistill.models.base import AudioLLM

    out = tmp_path / "run"
    cfg = tiny_config(data_dir, tiny_qwen2_audio_dir, out, *ARGS, "train.max_steps=2")
    orig = AudioLLM.save

    def half_save(self, out_dir):
        if Path(out_dir).parent != out:  # a checkpoint's model/ folder: saved as usual
            return orig(self, out_dir)
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "config.json").write_text("{}")  # one file written, then the process dies
        raise Killed(out_dir)

    monkeypatch.setattr(AudioLLM, "save", half_save)
    with pytest.raises(Killed):
        T.run_train(cfg)
    assert not (out / "final").exists() and (out / "final.partial").is_dir()
    monkeypatch.setattr(AudioLLM, "save", orig)
    T.run_train(cfg, resume=True)
    assert (out / "final" / "model.safetensors").is_file() and (out / "final" / "README.md").is_file()
    assert not (out / "final.partial").exists()
    assert json.loads((out / "final" / "config.json").read_text()) != {}


WARMUP_ARGS = ("warmup.noisy=true", "warmup.noise_versions=2", "warmup.prompts_per_device=3", "warmup.max_steps=6",
               "warmup.save_steps=2", "warmup.eval_steps=3", "warmup.eval_items=2", "warmup.logging_steps=1",
               "warmup.warmup_ratio=0.34", "warmup.lr_scheduler_type=cosine", "warmup.learning_rate=3e-3")


@pytest.mark.slow
def test_warmup_kill_and_resume_matches_uninterrupted(data_dir, tiny_qwen2_audio_dir, tmp_path, monkeypatch):
    """The warm-up (here sft-noisy: noise versions, audio cache, epochs of 8 items in steps of 3, a ramped
    cosine schedule) killed after its step-2 checkpoint and resumed ends where 6 steps straight end."""
    from echodistill.train.sft import run_warmup

    straight = tmp_path / "straight"
    s = run_warmup(tiny_config(data_dir, tiny_qwen2_audio_dir, straight, *WARMUP_ARGS), progress=False)
    assert s["steps"] == 6 and s["epochs"] > 2

    resumed = tmp_path / "resumed"
    cfg = tiny_config(data_dir, tiny_qwen2_audio_dir, resumed, *WARMUP_ARGS)
    orig = L.save_checkpoint

    def kill_after_first_save(*a, **k):
        raise Killed(orig(*a, **k))

    monkeypatch.setattr(L, "save_checkpoint", kill_after_first_save)
    with pytest.raises(Killed):
        run_warmup(cfg, progress=False)
    monkeypatch.setattr(L, "save_checkpoint", orig)
    assert [s for s, _ in list_checkpoints(resumed)] == [2]
    from echodistill.errors import UserError
    with pytest.raises(UserError, match="--resume"):  # a second run into the same folder must say so
        run_warmup(cfg, progress=False)
    s2 = run_warmup(cfg, resume=True, progress=False)
    assert s2["steps"] == 6

    a, b = _final_weights(straight), _final_weights(resumed)
    assert set(a) == set(b) and a
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst <= 1e-6, worst
    rows = read_metrics(resumed)
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4, 5, 6]
    lr_a = [r["lr"] for r in read_metrics(straight) if "lr" in r]
    assert lr_a == [r["lr"] for r in rows if "lr" in r]  # the schedule continued, not restarted
    assert not (resumed / "final" / "training_state.pt").exists()


def test_latest_checkpoint_ignores_incomplete(tmp_path):
    (tmp_path / "checkpoint-3").mkdir()  # no trainer_state.json: incomplete
    (tmp_path / "checkpoint-2").mkdir()
    (tmp_path / "checkpoint-2" / "trainer_state.json").write_text("{}")
    (tmp_path / ".tmp-checkpoint-5").mkdir()
    assert latest_checkpoint(tmp_path).name == "checkpoint-2"
    shutil.rmtree(tmp_path / "checkpoint-2")
    assert latest_checkpoint(tmp_path) is None


@pytest.mark.slow
def test_resume_without_checkpoint_starts_fresh(data_dir, tiny_qwen2_audio_dir, tmp_path):
    out = tmp_path / "run"
    T.run_train(tiny_config(data_dir, tiny_qwen2_audio_dir, out, "train.max_steps=1", "train.eval_steps=0"),
                resume=True)
    assert latest_checkpoint(out).name == "checkpoint-1"


class _Evil:
    """Unpickling this runs a command (the attack on a copied checkpoint)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.slow
@pytest.mark.parametrize("victim", ["optimizer.pt", "scheduler.pt", "rng_rank0.pt", "trainable.safetensors",
                                    "trainable.pt"])
def test_crafted_pickle_in_any_state_file_is_refused_on_resume(victim, data_dir, tiny_qwen2_audio_dir, tmp_path):
    from echodistill.errors import UserError

    out = tmp_path / "run"
    cfg = tiny_config(data_dir, tiny_qwen2_audio_dir, out, "train.max_steps=1", "train.eval_steps=0")
    T.run_train(cfg)
    ckpt = latest_checkpoint(out)
    marker = tmp_path / "pwned"
    if victim == "trainable.pt":  # a legacy checkpoint: weights as a torch pickle
        (ckpt / "trainable.safetensors").unlink()
    torch.save({"state": _Evil(marker)}, ckpt / victim)
    with pytest.raises(UserError) as e:
        T.run_train(cfg, resume=True)
    assert not marker.exists(), "the crafted pickle ran"
    assert str(ckpt / victim) in str(e.value)
