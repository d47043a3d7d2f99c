"""The answer extractor: which offered choice a model's text names. Pure; shared by training
(the accuracy reward, ``train/rewards.py``), evaluation (``eval/evaluate.py``) and ``predict``.

One extractor for both (the official release used two different matchers; METHOD.md section 4,
flaw 6). The prompt that asks the question is ``data/prompts.py``'s ``format_question``.

Response formats (``data.response_format``): ``parse_response`` splits a completion into the stated
evidence and the answer text (the whole text in the ``answer`` format; the ``<answer>`` span in the
``reasoning`` format, nothing when its tags are broken); ``extract_answer`` = parse, then
``extract_choice`` on the answer text. Every reader of a completion goes through these two.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Optional, Sequence

from .prompts import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN

__all__ = ["extract_choice", "normalize", "free_answer", "is_correct", "read_answer", "Parsed",
           "parse_response", "extract_answer", "format_ok", "PARSE_PROBLEMS"]

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


def normalize(text: str) -> str:
    """Lower-cased word tokens joined by one space: what "the same choice text" means."""
    return " ".join(_tokens(text)[0])


_norm = normalize


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


def free_answer(text: str) -> Optional[str]:
    """An open-ended question's answer: the response ``normalize``d (case, punctuation and spacing
    ignored); None when nothing is left (counted as invalid, like an answer naming no choice)."""
    return (normalize(text) or None) if isinstance(text, str) else None


def is_correct(answer: Optional[str], target: Optional[str], open_ended: bool) -> Optional[bool]:
    """Whether ``answer`` (a choice's text, or ``free_answer``'s text) is the ``target``; None when unlabeled.

    Multiple-choice: the very choice; open-ended: the same text once both are normalised."""
    if target is None:
        return None
    if answer is None:
        return False
    return normalize(answer) == normalize(target) if open_ended else answer == target


def read_answer(text: str, choices: Sequence[str], response_format: str = "answer") -> Optional[int | str]:
    """The answer ``text`` gives, as training compares answers: the index of the offered choice it names
    (``extract_choice``), or, for an open-ended question (no choices), its normalised text
    (``free_answer``); in the reasoning format, read from the answer span (``parse_response``). None: no answer."""
    if response_format != "answer":
        text = parse_response(text, response_format).answer
    return extract_choice(text, choices) if choices else free_answer(text)


# ----------------------------------------------------------------------------------------------
# Response formats
# ----------------------------------------------------------------------------------------------

# Why a reasoning completion is not well formed ("" = it is). The first three give no answer.
PARSE_PROBLEMS = ("empty", "broken_tags", "two_answers", "empty_answer", "empty_think")
_TAGS = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)
# The whole completion: think span, then answer span, only whitespace around (R1-AQA's order; stricter
# than TRL's think_format_reward, which allows any text after </think>).
_RE_REASONING = re.compile(r"\s*<think>(.*?)</think>\s*<answer>(.*?)</answer>\s*", re.S)


@dataclass(frozen=True)
class Parsed:
    """A completion split by its response format.

    ``answer``: the text the answer is read from (None: no answer); ``evidence``: the stated evidence
    (the think span, stripped; None in the ``answer`` format or when the tags are broken);
    ``problem``: "" when the completion follows its format, else one of ``PARSE_PROBLEMS``.
    """

    answer: Optional[str]
    evidence: Optional[str] = None
    problem: str = ""

    @property
    def well_formed(self) -> bool:
        return self.problem == ""


def parse_response(text: Optional[str], response_format: str = "answer") -> Parsed:
    """Split ``text`` into evidence and answer text according to ``response_format``.

    ``answer``: the whole text is the answer (today's behaviour; ``problem`` "empty" for blank text).
    ``reasoning``: exactly ``<think>E</think><answer>A</answer>`` with only whitespace around, each tag
    once. Explicit outcomes:

    * broken tags (a tag missing, unclosed, repeated, out of order, text outside the tags) -> no answer,
      ``problem="broken_tags"``;
    * two ``<answer>`` spans -> no answer, ``"two_answers"`` (never the first or the last one);
    * an empty answer span -> no answer, ``"empty_answer"``;
    * an empty think span -> the answer IS read, ``evidence=""`` and ``problem="empty_think"``: the
      completion answers without stating evidence, so the format reward is 0 and evidence metrics
      count nothing stated.
    """
    if response_format == "answer":
        if not isinstance(text, str) or not text.strip():
            return Parsed(None, None, "empty")
        return Parsed(text)
    if response_format != "reasoning":
        raise ValueError(f"unknown response format {response_format!r}; known: answer, reasoning")
    if not isinstance(text, str) or not text.strip():
        return Parsed(None, None, "empty")
    if text.count(ANSWER_OPEN) > 1:
        return Parsed(None, None, "two_answers")
    m = _RE_REASONING.fullmatch(text)
    if m is None or any(text.count(tag) != 1 for tag in _TAGS):
        return Parsed(None, None, "broken_tags")
    evidence, answer = m.group(1).strip(), m.group(2).strip()
    if not answer:
        return Parsed(None, evidence, "empty_answer")
    if not evidence:
        return Parsed(answer, "", "empty_think")
    return Parsed(answer, evidence)


def extract_answer(text: Optional[str], choices: Sequence[str], response_format: str = "answer") -> Optional[int]:
    """Index into ``choices`` of the answer ``text`` gives in ``response_format``, or None.

    The answer text (``parse_response``) through ``extract_choice``: in the ``answer`` format exactly
    ``extract_choice(text, choices)``; in the ``reasoning`` format only the answer span counts, so a
    choice named in the evidence ("<think>not a dog</think>") never becomes the answer.
    """
    parsed = parse_response(text, response_format)
    return None if parsed.answer is None else extract_choice(parsed.answer, choices)


def _strip_format(s: str) -> str:
    return unicodedata.normalize("NFKC", s).strip().rstrip(".!?,;:").strip().casefold()


def format_ok(text: Optional[str], choices: Sequence[str], response_format: str = "answer") -> bool:
    """Whether ``text`` follows the response format exactly (the format reward's test).

    The answer text must be exactly one offered choice once surrounding whitespace and final
    punctuation are stripped (case-insensitive; "Dog." for "dog"), or any answer with words in it when
    the item has no choices; in the ``reasoning`` format the completion must also be well formed with a
    non-empty think span (``parse_response``).
    """
    parsed = parse_response(text, response_format)
    if not parsed.well_formed or parsed.answer is None:
        return False
    if not choices:  # open-ended: any answer with words in it
        return free_answer(parsed.answer) is not None
    return _strip_format(parsed.answer) in {_strip_format(c) for c in choices}
