"""Rewards for GRPO with a clean-audio teacher (METHOD.md section 2, step 4). Pure functions.

Shapes: ``B`` items, ``G`` samples per item, ``N = B*G`` completions, item-major (rows
``i*G .. i*G+G-1`` belong to item ``i``), ``T`` completion tokens. ``mask [N, T]`` is 1 on real
completion tokens (up to and including EOS) and 0 on padding.

``extract_choice`` (``data/answers.py``, re-exported here) is THE answer extractor: the accuracy
reward here and the evaluation both call it (METHOD.md section 4, flaw 6). ``response_format``
(``data.response_format``): in the ``reasoning`` format the answer is read from the ``<answer>`` span
only and a broken completion names nothing (``read_answer``); the format reward checks the tags too.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence, Union

import torch

from ..config import CONSISTENCY_MODES  # allowed values, defined once
from ..data.answers import extract_choice, format_ok, normalize as _norm, read_answer  # the one parser

__all__ = [
    "extract_choice",
    "read_answer",
    "accuracy_rewards",
    "format_rewards",
    "consistency",
    "snr_weight",
    "grounding",
    "total_rewards",
    "expand_per_item",
    "majority_vote",
    "CONSISTENCY_MODES",
]


# ----------------------------------------------------------------------------------------------
# Answer rewards
# ----------------------------------------------------------------------------------------------

def _check_n(texts: Sequence[str], n_items: int, num_generations: int) -> None:
    if len(texts) != n_items * num_generations:
        raise ValueError(f"expected N = B*G = {n_items}*{num_generations} = {n_items * num_generations} "
                         f"completions (item-major), got {len(texts)}")


def _target_index(target: Union[str, int], choices: Sequence[str]) -> Union[int, str]:
    """The target as ``read_answer`` gives answers: a choice index, or an open-ended question's normalised text."""
    if not choices:
        return _norm(str(target))
    if isinstance(target, int):
        return target
    norm = [_norm(c) for c in choices]
    t = _norm(target)
    if t not in norm:
        raise ValueError(f"target {target!r} is not one of the choices {list(choices)}")
    return norm.index(t)


def accuracy_rewards(texts: Sequence[str], choices_per_item: Sequence[Sequence[str]],
                     targets: Sequence[Union[str, int, None]], num_generations: int,
                     wrong: float = 0.0, response_format: str = "answer") -> torch.Tensor:
    """``r_acc [N]``: 1.0 where ``read_answer`` (in ``response_format``) gives the target, else
    ``wrong`` (0 or -1).

    ``texts``: N completions, item-major. ``choices_per_item``: B lists in displayed order; an empty
    list is an open-ended question, right when the normalised completion equals the normalised target.
    ``targets``: B target strings (one of the choices) or indices; ``None`` = no target for that item
    (a pseudo-label that was not confident enough): all its G rewards are ``wrong``, so its group
    has no accuracy signal. No answer (None) counts as wrong.
    """
    _check_n(texts, len(choices_per_item), num_generations)
    if len(targets) != len(choices_per_item):
        raise ValueError(f"{len(targets)} targets for {len(choices_per_item)} items")
    out = torch.full((len(texts),), float(wrong), dtype=torch.float32)
    for i, (choices, target) in enumerate(zip(choices_per_item, targets)):
        if target is None:
            continue
        t = _target_index(target, choices)
        for g in range(num_generations):
            n = i * num_generations + g
            if read_answer(texts[n], choices, response_format) == t:
                out[n] = 1.0
    return out


