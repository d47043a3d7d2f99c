"""Which completion tokens spell the evidence of a reasoning-format completion (the ``<think>`` span).

The grounding signal over the evidence (``signals/evidence_grounding.py``) scores only the tokens in
which the student says what it hears; the tags and the answer are left out. Token boundaries come
from the tokenizer itself: each token's character range is read off the decoded prefixes, so any
byte-level BPE (the embedded tokenizer, Qwen's) is handled the same way.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from ..data.prompts import THINK_CLOSE, THINK_OPEN

_THINK = re.compile(re.escape(THINK_OPEN) + r"(.*?)" + re.escape(THINK_CLOSE), re.S)


def token_offsets(tokenizer: Any, ids: list[int]) -> tuple[str, list[tuple[int, int]]]:
    """(decoded text, per token its [start, end) character range in that text), from decoded prefixes."""
    ends, text = [], ""
    for k in range(1, len(ids) + 1):
        text = tokenizer.decode(ids[:k], skip_special_tokens=True)
        ends.append(len(text))
    starts = [0] + ends[:-1]
    return text, list(zip(starts, ends))


def evidence_mask(tokenizer: Any, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[N, T]`` mask (``mask``'s dtype) of the tokens overlapping the first ``<think>...</think>`` span's
    content; all 0 for a row without a closed think span.

    ``ids [N, T]``: completion tokens; ``mask [N, T]``: 1 on real tokens (EOS included, padding 0).
    A token that carries a tag character and an evidence character (BPE merges "<think" + ">violin")
    counts as evidence.
    """
    out = torch.zeros_like(mask)
    for n in range(ids.shape[0]):
        real = mask[n].bool()
        toks = ids[n][real].tolist()
        text, offsets = token_offsets(tokenizer, toks)
        m = _THINK.search(text)
        if m is None or m.end(1) == m.start(1):
            continue
        lo, hi = m.start(1), m.end(1)
        cols = real.nonzero().flatten().tolist()
        for (a, b), col in zip(offsets, cols):
            if a < hi and b > lo:
                out[n, col] = 1
    return out


__all__ = ["evidence_mask", "token_offsets"]
