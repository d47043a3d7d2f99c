#!/usr/bin/env python
"""Compare two ``echodistill demo`` output folders stage by stage: the benchmark, every model's final
weights, every evaluation's metrics.json and predictions. With ``--runs``: two training run folders
(``echodistill train`` / ``warmup``): final weights and every metrics.jsonl row (timings left out).

    python scripts/compare_demos.py runs/demo-A runs/demo-B
    python scripts/compare_demos.py --runs runs/grpo-before runs/grpo-after

Issue 10 (the refactor changes no result) and issue 15 (kill -9 at every stage, rerun: same result) run
the same preset twice (two commits from two git worktrees, or one run killed and resumed) and compare.
Exit status 0 when everything is identical, 1 otherwise; a weight difference is reported as the largest
absolute element difference, so a float-level cause can be told from a real one.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

BENCH_FILES = ("train.jsonl", "val.jsonl", "test.jsonl", "test_heldout.jsonl")
METRIC_KEYS = ("metrics", "bad_items", "skipped_tasks", "n_items", "n_predictions", "conditions")


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def _weight_line(a: Path, b: Path) -> tuple[str, bool]:
    wa, wb = _weights(a), _weights(b)
    if set(wa) != set(wb):
        return "DIFFERENT tensor names", False
    changed = sum(int((wa[k] != wb[k]).sum()) for k in wa)
    if not changed:
        return "identical", True
    worst = max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa)
    total = sum(wa[k].numel() for k in wa)
    return f"DIFFERENT: {changed:,} of {total:,} elements, max |diff| {worst:.2e}", False


def _predictions(folder: Path) -> dict:
    rows = [json.loads(x) for x in (folder / "predictions.jsonl").read_text().splitlines() if x.strip()]
    return {(r["id"], r.get("condition"), r.get("noise_type"), r.get("snr")): (r.get("answer"), r.get("correct"))
            for r in rows}


def _eval_line(a: Path, b: Path) -> tuple[str, bool]:
    ma, mb = (json.loads((x / "metrics.json").read_text()) for x in (a, b))
    pa, pb = _predictions(a), _predictions(b)
    differ = sum(pa.get(k) != pb.get(k) for k in set(pa) | set(pb))
    same = all(ma.get(k) == mb.get(k) for k in METRIC_KEYS)
    if same and not differ:
        return f"metrics.json identical, {len(pa)} predictions identical", True
    values = [(abs(v["value"] - mb["metrics"][k]["value"]), k) for k, v in ma["metrics"].items()
              if isinstance(v, dict) and v.get("value") is not None
              and (mb["metrics"].get(k) or {}).get("value") is not None]
    worst = max(values, default=(0.0, "-"))
    return (f"DIFFERENT: {differ} of {len(pa)} predictions; largest metric change {100 * worst[0]:.1f} points "
            f"({worst[1]})"), False


def compare(a: Path, b: Path) -> bool:
    ok = True

    def say(what: str, line: str, same: bool) -> None:
        nonlocal ok
        ok &= same
        print(f"{what}: {line}")

    for f in BENCH_FILES:
        fa, fb = a / "bench" / f, b / "bench" / f
        if fa.is_file() or fb.is_file():
            same = fa.is_file() and fb.is_file() and fa.read_bytes() == fb.read_bytes()
            say(f"bench/{f}", "identical" if same else "DIFFERENT", same)
    audio = sorted(p for p in (a / "bench").rglob("*.wav") if ".cache" not in p.parts)
    same_audio = sum((b / p.relative_to(a)).is_file() and p.read_bytes() == (b / p.relative_to(a)).read_bytes()
                     for p in audio)
    say("bench audio", f"{same_audio} of {len(audio)} files byte-identical", same_audio == len(audio))
    models = [a / "models" / "embedded", a / "warmup" / "final", *sorted(a.glob("train/*/final"))]
    for m in models:
        say(f"{m.relative_to(a)} weights", *_weight_line(m, b / m.relative_to(a)))
    for e in sorted(p for p in (a / "eval").iterdir() if (p / "metrics.json").is_file()):
        say(f"eval/{e.name}", *_eval_line(e, b / "eval" / e.name))
    return ok


def _rows(run: Path) -> list[dict]:
    """metrics.jsonl rows without wall-clock keys (time_*, wall_s): what a same-result check compares."""
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return [{k: v for k, v in r.items() if not k.startswith("time_") and k not in ("wall_s", "elapsed_s")}
            for r in rows]


def compare_runs(a: Path, b: Path) -> bool:
    """Final weights and metrics rows of two training runs; prints each key whose values differ."""
    line, same = _weight_line(a / "final", b / "final")
    print(f"final weights: {line}")
    ra, rb = _rows(a), _rows(b)
    keys = sorted({k for r in ra + rb for k in r})
    differ = [k for k in keys if [r.get(k) for r in ra] != [r.get(k) for r in rb]]
    print(f"metrics.jsonl: {len(ra)} vs {len(rb)} rows; " + (f"DIFFERENT keys: {', '.join(differ)}" if differ
                                                            else f"{len(keys)} keys identical in every row"))
    return same and not differ


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", type=Path, help="one demo output folder (--out of `echodistill demo`)")
    p.add_argument("b", type=Path, help="the other")
    p.add_argument("--runs", action="store_true", help="a and b are training run folders, not demo folders")
    args = p.parse_args()
    if args.runs:
        sys.exit(0 if compare_runs(args.a, args.b) else 1)
    for d in (args.a, args.b):
        if not (d / "demo.json").is_file():
            sys.exit(f"{d}: not a finished demo folder (no demo.json); run `echodistill demo --out {d}` to the end")
    sys.exit(0 if compare(args.a, args.b) else 1)


if __name__ == "__main__":
    main()
