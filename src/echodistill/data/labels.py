"""Which training items keep their labels: the semi-supervised / label-free regime.

With ``data.labeled_fraction = f < 1`` the warm-up (the future clean teacher) sees the labels of a
share ``f`` of the training items only, chosen per task and seeded by ``data.label_seed``; RL then
trains on ``train.rl_items`` (``all`` | ``labeled`` | ``unlabeled``). On the unlabeled items the teacher
has never seen a label, so what it knows there comes from hearing the clean clip -- the information
the label cannot carry (METHOD.md section 6). Every run that splits writes ``labels.json`` naming the
labeled and unlabeled item ids, so a reader can check what the teacher saw.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from pathlib import Path
from typing import Sequence

from .manifest import Item

LABEL_SHEET = "labels.json"


def _rank_key(seed: int, item_id: str) -> str:
    return hashlib.sha256(f"{seed}:{item_id}".encode()).hexdigest()


def split_labeled(items: Sequence[Item], fraction: float, seed: int) -> tuple[list[Item], list[Item]]:
    """(labeled, unlabeled): per task, the ``round(fraction * n)`` items (at least 1) ranked first by a
    seeded hash of their id. Independent of file order; the same (items, fraction, seed) always
    gives the same split. ``fraction >= 1``: every item is labeled."""
    if fraction >= 1:
        return list(items), []
    by_task: dict[str, list[Item]] = defaultdict(list)
    for it in items:
        by_task[it.task].append(it)
    keep: set[str] = set()
    for task_items in by_task.values():
        ranked = sorted(task_items, key=lambda it: _rank_key(seed, it.id))
        keep.update(it.id for it in ranked[: max(1, round(fraction * len(ranked)))])
    return [it for it in items if it.id in keep], [it for it in items if it.id not in keep]


def select_items(items: Sequence[Item], cfg, which: str) -> list[Item]:
    """The training items a stage uses: ``which`` = all | labeled | unlabeled (see module doc)."""
    if which == "all":
        return list(items)
    labeled, unlabeled = split_labeled(items, cfg.data.labeled_fraction, cfg.data.label_seed)
    return labeled if which == "labeled" else unlabeled


def write_label_sheet(out_dir: str | Path, items: Sequence[Item], cfg, used: str) -> Path:
    """``<out_dir>/labels.json``: fraction, seed, which items were labeled and which this stage used."""
    labeled, unlabeled = split_labeled(items, cfg.data.labeled_fraction, cfg.data.label_seed)
    per_task: dict[str, dict[str, int]] = defaultdict(lambda: {"labeled": 0, "unlabeled": 0})
    for name, group in (("labeled", labeled), ("unlabeled", unlabeled)):
        for it in group:
            per_task[it.task][name] += 1
    sheet = {"labeled_fraction": float(cfg.data.labeled_fraction), "label_seed": int(cfg.data.label_seed),
             "stage_uses": used, "counts_per_task": dict(sorted(per_task.items())),
             "labeled_ids": sorted(it.id for it in labeled), "unlabeled_ids": sorted(it.id for it in unlabeled)}
    path = Path(out_dir) / LABEL_SHEET
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(sheet, indent=1))
    return path


__all__ = ["split_labeled", "select_items", "write_label_sheet", "LABEL_SHEET"]
