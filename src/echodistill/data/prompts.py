"""Prompt text and the seeded, per-item order of the choices.

The paper's release stores the target as ``choices[0]`` and never shuffles, so a model can learn
"answer the first option" (METHOD.md section 4, flaw 1). Here the order shown to the model is a
seeded permutation computed from the item id and the choice *texts*: it ignores the stored order
entirely (the same item stored in any order gets the same prompt), it is the same in every process
and Python version (hashlib, not ``hash``), and it differs between items, so the target's position
is spread evenly over positions.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only for the annotation; keeps this module import-light
    from .manifest import Item

LETTERS = "ABCDEFGHIJ"
ANSWER_INSTRUCTION = "Answer with the text of one choice."


def _key(seed: int, item_id: str, text: str) -> bytes:
    # NUL separators: ("a", "bc") and ("ab", "c") must not collide.
    return hashlib.sha256(f"{seed}\x00{item_id}\x00{text}".encode("utf-8")).digest()


def ordered_choices(item: "Item", seed: int) -> list[str]:
    """The choices in the order shown to the model: a permutation fixed by (seed, item id, texts).

    Sorting by a hash of each choice's text is a uniformly random permutation per (seed, id), and
    does not depend on the stored order. Ties (only for duplicate texts) keep stored order.
    Pre-mixed noisy rows (`data mix`) carry their clean item's id in ``meta["clean_id"]``: keying on
    it shows a clip's choices in the same order under every noise condition.
    """
    key_id = str(item.meta.get("clean_id", item.id)) if item.meta else str(item.id)
    idx = sorted(range(len(item.choices)), key=lambda i: (_key(seed, key_id, item.choices[i]), i))
    return [item.choices[i] for i in idx]


def format_question(question: str, choices: list[str]) -> str:
    """The user text the model sees, short because a small CPU model reads it.

    Example: ``"How many speakers?\\nChoices: (A) one (B) two\\nAnswer with the text of one choice."``
    The model answers with a choice's text; the shared extractor (train/rewards.py) maps it back.
    No choices (an open-ended question): the bare question, as ``echodistill predict`` asks it.
    """
    if not choices:
        return question.strip()
    opts = " ".join(f"({LETTERS[i] if i < len(LETTERS) else i + 1}) {c}" for i, c in enumerate(choices))
    return f"{question.strip()}\nChoices: {opts}\n{ANSWER_INSTRUCTION}"


def build_prompt(item: "Item", seed: int) -> tuple[str, list[str]]:
    """(user text, choices in shown order) for ``item``; the target is ``item.target`` (a text)."""
    choices = ordered_choices(item, seed)
    return format_question(item.question, choices), choices
