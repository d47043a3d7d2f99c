"""Faults end cleanly: a reward or loss that is not finite never reaches a checkpoint, and SIGTERM
saves a checkpoint that a resume continues from, ending with the weights of an uninterrupted run."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch

from echodistill.errors import UserError
from echodistill.train import plugins as P, trainer as T
from echodistill.train.checkpoint import latest_checkpoint, list_checkpoints, load_weights

from train_helpers import read_metrics, tiny_config

ARGS = ("train.variant=echodistill-token", "train.max_steps=4", "train.save_steps=3", "train.eval_steps=0",
        "train.beta=0.05", "train.num_iterations=2", "train.lr_scheduler_type=cosine", "train.warmup_ratio=0.25")


def _finite(ckpt) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in load_weights(ckpt).values())


def test_a_huge_plugin_reward_is_refused_naming_the_plugin(tmp_path):
    f = tmp_path / "huge.py"
    f.write_text("def huge(completions, **kw):\n    return [1e300 for _ in completions]\n")
    cols = {"noise_type": ["white", "pink"]}
    with pytest.raises(P.PluginError, match=r"huge: value 0 is 1e\+300; return numbers in \[-1e\+06, 1e\+06\]"):
        P.call_reward_func(f"{f}:huge", ["p", "p"], ["a", "b"], [[1], [2]], cols)


@pytest.mark.slow
def test_a_nonfinite_loss_skips_the_update_and_never_reaches_a_checkpoint(data_dir, tiny_qwen2_audio_dir, tmp_path,
                                                                          monkeypatch):
    orig = T.GRPORecipe._loss_step
    bad_steps = {2}

    def nan_at(self, batch, it, ctx):  # the fault: a loss that overflowed on some steps
        loss, stats = orig(self, batch, it, ctx)
        return (loss * float("nan"), stats) if self.step + 1 in bad_steps else (loss, stats)

    monkeypatch.setattr(T.GRPORecipe, "_loss_step", nan_at)
    out = tmp_path / "run"
    T.run_train(tiny_config(data_dir, tiny_qwen2_audio_dir, out, *ARGS, "train.save_steps=1", "train.max_steps=2"))
    rows = read_metrics(out)
    assert [r["nonfinite_skipped"] for r in rows] == [0, 2]  # both updates of step 2 (num_iterations=2)
    assert all(_finite(c) for _, c in list_checkpoints(out))
    a, b = load_weights(out / "checkpoint-1"), load_weights(out / "checkpoint-2")  # the skipped step: unchanged
    assert all(torch.equal(a[k], b[k]) for k in a)

    bad_steps.update({3, 4})  # three in a row (run.max_nonfinite_updates=3): stop with one line
    out = tmp_path / "run2"
    with pytest.raises(UserError, match=r"3 updates in a row had a non-finite loss or gradient \(step 3\)"):
        T.run_train(tiny_config(data_dir, tiny_qwen2_audio_dir, out, *ARGS, "train.save_steps=1"))
    assert [s for s, _ in list_checkpoints(out)] == [1, 2] and _finite(latest_checkpoint(out))


KILLER = textwrap.dedent('''
    import os, pathlib, signal
    CALLS = []

    def zero(completions, **kwargs):
        """No reward; on its second call (step 2), a SIGTERM as a scheduler sends it (once)."""
        CALLS.append(1)
        marker = pathlib.Path(__file__).with_name("sent")
        if len(CALLS) == 2 and not marker.exists():
            marker.write_text("")
            os.kill(os.getpid(), signal.SIGTERM)
        return [0.0 for _ in completions]
''')


@pytest.mark.slow
def test_sigterm_saves_and_resume_matches_an_uninterrupted_run(data_dir, tiny_qwen2_audio_dir, tmp_path, capsys):
    calm, killer = tmp_path / "calm" / "r.py", tmp_path / "killer" / "r.py"
    for path, text in ((calm, KILLER.replace("len(CALLS) == 2", "False")), (killer, KILLER)):
        path.parent.mkdir()
        path.write_text(text)
    straight = tmp_path / "straight"
    T.run_train(tiny_config(data_dir, tiny_qwen2_audio_dir, straight, *ARGS, f"train.reward_funcs=[{calm}:zero]"))

    out = tmp_path / "stopped"
    cfg = tiny_config(data_dir, tiny_qwen2_audio_dir, out, *ARGS, f"train.reward_funcs=[{killer}:zero]")
    with pytest.raises(SystemExit) as stop:
        T.run_train(cfg)
    assert stop.value.code == 143
    assert [s for s, _ in list_checkpoints(out)] == [2] and not (out / "final").exists()
    assert "continues from step 2 of 4" in capsys.readouterr().err
    T.run_train(cfg, resume=True)
    a, b = load_weights(latest_checkpoint(straight)), load_weights(latest_checkpoint(out))
    assert set(a) == set(b)
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6
    steps = [r["step"] for r in read_metrics(out)]
    assert steps == [1, 2, 3, 4]


def _no_space(*args, **kwargs):  # the fault: what the kernel answers when the disk is full
    import errno
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.slow
def test_a_full_disk_during_a_checkpoint_is_one_line_and_leaves_nothing_partial(data_dir, tiny_qwen2_audio_dir,
                                                                                 tmp_path, monkeypatch):
    from echodistill.train import checkpoint as C

    out = tmp_path / "run"
    cfg = tiny_config(data_dir, tiny_qwen2_audio_dir, out, *ARGS, "train.save_steps=1", "train.max_steps=2")
    orig = C.save_file
    calls = []

    def full_on_second(*a, **k):
        calls.append(1)
        return orig(*a, **k) if len(calls) == 1 else _no_space()

    monkeypatch.setattr(C, "save_file", full_on_second)
    with pytest.raises(UserError, match=rf"{out}: no space left on the device while writing checkpoint-2; "
                                        r"nothing partial was kept: .*--resume continues from checkpoint-1"):
        T.run_train(cfg)
    assert [s for s, _ in list_checkpoints(out)] == [1] and not list(out.glob(".tmp-checkpoint-*"))
    assert _finite(out / "checkpoint-1")


def test_a_full_disk_during_eval_keeps_whole_rows_only(tiny_qwen2_audio_dir, tmp_path, monkeypatch):
    from echodistill.eval import evaluate as E

    from test_evaluate import _cfg, write_audio
    from train_helpers import read_jsonl, tone

    d = tmp_path / "bench"
    for i, f0 in enumerate((220.0, 440.0, 330.0)):
        write_audio(d / "audio" / f"q{i}.wav", tone(f0, n=12000, seed=i))
    rows = [{"id": f"q{i}", "audio": f"audio/q{i}.wav", "question": "Which pitch?", "choices": ["low", "high"],
             "target": "low", "task": "pitch", "split": "test"} for i in range(3)]
    (d / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = _cfg(d, tiny_qwen2_audio_dir, "eval.noise_types=[white]", "eval.snr_levels=[0]", "eval.batch_size=2")
    out = tmp_path / "ev"
    orig = E.PredictionWriter.__init__

    class FillsUp:
        """The writer's file: the first chunk fits, then half a chunk reaches the disk and it is full."""

        def __init__(self, f):
            self.f, self.chunks = f, 0

        def write(self, data):
            self.chunks += 1
            if self.chunks == 1:
                return self.f.write(data)
            self.f.write(bytes(data[: len(data) // 2]))
            _no_space()

        def __getattr__(self, name):
            return getattr(self.f, name)

    def init(self, path):
        orig(self, path)
        self.f = FillsUp(self.f)

    monkeypatch.setattr(E.PredictionWriter, "__init__", init)
    with pytest.raises(UserError, match=rf"{out}: no space left on the device"):
        E.run_eval(cfg, out_dir=out)
    monkeypatch.setattr(E.PredictionWriter, "__init__", orig)
    kept = read_jsonl(out / "predictions.jsonl")  # whole rows only (json parses every line)
    assert 0 < len(kept) and not list(out.glob("*.tmp"))
    assert E.run_eval(cfg, out_dir=out)["timing"]["new_predictions"] > 0  # the rerun completes


@pytest.mark.slow
def test_env_secrets_reach_no_written_file_or_folder_name(data_dir, tiny_qwen2_audio_dir, tmp_path, monkeypatch):
    import shutil

    from echodistill.card import export_model

    secret_model = tmp_path / "s3cr3t-model"
    shutil.copytree(tiny_qwen2_audio_dir, secret_model)
    monkeypatch.setenv("ED_MODEL_DIR", str(secret_model))
    monkeypatch.setenv("ED_PROJECT", "s3cr3t-project")
    out = tmp_path / "run"
    cfg = tiny_config(data_dir, tiny_qwen2_audio_dir, out, "train.max_steps=1", "train.eval_steps=0",
                      "model.path=${oc.env:ED_MODEL_DIR}", "run.log_with=tensorboard",
                      "run.project_name=${oc.env:ED_PROJECT}", "model.lora.enabled=true", "model.lora.r=2",
                      "model.lora.alpha=4")
    T.run_train(cfg)
    export_model(out, tmp_path / "export")
    for folder in (out, tmp_path / "export"):
        for p in folder.rglob("*"):
            assert "s3cr3t" not in p.name, p
            if p.is_file():
                assert b"s3cr3t" not in p.read_bytes(), p
    assert "${oc.env:ED_MODEL_DIR}" in (out / "final" / "README.md").read_text()
    from echodistill.models import load_adapter
    assert load_adapter(cfg.model, path=out / "final", train=False).peft is not None  # loads: model.path re-resolves
