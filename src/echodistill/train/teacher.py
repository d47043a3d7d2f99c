"""The frozen teacher's passes on a micro-batch: what the active signals read, each computed once.

``teacher_scoring`` runs, inside ``model.teacher()``, the union of the signals' ``Passes``:

    scores   lT [N, T]: the teacher's log-prob of every sampled token on the CLEAN clip
             (+ argmax agreement), each item's distinct samples scored once (``scoring.py``)
    silent   l0 [N, T]: the same on silent audio (grounding)
    reference the initial model on the NOISY clip (GRPO's beta KL; not a teacher signal, the same weights)
    answer   its greedy answer on the clean clip (+ its logits on it): read off the scoring pass where a
             sample follows the greedy path, decoded otherwise; only for the items a signal reads
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch

from . import rewards as R
from .scoring import GreedyPath, distinct_logits, distinct_logprobs, greedy_from_scores, logprobs_of


@dataclass
class TeacherAnswer:
    """The frozen teacher's greedy answer on each CLEAN clip (B rows, one per item)."""

    ids: torch.Tensor  # [B, T'] greedy tokens
    mask: torch.Tensor  # [B, T'] 1 up to and including EOS
    # [B] the offered choice it names, or an open-ended question's normalised answer text (None: no answer)
    choice: list[Optional[int | str]]
    confidence: torch.Tensor  # [B] p_T(answer tokens | clean clip), EOS excluded
    logits: Optional[torch.Tensor] = None  # [B, T', V] its logits on that answer (distillation)
    answered: Optional[torch.Tensor] = None  # [B] bool: items answered (None: all); the others have
    # choice None, confidence 0 and an all-0 mask (only the items a signal reads are answered)


