"""The demo checks its arguments before any long stage, its report baselines exist for any --seeds, and a
stage counts as done only by its completion marker (a partial final/ is not done; other arguments stop)."""

from __future__ import annotations

import json

import pytest

from echodistill import demo as D
from echodistill.errors import UserError
from echodistill.eval.report import make_report


def _fake_eval(d, name, split="test"):
    d.mkdir(parents=True)
    rows = []
    for i in range(6):
        for cond, nt, snr in (("clean", None, None), ("noisy", "white", 0.0)):
            ok = (i + len(name)) % 3 != 0
            rows.append({"id": f"q{i}", "task": "t", "condition": cond, "noise_type": nt, "snr": snr,
                         "response": "a" if ok else "b", "answer": "a" if ok else "b", "target": "a",
                         "correct": ok, "invalid": False})
    (d / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "metrics.json").write_text(json.dumps({"name": name, "split": split, "method": "model"}))


@pytest.mark.parametrize("preset,seeds", [("full", [0]), ("full", [2]), ("full", [0, 1, 2]), ("smoke", None),
                                          ("default", [3])])
def test_every_planned_report_finds_its_baseline(preset, seeds, tmp_path):
    seeds = D.check_arguments(preset, seeds)
    dirs = {}
    for folder, names, baseline in D.plan_reports(D.PRESETS[preset], seeds):
        for n in names:
            if n not in dirs:
                dirs[n] = tmp_path / "eval" / n
                _fake_eval(dirs[n], n)
        rep = make_report([dirs[n] for n in names], tmp_path / folder, baseline=baseline)
        assert rep["baseline"] in (baseline, baseline.rsplit("-s", 1)[0])


def test_bad_seeds_fail_before_any_work(tmp_path):
    for seeds in ([0, 0], [-1]):
        with pytest.raises(UserError, match="--seeds"):
            D.run_demo("smoke", tmp_path / "d", seeds)
    assert not (tmp_path / "d").exists()


def test_stage_done_only_by_marker_and_other_arguments_stop(tmp_path):
    stage = tmp_path / "train" / "grpo-s0"
    (stage / "final").mkdir(parents=True)
    (stage / "final" / ".tmp-model.safetensors").write_bytes(b"partial")  # a kill during the final save
    key, done = D._stage_key(stage, stage="train", seed=0)
    assert not done  # a non-empty final/ is not a finished stage
    D._mark_done(stage, key, {"stage": "train", "seed": 0})
    assert D._stage_key(stage, stage="train", seed=0) == (key, True)
    with pytest.raises(UserError, match="seed: 0 -> 1"):
        D._stage_key(stage, stage="train", seed=1)
    assert not list(stage.glob("*.tmp"))
