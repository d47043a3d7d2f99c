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

from ..errors import UserError
from .manifest import Item

LABEL_SHEET = "labels.json"


def _rank_key(seed: int, item_id: str) -> str:
    return hashlib.sha256(f"{seed}:{item_id}".encode()).hexdigest()


def split_labeled(items: Sequence[Item], fraction: float, seed: int) -> tuple[list[Item], list[Item]]:
    """(labeled, unlabeled): per task, the ``round(fraction * n)`` items with a target ranked first by a
    seeded hash of their id. Independent of file order; the same (items, fraction, seed) always
    gives the same split. ``fraction >= 1``: every item that has a target is labeled; 0: none is.
    Items without a target are always unlabeled."""
    have = [it for it in items if it.labeled]
    if fraction >= 1:
        keep = {it.id for it in have}
    else:
        by_task: dict[str, list[Item]] = defaultdict(list)
        for it in have:
            by_task[it.task].append(it)
        keep = set()
        for task_items in by_task.values():
            ranked = sorted(task_items, key=lambda it: _rank_key(seed, it.id))
            keep.update(it.id for it in ranked[: round(fraction * len(ranked))])
    return [it for it in items if it.id in keep], [it for it in items if it.id not in keep]


# ---------------------------------------------------------------- which methods read labels
def needs_labels(cfg) -> bool:
    """Whether the configured training method reads an item's label: its teacher signals decide
    (``train/signals``: ``SignalSet.needs_labels``). Label-free methods take their targets from the clean
    teacher (``pseudo_label``), the samples' majority (``majority_vote``) or use none (``clean-distill``:
    distillation toward the clean teacher's answer on every item)."""
    from ..train.signals import build_signals

    return build_signals(cfg).needs_labels


def label_free_variants() -> list[str]:
    """The ``train.variant`` presets that need no label (on the default config)."""
    from ..config import VARIANTS, load_config

    return [v for v in VARIANTS if not needs_labels(load_config(overrides=[f"train.variant={v}"]))]


def require_labels(items: Sequence[Item], cfg, source: str) -> None:
    """Refuse, in one line, unlabeled ``items`` when the configured method needs labels (``needs_labels``)."""
    missing = [it for it in items if not it.labeled]
    if not missing or not needs_labels(cfg):
        return
    raise UserError(f"{source}: item {missing[0].id} has no target ({len(missing)} of {len(items)} items are "
                    f"unlabeled) and train.variant={cfg.train.variant} needs labels; train on them with a variant "
                    f"that needs none ({', '.join(label_free_variants())}), or add targets")


def select_items(items: Sequence[Item], cfg, which: str, supervised: bool = False) -> list[Item]:
    """The training items a stage uses: ``which`` = all | labeled | unlabeled (see module doc).

    Refuses items without a target when the method needs labels (``require_labels``; ``supervised``: the
    warm-up, which reads every chosen item's label whatever ``train.variant`` needs), and a ``labeled``
    selection with nothing in it."""
    source = cfg.data.train_manifest
    if which == "all":
        chosen = list(items)
    else:
        labeled, unlabeled = split_labeled(items, cfg.data.labeled_fraction, cfg.data.label_seed)
        chosen = labeled if which == "labeled" else unlabeled
    if which == "labeled" and items and not chosen:
        n = sum(it.labeled for it in items)
        raise UserError(f"{source}: no labeled item to warm up on ({n} of {len(items)} items have a target, "
                        f"data.labeled_fraction={cfg.data.labeled_fraction:g}); the warm-up is supervised. A real "
                        "backbone (Qwen2-Audio, Qwen2.5-Omni) already answers: skip the warm-up and train a "
                        f"label-free variant ({', '.join(label_free_variants())}) from the base model")
    if not supervised:
        require_labels(chosen, cfg, source)
    elif missing := [it for it in chosen if not it.labeled]:  # `unlabeled`/`all`: hidden labels, not absent ones
        raise UserError(f"{source}: item {missing[0].id} has no target ({len(missing)} of {len(chosen)} items of "
                        f"warmup.sft_items={which}); the warm-up is supervised: add targets or use "
                        "warmup.sft_items=labeled")
    return chosen


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


__all__ = ["split_labeled", "select_items", "write_label_sheet", "needs_labels", "label_free_variants",
           "require_labels", "LABEL_SHEET"]
