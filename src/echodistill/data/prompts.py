"""Prompt text, the supervised target text, and the seeded, per-item order of the choices.

Two response formats (``data.response_format``): ``answer`` -- the completion is one choice's text;
``reasoning`` -- the completion first states what the clip contains, then answers, in the tags of the
audio RL peers (R1-AQA) and TRL's ``think_format_reward``: ``<think>EVIDENCE</think><answer>CHOICE</answer>``.
``data/answers.py`` reads both back (``parse_response``).

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
THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE = "<think>", "</think>", "<answer>", "</answer>"
REASONING_INSTRUCTION = ("First say what you hear in <think> </think>, then answer with the text of one choice "
                         "in <answer> </answer>.")
# Reasoning about an item without choices (a free-form question, `predict` without --choices).
FREE_REASONING_INSTRUCTION = "First say what you hear in <think> </think>, then answer briefly in <answer> </answer>."


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


def format_question(question: str, choices: list[str], response_format: str = "answer") -> str:
    """The user text the model sees, short because a small CPU model reads it.

    Example: ``"How many speakers?\\nChoices: (A) one (B) two\\nAnswer with the text of one choice."``
    The model answers with a choice's text (``reasoning``: evidence, then the choice, in tags); the
    shared parser (``data/answers.py``) maps it back. The ``answer`` text is unchanged since the first
    release. No choices (an open-ended question): the bare question, as ``echodistill predict`` asks it;
    ``reasoning`` asks for a free-form answer in the tags.
    """
    if response_format == "reasoning":
        if not choices:
            return f"{question.strip()}\n{FREE_REASONING_INSTRUCTION}"
        instruction = REASONING_INSTRUCTION
    elif response_format == "answer":
        if not choices:
            return question.strip()
        instruction = ANSWER_INSTRUCTION
    else:
        raise ValueError(f"unknown response format {response_format!r}; known: answer, reasoning")
    opts = " ".join(f"({LETTERS[i] if i < len(LETTERS) else i + 1}) {c}" for i, c in enumerate(choices))
    return f"{question.strip()}\nChoices: {opts}\n{instruction}"


def target_text(target: str, evidence: "str | None", response_format: str = "answer") -> str:
    """The supervised completion (before the end-of-turn token): what the warm-up teaches.

    ``answer``: the target's text. ``reasoning``: ``<think>EVIDENCE</think><answer>TARGET</answer>``;
    an item without evidence (a user manifest that has none) cannot teach the format: ValueError.
    """
    if response_format == "answer":
        return target
    if response_format != "reasoning":
        raise ValueError(f"unknown response format {response_format!r}; known: answer, reasoning")
    if not evidence or not evidence.strip():
        raise ValueError("the reasoning format needs the item's evidence (what the clip contains)")
    return f"{THINK_OPEN}{evidence.strip()}{THINK_CLOSE}{ANSWER_OPEN}{target}{ANSWER_CLOSE}"


def build_prompt(item: "Item", seed: int, response_format: str = "answer") -> tuple[str, list[str]]:
    """(user text, choices in shown order) for ``item``; the target is ``item.target`` (a text)."""
    choices = ordered_choices(item, seed)
    return format_question(item.question, choices, response_format), choices
