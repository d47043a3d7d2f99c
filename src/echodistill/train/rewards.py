"""Rewards for GRPO with a clean-audio teacher (METHOD.md section 2, step 4). Pure functions.

Shapes: ``B`` items, ``G`` samples per item, ``N = B*G`` completions, item-major (rows
``i*G .. i*G+G-1`` belong to item ``i``), ``T`` completion tokens. ``mask [N, T]`` is 1 on real
completion tokens (up to and including EOS) and 0 on padding.

``extract_choice`` is THE answer extractor: the accuracy reward here and the evaluation both call it
(the official release used two different matchers; METHOD.md section 4, flaw 6).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Mapping, Optional, Sequence, Union

import torch

__all__ = [
    "extract_choice",
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

CONSISTENCY_MODES = ("mean_prob", "argmax_agree", "mean_logprob")

# ----------------------------------------------------------------------------------------------
# Extraction
# ----------------------------------------------------------------------------------------------

# Punctuation that ends a clause: negation does not reach across it ("not a cat, a dog").
_CLAUSE_PUNCT = set(".,;:!?()[]{}\"\n")
# Words that negate the phrase that follows within a short window.
_NEGATORS = {
    "not", "no", "never", "neither", "nor", "without", "except", "unlike", "than",
    "isnt", "arent", "wasnt", "werent", "dont", "doesnt", "didnt", "cant", "cannot", "couldnt",
    "wouldnt", "shouldnt", "aint", "nt",
}
# Two-word negators: "rather than X", "instead of X", "other than X".
_NEGATOR_BIGRAMS = {("instead", "of"), ("other", "than"), ("rather", "than")}
# Words that end a negation's reach: "not X but Y" asserts Y.
_NEGATION_STOPS = {"but", "however", "rather", "instead", "actually", "its", "it", "is", "so"}
_NEGATION_WINDOW = 3
# Cue phrases that introduce the asserted answer ("the answer is X"), normalised token form.
_PREFIX_CUES = [
    ("the", "correct", "answer", "is"), ("correct", "answer", "is"), ("the", "answer", "is"),
    ("answer", "is"), ("final", "answer"), ("answer",), ("i", "think", "its"), ("i", "think", "it", "is"),
    ("i", "think",), ("it", "is"), ("its",), ("this", "is"), ("that", "is"), ("thats",),
    ("sounds", "like"), ("i", "hear"), ("i", "heard"), ("i", "choose"), ("i", "pick"), ("i", "select"),
    ("i", "would", "say"), ("id", "say"), ("go", "with"), ("going", "with"), ("must", "be"),
    ("should", "be"), ("would", "be"),
]
# Filler allowed between a cue and the choice ("the answer is definitely the dog").
_FILLER = {"a", "an", "the", "option", "choice", "definitely", "clearly", "probably", "likely",
           "most", "certainly", "surely", "simply", "just", "indeed", "called", "named"}
# Cues that follow the asserted answer ("X is the answer", "X is correct").
_SUFFIX_CUES = [("is", "the", "answer"), ("is", "the", "correct", "answer"), ("is", "correct"),
                ("is", "right")]

_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# Whole response is one letter: "B", "(B)", "B.", "b)".
_RE_LETTER_ONLY = re.compile(r"^\s*[\(\[]?\s*([A-Za-z])\s*[\)\]]?\s*[.:)!]?\s*$")
# Response starts with a letter marker followed by text: "(B) dog", "B. dog", "B) dog", "B: dog".
_RE_LETTER_PREFIX = re.compile(r"^\s*(?:\(([A-Z])\)|\[([A-Z])\]|([A-Z])\s*[.):])\s+(\S.*)$", re.S)
# Letter after a keyword: "Answer: B", "the answer is (B).", "option B", "choice C".
_RE_LETTER_CUE = re.compile(
    r"(?i:\b(?:answer|option|choice)\b)\s*(?:(?i:is)\s*)?[:\-]?\s*"
    r"(?:\(([A-Z])\)|\[([A-Z])\]|([A-Z])(?=\s*(?:[.,;:!?)]|$)))"
)


def _tokens(text: str) -> tuple[list[str], list[int]]:
    """Lower-cased word tokens and, for each, the index of the clause it belongs to.

    Apostrophes are dropped ("isn't" -> "isnt", "it's" -> "its"); other punctuation separates words,
    and clause punctuation (``.,;:!?`` and brackets) starts a new clause.
    """
    text = unicodedata.normalize("NFKC", text).casefold()
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("`", "'")
    text = text.replace("'", "")
    words: list[str] = []
    clauses: list[int] = []
    clause = 0
    cur: list[str] = []
    for ch in text + " ":
        if ch.isalnum():
            cur.append(ch)
            continue
        if cur:
            words.append("".join(cur))
            clauses.append(clause)
            cur = []
        if ch in _CLAUSE_PUNCT:
            clause += 1
    return words, clauses


def _norm(text: str) -> str:
    return " ".join(_tokens(text)[0])


def _find_mentions(words: list[str], choice_words: list[list[str]]) -> list[tuple[int, int, int]]:
    """Non-overlapping whole-phrase mentions ``(start, end, choice)``; longer choices win overlaps.

    Matching is on word tokens, so "nine" never matches inside "ninety" and "seven" never inside
    "seventeen"; when "dog" and "dog barking" both match at one place, "dog barking" is kept.
    """
    found = []
    for k, cw in enumerate(choice_words):
        n = len(cw)
        if n == 0:
            continue
        for s in range(len(words) - n + 1):
            if words[s:s + n] == cw:
                found.append((s, s + n, k))
    found.sort(key=lambda m: (-(m[1] - m[0]), m[0]))
    taken: list[tuple[int, int, int]] = []
    for m in found:
        if all(m[1] <= t[0] or m[0] >= t[1] for t in taken):
            taken.append(m)
    taken.sort()
    return taken


def _negated(words: list[str], clauses: list[int], start: int, blocked: set[int]) -> bool:
    """True when a negator precedes ``words[start]`` in the same clause within a short window."""
    c = clauses[start]
    for j in range(start - 1, max(-1, start - 1 - _NEGATION_WINDOW), -1):
        if clauses[j] != c or j in blocked:
            return False
        w = words[j]
        if j >= 1 and (words[j - 1], w) in _NEGATOR_BIGRAMS and clauses[j - 1] == c:
            return True
        if w in _NEGATORS:
            return True
        if w in _NEGATION_STOPS:
            return False
    return False


def _cue_assertions(words: list[str], clauses: list[int],
                    mentions: list[tuple[int, int, int]]) -> set[int]:
    """Choices introduced by a cue phrase ("the answer is X") or followed by one ("X is correct")."""
    out: set[int] = set()
    for m in mentions:
        s, e, k = m
        # Prefix cue: walk back over filler words, then look for a cue ending right there.
        j = s
        while j > 0 and words[j - 1] in _FILLER and clauses[j - 1] == clauses[s]:
            j -= 1
        for cue in _PREFIX_CUES:
            n = len(cue)
            if j - n >= 0 and tuple(words[j - n:j]) == cue:
                out.add(k)
                break
        # Suffix cue: "X is the answer".
        for cue in _SUFFIX_CUES:
            if tuple(words[e:e + len(cue)]) == cue and not _negated(words, clauses, s, set()):
                out.add(k)
                break
    return out


def _letter_index(letter: str, n_choices: int) -> Optional[int]:
    idx = _LETTERS.find(letter.upper())
    return idx if 0 <= idx < n_choices else None


def extract_choice(text: str, choices: Sequence[str]) -> Optional[int]:
    """Index into ``choices`` (the displayed order) of the answer ``text`` gives, or None.

    Tiers, first decisive tier wins:

    1. **Exact**: the whole response equals one choice, ignoring case, punctuation and whitespace
       ("  Dog. " -> "dog"); or the whole response is one letter ("B", "(B)", "b.") mapping to the
       displayed order (A = ``choices[0]``).
    2. **Explicit assertions**: a letter marker ("(B) dog", "B. dog", "Answer: B", "option C"),
       and choices introduced by a cue phrase ("the answer is X", "answer: X", "I think it's X",
       "it is X", "sounds like X", "X is the answer"). A negated cue ("it is not X") asserts nothing.
       One distinct choice asserted -> it; two or more different ones -> None.
    3. **Mentions**: whole-phrase matches on word boundaries ("nine" never inside "ninety"; the
       longer of overlapping choices wins: "car horn" over "horn"), skipping negated mentions
       ("not X", "rather than X", "it isn't X, it's Y" -> Y). Exactly one distinct choice -> it;
       none or several -> None.

    Empty or garbage text gives None (counted as invalid by the evaluation).
    """
    if not isinstance(text, str) or not choices:
        return None
    n = len(choices)
    choice_words = [_tokens(c)[0] for c in choices]
    words, clauses = _tokens(text)
    if not words:
        return None

    # 1. Exact.
    for k, cw in enumerate(choice_words):
        if cw and cw == words:
            return k
    m = _RE_LETTER_ONLY.match(text)
    if m:
        return _letter_index(m.group(1), n)

    # 2. Explicit assertions.
    asserted: set[int] = set()
    m = _RE_LETTER_PREFIX.match(text)
    if m:
        idx = _letter_index(m.group(1) or m.group(2) or m.group(3), n)
        if idx is not None:
            asserted.add(idx)
            rest = _tokens(m.group(4))[0]
            for k, cw in enumerate(choice_words):
                if cw and cw == rest:  # "(A) dog" with choices[0] == "cat" is contradictory
                    asserted.add(k)
    for m in _RE_LETTER_CUE.finditer(text):
        idx = _letter_index(m.group(1) or m.group(2) or m.group(3), n)
        if idx is not None:
            asserted.add(idx)
    mentions = _find_mentions(words, choice_words)
    asserted |= _cue_assertions(words, clauses, mentions)
    if len(asserted) == 1:
        return next(iter(asserted))
    if len(asserted) > 1:
        return None

    # 3. Non-negated whole-phrase mentions.
    kept: set[int] = set()
    mention_positions = set()
    for s, e, _ in mentions:
        mention_positions.update(range(s, e))
    for s, e, k in mentions:
        blocked = mention_positions - set(range(s, e))
        if not _negated(words, clauses, s, blocked):
            kept.add(k)
    if len(kept) == 1:
        return next(iter(kept))
    return None


# ----------------------------------------------------------------------------------------------
# Answer rewards
# ----------------------------------------------------------------------------------------------

def _check_n(texts: Sequence[str], n_items: int, num_generations: int) -> None:
    if len(texts) != n_items * num_generations:
        raise ValueError(f"expected N = B*G = {n_items}*{num_generations} = {n_items * num_generations} "
                         f"completions (item-major), got {len(texts)}")


def _target_index(target: Union[str, int], choices: Sequence[str]) -> int:
    if isinstance(target, int):
        return target
    norm = [_norm(c) for c in choices]
    t = _norm(target)
    if t not in norm:
        raise ValueError(f"target {target!r} is not one of the choices {list(choices)}")
    return norm.index(t)


def accuracy_rewards(texts: Sequence[str], choices_per_item: Sequence[Sequence[str]],
                     targets: Sequence[Union[str, int, None]], num_generations: int,
                     wrong: float = 0.0) -> torch.Tensor:
    """``r_acc [N]``: 1.0 where ``extract_choice`` gives the target, else ``wrong`` (0 or -1).

    ``texts``: N completions, item-major. ``choices_per_item``: B lists in displayed order.
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
            if extract_choice(texts[n], choices) == t:
                out[n] = 1.0
    return out


