"""`benchmarks/run_all.py --quick` on the tiny Qwen2.5-Omni thinker: the table and JSON have the right shape
(timings are not checked: they depend on the machine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_quick_shape(tmp_path):
    out = tmp_path / "results.json"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run_all.py"), "--quick", "--models", "omni",
                        "--bench", "step,encode,teacher,eval,noise,evalcache", "--threads", "1", "--out", str(out)],
                       capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "| # | model | metric | A | B | A/B | target | met |" in p.stdout
    data = json.loads(out.read_text())
    assert data["quick"] is True and data["machine"]["nproc"] >= 1
    rows = data["rows"]
    benches = {r["bench"] for r in rows}
    assert {"1 step", "2 encode", "4 teacher", "5 noise", "6 eval", "12 evalcache"} <= benches
    for r in rows:
        for k in ("bench", "model", "metric", "a_name", "a", "b_name", "b", "unit", "ratio", "target", "met", "extra"):
            assert k in r, (k, r)
        assert isinstance(r["met"], bool)
    assert sum(1 for line in p.stdout.splitlines() if line.startswith("| ")) == len(rows) + 1
    enc = next(r for r in rows if r["metric"].startswith("encoder clip passes"))
    assert enc["ratio"] >= 4  # G = 4 in quick mode: each clip encoded once, not once per sample
    teacher = next(r for r in rows if r["bench"] == "4 teacher")
    assert teacher["extra"]["max_abs_logprob_diff"] < 1e-4  # batched and per-candidate scores agree
    kept = next(r for r in rows if r["bench"] == "12 evalcache")["extra"]
    assert kept["equal_ids_and_logprobs"] and kept["encoder_clips_from_folder"] == 0  # the folder keeps every bit
    assert kept["disk_hits"] > 0 and kept["folder_bytes"] > 0
