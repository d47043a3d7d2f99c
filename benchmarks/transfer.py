"""Transfer across sources: clean accuracy per soundfont, voice or room, from `echodistill eval` output.

    # the paired soundfont probe: the same instrument clips rendered by every installed soundfont
    python benchmarks/transfer.py probe --out runs/probe --n 150
    echodistill eval --checkpoint <warm-up>/final --manifest runs/probe/probe.jsonl --out runs/eval_probe \\
        eval.snr_levels=[] eval.no_audio=false
    # accuracy per soundfont, and training soundfonts vs the held-out one
    python benchmarks/transfer.py table runs/eval_probe --manifest runs/probe/probe.jsonl --by soundfont \\
        --train timgm6mb --heldout csound_gm_gs_bank
    # the same for any benchmark split: per room (dry vs reverberant) or per voice
    python benchmarks/transfer.py table runs/eval_test --manifest runs/bench/test.jsonl --by room

Accuracy is the clean condition's; intervals are 95 % bootstrap intervals over items (1,000
replicates, seed 0). A group given to --train / --heldout is pooled before the gap is taken.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def _rows(path: Path) -> list[dict]:
    if not path.is_file():
        raise SystemExit(f"{path}: not found (an `echodistill eval --out` folder holds predictions.jsonl; "
                         "--manifest is the manifest that was evaluated)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _group_of(meta: dict, by: str) -> str:
    value = meta.get(by)
    if by == "room" and isinstance(value, str) and value != "dry":
        return value.rsplit("_room_", 1)[0] + " rooms"  # dry / seen rooms / heldout rooms
    return str(value)


def _interval(correct: np.ndarray, reps: int = 1000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = correct[rng.integers(0, correct.size, size=(reps, correct.size))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def table(eval_dir: Path, manifest: Path, by: str, task: str | None, train: list[str], heldout: list[str]) -> str:
    """Markdown: clean accuracy per value of ``meta[by]`` (and pooled train / held-out groups)."""
    meta = {r["id"]: r.get("meta", {}) for r in _rows(manifest)}
    preds = [r for r in _rows(eval_dir / "predictions.jsonl")
             if r["condition"] == "clean" and r["id"] in meta and (task is None or r["task"] == task)]
    if not preds:
        raise SystemExit(f"{eval_dir}: no clean predictions for the items of {manifest}"
                         + (f" (task {task})" if task else ""))
    groups: dict[str, list[float]] = {}
    for r in preds:
        groups.setdefault(_group_of(meta[r["id"]], by), []).append(float(r["correct"]))
    lines = [f"{eval_dir.name}: clean accuracy by {by}" + (f", task {task}" if task else ""), "",
             f"| {by} | items | accuracy | 95 % CI |", "|---|---|---|---|"]

    def row(name: str, values: list[float]) -> float:
        c = np.asarray(values)
        lo, hi = _interval(c)
        lines.append(f"| {name} | {c.size} | {100 * c.mean():.1f} | [{100 * lo:.1f}, {100 * hi:.1f}] |")
        return float(c.mean())

    for name in sorted(groups):
        row(name, groups[name])
    if train and heldout:
        a = row("**training: " + "+".join(train) + "**", [v for g in train for v in groups.get(g, [])])
        b = row("**held out: " + "+".join(heldout) + "**", [v for g in heldout for v in groups.get(g, [])])
        lines += ["", f"gap (training - held out): {100 * (a - b):+.1f} points" + _paired_gap(preds, meta, by, train,
                                                                                             heldout)]
    return "\n".join(lines)


def _paired_gap(preds: list, meta: dict, by: str, train: list, heldout: list) -> str:
    """On the probe (``meta.probe_clip``: one clip rendered by every soundfont) the gap is paired by
    clip: per clip, mean correctness over the training groups minus over the held-out ones; the
    interval resamples clips."""
    per_clip: dict = {}
    for r in preds:
        m = meta[r["id"]]
        if "probe_clip" not in m:
            return ""
        side = 0 if _group_of(m, by) in train else 1 if _group_of(m, by) in heldout else None
        if side is not None:
            per_clip.setdefault(m["probe_clip"], ([], []))[side].append(float(r["correct"]))
    diffs = np.asarray([np.mean(t) - np.mean(h) for t, h in per_clip.values() if t and h])
    if diffs.size == 0:
        return ""
    rng = np.random.default_rng(0)
    boot = diffs[rng.integers(0, diffs.size, size=(1000, diffs.size))].mean(axis=1)
    return (f", paired by clip over {diffs.size} clips: 95 % CI [{100 * np.percentile(boot, 2.5):+.1f}, "
            f"{100 * np.percentile(boot, 97.5):+.1f}]")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("probe", help="build the paired soundfont probe manifest (instrument clips x soundfonts)")
    p.add_argument("--out", required=True, help="output folder (probe.jsonl, audio/)")
    p.add_argument("--n", type=int, default=150, help="clips per soundfont")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--soundfonts", nargs="+", default=None, help="names (default: every installed one)")
    t = sub.add_parser("table", help="clean accuracy per soundfont / voice / room from an eval folder")
    t.add_argument("eval_dir", type=Path, help="an `echodistill eval --out` folder (predictions.jsonl)")
    t.add_argument("--manifest", type=Path, required=True, help="the manifest that was evaluated")
    t.add_argument("--by", default="soundfont", help="the meta field to group by (soundfont, voice, room, ...)")
    t.add_argument("--task", default=None, help="only this task's items (e.g. instrument)")
    t.add_argument("--train", nargs="*", default=[], help="groups pooled as 'training'")
    t.add_argument("--heldout", nargs="*", default=[], help="groups pooled as 'held out'")
    args = ap.parse_args(argv)
    if args.cmd == "probe":
        from echodistill.data.soundfont_probe import build_soundfont_probe
        build_soundfont_probe(Path(args.out), n=args.n, seed=args.seed, soundfonts=args.soundfonts)
        return 0
    print(table(args.eval_dir, args.manifest, args.by, args.task, args.train, args.heldout))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