def format_rewards(texts: Sequence[str], choices_per_item: Sequence[Sequence[str]],
                   num_generations: int, fmt: str = "choice", response_format: str = "answer") -> torch.Tensor:
    """``r_fmt [N]``: 1.0 when the completion follows the answer format, else 0.0.

    ``fmt="choice"``: the answer text is exactly one offered choice once surrounding whitespace and
    final punctuation (``.!?,;:``) are stripped; case-insensitive, otherwise verbatim ("dog" for
    choice "dog", "Dog." too; "It's a dog" or "dog, I think" not); an open-ended question (no choices):
    any non-empty answer. The answer text is the whole completion (``response_format="answer"``), or
    the answer span of a well-formed ``<think>E</think><answer>A</answer>`` with a non-empty think span
    (``"reasoning"``; ``data.answers.format_ok``, R1-AQA's format reward made exact).
    """
    if fmt != "choice":
        raise ValueError(f"unknown answer format {fmt!r}; known: choice")
    _check_n(texts, len(choices_per_item), num_generations)
    out = torch.zeros(len(texts), dtype=torch.float32)
    for i, choices in enumerate(choices_per_item):
        for g in range(num_generations):
            n = i * num_generations + g
            out[n] = float(format_ok(texts[n], choices, response_format))
    return out


# ----------------------------------------------------------------------------------------------
# Teacher terms
# ----------------------------------------------------------------------------------------------