def answer_mask(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[N, T] mask of the answer tokens: ``mask`` without the EOS tokens."""
    eos = torch.tensor(model.eos_token_ids, device=ids.device)
    return mask * (~torch.isin(ids, eos)).to(mask.dtype)


def _decode_answers(model, r, items: list[int], max_new_tokens: int, with_logits: bool) -> GreedyPath:
    """The teacher's greedy decode on the clean clips of ``items`` (all of the batch, or a few)."""
    batch = (r.clean_batch if len(items) == len(r.examples) else
             model.build_inputs([r.examples[i].prompt for i in items], [r.examples[i].clean for i in items]))
    y = model.generate(batch, 1, max_new_tokens=max_new_tokens, do_sample=False)
    logits = model.completion_logits(batch, y.ids, y.mask, num_samples=1) if with_logits else None
    return GreedyPath(y.ids, y.mask, y.logprobs, logits, torch.ones(len(items), dtype=torch.bool))


def _pad_to(x: torch.Tensor, length: int, value: float) -> torch.Tensor:
    """Right-pad dim 1 of ``x`` [B, T, ...] to ``length`` (>= T)."""
    if x.shape[1] >= length:
        return x
    pad = x.new_full((x.shape[0], length - x.shape[1], *x.shape[2:]), value)
    return torch.cat([x, pad], dim=1)


def _place_answers(whole: GreedyPath, part: GreedyPath, items: list[int], pad_id: int) -> GreedyPath:
    """``whole`` (B rows) with rows ``items`` replaced by ``part`` (one row per item), both right-padded
    to the longer answer; those rows become covered."""
    t = max(whole.ids.shape[1], part.ids.shape[1])
    fill = {"ids": pad_id, "mask": 0, "logprobs": 0.0, "logits": 0.0}
    placed = {}
    for k, v in fill.items():
        w, p = getattr(whole, k), getattr(part, k)
        if p is None:  # no logits asked for
            placed[k] = w
            continue
        if w is None:
            w = p.new_zeros((len(whole.covered), 1, *p.shape[2:]))
        w = _pad_to(w, t, v)
        w[items] = _pad_to(p, t, v).to(w.device, w.dtype)
        placed[k] = w
    covered = whole.covered.clone()
    covered[items] = True
    return GreedyPath(**placed, covered=covered)


def teacher_answer(model, r, max_new_tokens: int, with_logits: bool, scored: Optional[tuple] = None,
                   items: Optional[list[int]] = None) -> TeacherAnswer:
    """The teacher's greedy answer on the clean clips (call inside ``model.teacher()``).

    ``scored`` = (logits, Distinct) of the teacher's scoring pass: the answer is read off it for
    every item where a sampled completion follows the greedy path (``scoring.greedy_from_scores``,
    the same tokens ``generate`` picks); only the other items are decoded. ``items``: answer only
    these (``SignalSet.answer_scope``); the others stay empty and ``answered`` says which.
    """
    b, pad = len(r.examples), model.pad_token_id
    if items is not None:  # only these; the others stay empty (one pad token, mask 0)
        path = GreedyPath(torch.full((b, 1), pad), torch.zeros(b, 1, dtype=torch.long), torch.zeros(b, 1), None,
                          torch.zeros(b, dtype=torch.bool))
        if items:
            path = _place_answers(path, _decode_answers(model, r, items, max_new_tokens, with_logits), items, pad)
    elif scored is None:
        path = _decode_answers(model, r, list(range(b)), max_new_tokens, with_logits)
    else:
        logits, d = scored
        suppress = torch.tensor([i for i in model.suppress_token_ids if i < logits.shape[-1]], dtype=torch.long)
        path = greedy_from_scores(logits, d, eos_ids=model.eos_token_ids, suppress=suppress,
                                  pad_id=pad, max_new_tokens=max_new_tokens)
        todo = [i for i in range(b) if not bool(path.covered[i])]
        if todo:
            path = _place_answers(path, _decode_answers(model, r, todo, max_new_tokens, with_logits), todo, pad)
        t = int(path.mask.sum(1).max())  # as generate: as many steps as the longest answer
        path = GreedyPath(path.ids[:, :t], path.mask[:, :t], path.logprobs[:, :t], path.logits[:, :t], path.covered)
    confidence = (path.logprobs * answer_mask(model, path.ids, path.mask)).sum(1).exp()
    texts = model.decode(path.ids, path.mask)
    choice = [R.read_answer(text, e.choices, r.response_format) for text, e in zip(texts, r.examples)]
    answered = None
    if items is not None:
        answered = path.covered.cpu()
        confidence = confidence * answered.to(confidence.device, confidence.dtype)
        choice = [c if ok else None for c, ok in zip(choice, answered.tolist())]
    return TeacherAnswer(path.ids, path.mask, choice, confidence, path.logits if with_logits else None, answered)


def teacher_scoring(model, r, signals, *, reference: bool, max_new_tokens: int,
                    label_groups: Callable[[], tuple]) -> None:
    """Fill ``r``'s teacher fields with the passes ``signals`` (a ``SignalSet``) read, + the reference
    pass when ``reference`` (beta KL). ``label_groups()`` -> (all_equal [B], all_wrong [B]) of the label
    accuracy, for signals whose answer scope is a kind of group."""
    need, G = signals.passes, signals.G
    prompts = [e.prompt for e in r.examples]
    scored = None
    with model.teacher() as model:  # the read-only teacher view (models/teacher.py)
        if need.clean:
            r.clean_batch = model.build_inputs(prompts, [e.clean for e in r.examples])
        if need.scores:
            scored = distinct_logits(model, r.clean_batch, r.ids, r.mask, G)
            logits, d = scored
            r.teacher_logp = logprobs_of(logits, d.ids, d.mask)[d.inverse] * r.mask
            if need.argmax:
                r.teacher_argmax_match = (logits.argmax(-1)[d.inverse] == r.ids) & r.mask.bool()
        if need.silent:  # text prior: the same teacher with the audio silenced
            silent = model.build_inputs(prompts, [np.zeros_like(e.clean) for e in r.examples])
            r.noaudio_logp = distinct_logprobs(model, silent, r.ids, r.mask, G)
        if reference:  # reference = the initial model on the NOISY clip (the student's input)
            r.ref_logp = distinct_logprobs(model, r.noisy_batch, r.ids, r.mask, G)
        if need.answer:
            items = None if scored is not None else signals.answer_scope(label_groups)
            r.teacher_answer = teacher_answer(model, r, max_new_tokens, with_logits=need.answer_logits,
                                              scored=scored, items=items)
