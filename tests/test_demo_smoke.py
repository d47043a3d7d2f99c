"""End-to-end: the real `echodistill demo` CLI on the smoke preset, then a rerun that resumes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not Path("/usr/share/sounds/sf2/TimGM6mb.sf2").exists() and
                                not Path("/usr/bin/flite").exists(),
                                reason="benchmark sources (flite, timgm6mb-soundfont) not installed: run make setup")


def _demo(out: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return subprocess.run([sys.executable, "-m", "echodistill.cli", "demo", "--preset", "smoke", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=900)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_demo_runs_every_stage_and_resumes(tmp_path):
    out = tmp_path / "demo"
    first = _demo(out)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "| warmup |" in first.stdout and "| echodistill-rescue-s0 |" in first.stdout  # headline table printed
    for name in ["base", "warmup", "grpo-s0", "echodistill-rescue-s0", "sft-noisy-s0"]:
        metrics = json.loads((out / "eval" / name / "metrics.json").read_text())
        assert metrics["metrics"]["Acc"]["n"] == 4  # smoke preset: eval.max_items=4
        assert (out / "eval" / name / "predictions.jsonl").stat().st_size > 0
    report = json.loads((out / "report" / "report.json").read_text())
    assert {r["name"] for r in report["runs"]} >= {"warmup", "grpo-s0", "echodistill-rescue-s0"}
    assert (out / "report" / "accuracy_vs_snr.png").stat().st_size > 1000
    assert (out / "train" / "echodistill-rescue-s0" / "config.yaml").is_file()

    again = _demo(out)  # every stage is complete: the rerun only reports and re-renders
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("already") >= 8