_TRAILING_PUNCT = ".!?,;:"


def _strip_format(s: str) -> str:
    return unicodedata.normalize("NFKC", s).strip().rstrip(_TRAILING_PUNCT).strip().casefold()


def format_rewards(texts: Sequence[str], choices_per_item: Sequence[Sequence[str]],
                   num_generations: int, fmt: str = "choice") -> torch.Tensor:
    """``r_fmt [N]``: 1.0 when the completion follows the answer format, else 0.0.

    ``fmt="choice"``: the completion is exactly one offered choice once surrounding whitespace and
    final punctuation (``.!?,;:``) are stripped; case-insensitive, otherwise verbatim ("dog" for
    choice "dog", "Dog." too; "It's a dog" or "dog, I think" not).
    """
    if fmt != "choice":
        raise ValueError(f"unknown answer format {fmt!r}; known: choice")
    _check_n(texts, len(choices_per_item), num_generations)
    out = torch.zeros(len(texts), dtype=torch.float32)
    for i, choices in enumerate(choices_per_item):
        allowed = {_strip_format(c) for c in choices}
        for g in range(num_generations):
            n = i * num_generations + g
            t = texts[n] if isinstance(texts[n], str) else ""
            if t.strip() and _strip_format(t) in allowed:
                out[n] = 1.0
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
                  num_generations: int) -> list[Optional[int]]:
    """TTRL's label-free target: per item, the choice most of its G samples name (``[B]`` indices).

    ``None`` where no sample names an offered choice. Ties go to the choice named first among the
    samples (sampling order is random, so no choice position is favoured).
    """
    _check_n(texts, len(choices_per_item), num_generations)
    out: list[Optional[int]] = []
    for i, choices in enumerate(choices_per_item):
        votes = [extract_choice(texts[i * num_generations + g], choices) for g in range(num_generations)]
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