def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Row-wise mean of ``x [N, T]`` over ``mask [N, T]``; rows with no tokens give 0."""
    m = mask.to(x.dtype)
    return (x * m).sum(-1) / m.sum(-1).clamp(min=1.0)


def consistency(teacher_logp: torch.Tensor, mask: torch.Tensor, mode: str = "mean_prob",
                teacher_argmax_match: Optional[torch.Tensor] = None,
                logprob_clip: float = 5.0) -> torch.Tensor:
    """Token-level consistency of each candidate with the clean-audio teacher, ``c [N]`` in [0, 1].

    ``teacher_logp [N, T]``: ``lT[i,t] = log pi_T(o[i,t] | clean audio, q, o[i,<t])``.
    ``mask [N, T]``: completion tokens. ``teacher_argmax_match [N, T]`` (bool; needed for
    ``argmax_agree``): whether ``o[i,t]`` is the teacher's argmax token.

    * ``mean_prob``: masked mean of ``exp(lT)``.
    * ``argmax_agree``: masked mean of ``teacher_argmax_match``.
    * ``mean_logprob``: masked mean of ``clip(lT, -c, 0) / c + 1`` with ``c = logprob_clip``.

    The value differs per candidate, so it survives group normalisation; a per-item constant (the
    official release's bonus) cancels there (METHOD.md section 4, flaw 3). No gradient flows.
    """
    lT = teacher_logp.detach().float()
    if mode == "mean_prob":
        per_tok = lT.exp()
    elif mode == "argmax_agree":
        if teacher_argmax_match is None:
            raise ValueError("consistency mode 'argmax_agree' needs teacher_argmax_match [N, T]")
        per_tok = teacher_argmax_match.detach().float()
    elif mode == "mean_logprob":
        if logprob_clip <= 0:
            raise ValueError(f"logprob_clip must be > 0, got {logprob_clip}")
        per_tok = lT.clamp(-logprob_clip, 0.0) / logprob_clip + 1.0
    else:
        raise ValueError(f"unknown consistency mode {mode!r}; known: {', '.join(CONSISTENCY_MODES)}")
    return _masked_mean(per_tok, mask)


def snr_weight(snr: Union[float, Sequence[float], torch.Tensor], w0: float, snr_lo: float,
               snr_hi: float, w_min: float, shaping: bool = True, direction: str = "noisier") -> torch.Tensor:
    """Audio-aware bonus weight ``w(snr) = w0 * clip((snr_hi - snr) / (snr_hi - snr_lo), w_min, 1)``.

    ``snr``: per-item SNR in dB, ``[B]`` (tensor or list) or a float (then a 0-d tensor is returned).
    ``direction="noisier"`` (the paper): full weight ``w0`` at or below ``snr_lo``, ``w_min * w0`` at
    or above ``snr_hi``. ``"cleaner"``: the mirror image, ``clip((snr - snr_lo) / (snr_hi - snr_lo),
    w_min, 1)`` -- most weight where the clean answer is still learnable from the noisy input. With
    ``shaping=False`` the weight is the constant ``w0``. Use ``expand_per_item`` to get ``[N]``.
    Set ``snr_lo``/``snr_hi`` to the band drawn in training, or the weight barely moves.
    """
    s = torch.as_tensor(snr, dtype=torch.float32)
    if not shaping:
        return torch.full_like(s, float(w0))
    if snr_hi <= snr_lo:
        raise ValueError(f"snr_hi ({snr_hi}) must be > snr_lo ({snr_lo})")
    if direction == "noisier":
        frac = (snr_hi - s) / (snr_hi - snr_lo)
    elif direction == "cleaner":
        frac = (s - snr_lo) / (snr_hi - snr_lo)
    else:
        raise ValueError(f"unknown shaping direction {direction!r}; known: noisier, cleaner")
    return float(w0) * frac.clamp(min=w_min, max=1.0)


def majority_vote(texts: Sequence[str], choices_per_item: Sequence[Sequence[str]],
                  num_generations: int, response_format: str = "answer") -> list[Optional[Union[int, str]]]:
    """TTRL's label-free target: per item, the choice most of its G samples name (``[B]`` indices; an
    open-ended question's most frequent normalised answer).

    ``None`` where no sample names an offered choice. Ties go to the choice named first among the
    samples (sampling order is random, so no choice position is favoured).
    """
    _check_n(texts, len(choices_per_item), num_generations)
    out: list[Optional[Union[int, str]]] = []
    for i, choices in enumerate(choices_per_item):
        votes = [read_answer(texts[i * num_generations + g], choices, response_format) for g in range(num_generations)]
        valid = [v for v in votes if v is not None]
        out.append(max(valid, key=lambda v: (valid.count(v), -valid.index(v))) if valid else None)
    return out


def grounding(teacher_logp: torch.Tensor, noaudio_logp: torch.Tensor, mask: torch.Tensor,
              k: float) -> torch.Tensor:
    """Grounding ``g [N]`` in [-1, 1]: masked mean of ``clip(lT - l0, -k, k) / k``.

    ``teacher_logp [N, T]`` (clean audio) and ``noaudio_logp [N, T]`` (same teacher, audio removed or
    silenced): positive where the clean audio supports a token beyond the text prior.
    """
    if k <= 0:
        raise ValueError(f"grounding clip k must be > 0, got {k}")
    d = (teacher_logp.detach().float() - noaudio_logp.detach().float()).clamp(-k, k) / k
    return _masked_mean(d, mask)


def expand_per_item(x: Union[torch.Tensor, Sequence[float]], num_generations: int) -> torch.Tensor:
    """Per-item values ``[B]`` -> per-completion ``[N]`` in item-major order (repeat each G times)."""
    return torch.as_tensor(x, dtype=torch.float32).reshape(-1).repeat_interleave(num_generations)


def total_rewards(r_acc: torch.Tensor, r_fmt: torch.Tensor, consistency: Optional[torch.Tensor],
                  grounding: Optional[torch.Tensor], snr_w: Union[torch.Tensor, float],
                  weights: Mapping[str, float], lambda_g: float = 0.0) -> torch.Tensor:
    """``r [N] = w_acc*r_acc + w_fmt*r_fmt + w(snr) * (c + lambda_g * g)``.

    ``r_acc, r_fmt, consistency, grounding``: ``[N]``; ``consistency``/``grounding`` None = 0
    (plain GRPO / no grounding pass). ``snr_w``: ``[N]`` (see ``expand_per_item``) or a scalar.
    ``weights``: ``train.reward_weights`` (keys ``accuracy``, ``format``; missing = 0).
    """
    r_acc = r_acc.float()
    r = float(weights.get("accuracy", 0.0)) * r_acc + float(weights.get("format", 0.0)) * r_fmt.float()
    bonus = torch.zeros_like(r_acc)
    if consistency is not None:
        bonus = bonus + consistency.float()
    if grounding is not None and lambda_g != 0.0:
        bonus = bonus + float(lambda_g) * grounding.float()
    if consistency is not None or (grounding is not None and lambda_g != 0.0):
        r = r + torch.as_tensor(snr_w, dtype=torch.float32) * bonus
    return r
