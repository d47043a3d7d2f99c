#!/usr/bin/env python
"""Make "the audio a user has" from the offline benchmark: a folder of clips and questions, no labels.

    python scripts/unlabeled_example.py --bench data/bench --out data/my_clips [--train 280 --val 70] [--hf]

Copies a seeded subset of the benchmark's train and val clips (every task) into ``<out>/clips/`` and writes
``<out>/train.jsonl`` and ``<out>/val.jsonl`` with **no target**: half of the items keep their choices
(multiple-choice), the other half ask the same question open-ended (no choices). Each line is what a
user writes for their own clips::

    {"id": "c0001", "audio": "clips/c0001.wav", "question": "Which number is spoken?"}

``--hf`` also writes ``<out>/hf_train/``, the train items as a Hugging Face dataset in TRL's layout: an
``Audio`` column and a conversational ``prompt`` column (needs ``pip install 'echodistill[hf]'``).
The benchmark's labels are never copied, so nothing downstream can read them.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from echodistill.data.manifest import read_manifest, seeded_subset


def write_split(items, out: Path, prefix: str, offset: int) -> list[dict]:
    rows = []
    for k, it in enumerate(items):
        iid = f"{prefix}{k + offset:04d}"
        clip = out / "clips" / f"{iid}{Path(it.audio).suffix}"
        shutil.copyfile(it.audio, clip)
        row = {"id": iid, "audio": f"clips/{clip.name}", "question": it.question, "task": it.task}
        if k % 2 == 0:  # multiple-choice, shown in the benchmark's stored order (prompts shuffle them anyway)
            row["choices"] = list(it.choices)
        rows.append(row)
    return rows


def write_hf(rows: list[dict], out: Path) -> None:
    import datasets

    chat = [[{"role": "user", "content": [{"type": "audio", "text": None},
                                          {"type": "text", "text": r["question"]}]}] for r in rows]
    ds = datasets.Dataset.from_dict({"id": [r["id"] for r in rows], "audio": [str(out / r["audio"]) for r in rows],
                                     "prompt": chat, "choices": [r.get("choices", []) for r in rows],
                                     "task": [r["task"] for r in rows]})
    ds.cast_column("audio", datasets.Audio()).save_to_disk(str(out / "hf_train"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bench", default="data/bench", help="the offline benchmark (echodistill data build)")
    ap.add_argument("--out", default="data/my_clips")
    ap.add_argument("--train", type=int, default=280, help="training clips (seeded subset across tasks)")
    ap.add_argument("--val", type=int, default=70, help="validation clips")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hf", action="store_true", help="also write hf_train/ (TRL's conversational layout)")
    args = ap.parse_args()
    bench, out = Path(args.bench), Path(args.out)
    (out / "clips").mkdir(parents=True, exist_ok=True)
    splits = {}
    for name, n, offset in (("train", args.train, 0), ("val", args.val, args.train)):
        items = seeded_subset(read_manifest(bench / f"{name}.jsonl"), n, args.seed)
        splits[name] = write_split(items, out, "c", offset)
        (out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in splits[name]))
    if args.hf:
        write_hf(splits["train"], out)
    print(f"{out}: {len(splits['train'])} train and {len(splits['val'])} val clips with questions, no labels "
          f"(half open-ended){'; hf_train/ in TRL layout' if args.hf else ''}")


if __name__ == "__main__":
    main()
