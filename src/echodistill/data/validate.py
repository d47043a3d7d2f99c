"""The one validation of an item, shared by ``data check`` and the runs (train data loading, eval).

What the check passes the runs accept, and what the runs skip the check reports, because both call the
same functions with the same ``Limits`` (built from the config by ``limits_from_config``):

* ``read_clip(path, limits)`` -- a regular, decodable file (a FIFO never blocks), at least
  ``data.min_duration_s``, finite, non-silent (clean clips), and no longer than the model window
  (``data.max_duration_s``) unless ``data.long_audio=truncate``: then only the window is decoded
  (bounded memory for any clip) and the clip is marked ``truncated`` so callers count and report it.
* ``noisy_length_problem`` -- a pre-mixed noisy clip must match its clean clip's length (one sample of
  slack for resampling), else teacher and student would hear different audio.
* ``prompt_problem`` -- the prompt's tokens (question + shown choices) against ``data.max_prompt_tokens``
  and the model's positions (minus the audio tokens of a full window, the answer and the chat template).
  Counted with the model's tokenizer when one is loadable, else as UTF-8 bytes (an upper bound for the
  byte-level tokenizers every backbone uses).

Every problem is a ``kind`` with one fix in ``FIXES``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..audio.io import SAMPLE_RATE, AudioError, read_audio, validate_waveform
from ..config import LONG_AUDIO  # allowed values, defined once
from ..errors import UserError
from .prompts import format_question, ordered_choices

AUDIO_TOKENS_PER_S = 25  # every backbone's Whisper-style encoder: 50 frames/s pooled by 2
TEMPLATE_TOKENS = 64  # chat template, role markers and the audio delimiters around the prompt text

FIXES = {
    "missing_audio": "fix the path, or pass --path-map OLD_PREFIX=NEW_PREFIX for moved data",
    "not_a_file": "point the item at a regular audio file (not a folder, FIFO or device)",
    "unreadable_audio": "re-export the clip as WAV/FLAC/OGG, or drop the item",
    "empty_audio": "re-export the clip (it has 0 samples), or drop the item",
    "nonfinite_audio": "re-export the clip (it has NaN/inf samples), or drop the item",
    "silent_audio": "replace the clip or drop the item: a silent clean clip has no SNR and nothing to hear",
    "too_long": "trim the clip, raise data.max_duration_s (--max-duration) up to the model's window, or set "
                "data.long_audio=truncate (--long-audio truncate) to use its first window",
    "too_short": "replace the clip (a cut or truncated file?) or drop the item; the minimum is data.min_duration_s",
    "noisy_length_mismatch": "re-mix the noisy clip from the clean one (echodistill data mix): "
                             "teacher and student prompts must have the same audio length",
    "prompt_too_long": "shorten the question/choices, or raise data.max_prompt_tokens (within the model's positions)",
    "truncated": "nothing to do if the first window holds the answer; else trim the clip or set "
                 "data.long_audio=skip",
    "empty_manifest": "add items (one JSON object per line), or fix the path",
}


@dataclass(frozen=True)
class Limits:
    """What an item must satisfy. ``window_s`` None: no length limit (a plain `data check`)."""

    min_duration_s: float = 0.0
    window_s: Optional[float] = None
    long_audio: str = "skip"
    max_prompt_tokens: Optional[int] = None
    count_tokens: Optional[Callable[[str], int]] = None  # None: UTF-8 bytes (an upper bound)
    tokens_from: str = "UTF-8 bytes, an upper bound (no tokenizer loaded)"
    response_format: str = "answer"  # data.response_format: its instruction is part of the prompt

    @property
    def window_samples(self) -> Optional[int]:
        return None if self.window_s is None else int(round(float(self.window_s) * SAMPLE_RATE))


@dataclass
class Clip:
    wav: np.ndarray  # float32 [<= window samples]: what the model hears
    num_samples: int  # the whole clip's length at 16 kHz
    truncated: bool = False  # longer than the window and cut to it (data.long_audio=truncate)


def read_clip(path: str, limits: Limits, *, clean: bool = True) -> Clip:
    """Load one clip as every run does; raise ``AudioError`` (``.kind`` in FIXES) when it is unusable.

    Clean clips must carry signal; noisy (pre-mixed) clips may be quiet. Only the first window is decoded.
    """
    n = limits.window_samples
    policy = limits.long_audio if clean else "truncate"  # a noisy clip is judged by its length match
    wav, full = read_audio(path, max_samples=n)
    if wav.size and full < wav.size:
        full = wav.size
    duration = full / SAMPLE_RATE
    if wav.size and duration < limits.min_duration_s:
        raise AudioError(f"{path}: clip is {duration:.3f} s, shorter than the minimum "
                         f"{limits.min_duration_s:g} s (data.min_duration_s)", "too_short")
    if n is not None and full > n and policy == "skip":
        raise AudioError(f"{path}: clip is {duration:.2f} s, longer than the model window {limits.window_s:g} s "
                         "(data.max_duration_s) and data.long_audio=skip", "too_long")
    validate_waveform(wav, str(path), require_signal=clean)
    return Clip(wav, full, truncated=n is not None and full > n)


def noisy_length_problem(clean: Clip, noisy: Clip, clean_path: str, noisy_path: str) -> Optional[str]:
    """A message when the pre-mixed noisy clip's length differs from the clean clip's (> 1 sample)."""
    if abs(noisy.num_samples - clean.num_samples) > 1:  # one sample of slack: resampling may round differently
        return (f"noisy clip has {noisy.num_samples} samples at {SAMPLE_RATE} Hz, the clean clip "
                f"{clean.num_samples} ({noisy_path} vs {clean_path})")
    return None


def prompt_problem(item: Any, limits: Limits, choice_seed: int) -> Optional[str]:
    """A message when ``item``'s prompt has more tokens than ``limits`` allow, else None."""
    if limits.max_prompt_tokens is None:
        return None
    text = format_question(item.question, ordered_choices(item, choice_seed), limits.response_format)
    try:
        n_bytes = len(text.encode("utf-8"))
    except UnicodeEncodeError as e:  # a lone surrogate (a "\ud800" JSON escape): no tokenizer can take it
        return (f"prompt has a character that is not valid Unicode ({text[e.start]!r} at position {e.start}, a "
                "lone surrogate): fix the question or choices")
    if n_bytes <= limits.max_prompt_tokens:
        return None  # no tokenizer makes more tokens than bytes: no need to count
    n = limits.count_tokens(text) if limits.count_tokens is not None else n_bytes
    if n <= limits.max_prompt_tokens:
        return None
    return (f"prompt has {n} tokens ({limits.tokens_from}), more than the {limits.max_prompt_tokens} allowed "
            f"(data.max_prompt_tokens and the model's positions)")


# ---------------------------------------------------------------- limits from the config
def model_positions(path: str | Path) -> Optional[int]:
    """``max_position_embeddings`` of the language model in ``path``/config.json (any nesting), or None."""
    try:
        cfg = json.loads((Path(path) / "config.json").read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    found: list[int] = []

    def walk(d: Any, depth: int = 0) -> None:
        if isinstance(d, dict) and depth < 6:
            for k, v in d.items():
                if k == "max_position_embeddings" and isinstance(v, int):
                    found.append(v)
                elif k != "audio_config" and k != "encoder_config":
                    walk(v, depth + 1)

    walk(cfg)
    return min(found) if found else None


def load_tokenizer(cfg_model: Any, path: Optional[str | Path] = None) -> Optional[Any]:
    """The model's tokenizer (no weights loaded), or None when the folder has none we can load."""
    path = Path(path or cfg_model.path)
    if not (path / "config.json").is_file() and not (path / "tokenizer_config.json").is_file():
        return None
    try:
        from ..models import adapter_class
        from ..models.base import backbone_of
        return adapter_class(backbone_of(path) or cfg_model.backbone).load_processor(path, cfg_model).tokenizer
    except Exception as e:  # a model folder we cannot read is reported by the model loader, not here
        print(f"echodistill: note: no tokenizer from {path} ({type(e).__name__}); prompt lengths are counted "
              "in UTF-8 bytes", file=sys.stderr)
        return None


def limits_from_config(cfg: Any, tokenizer: Any = None, model_path: Optional[str | Path] = None,
                       max_new_tokens: Optional[int] = None) -> Limits:
    """The run's limits: ``data.*`` settings, the model's positions and tokenizer (when given)."""
    if str(cfg.data.long_audio) not in LONG_AUDIO:
        raise UserError(f"data.long_audio={cfg.data.long_audio!r} is not one of {', '.join(LONG_AUDIO)}")
    window = float(cfg.data.max_duration_s)
    max_tokens = int(cfg.data.max_prompt_tokens)
    positions = model_positions(model_path) if model_path else None  # an adapter folder has no config.json
    positions = positions if positions is not None else model_positions(cfg.model.path)
    if positions is not None:
        answer = int(max_new_tokens if max_new_tokens is not None
                     else max(int(cfg.eval.max_new_tokens), int(cfg.train.max_completion_length)))
        max_tokens = min(max_tokens, positions - int(np.ceil(window * AUDIO_TOKENS_PER_S)) - answer - TEMPLATE_TOKENS)
    count = None
    source = "UTF-8 bytes, an upper bound (no tokenizer loaded)"
    if tokenizer is not None:
        def count(text: str, _tok=tokenizer) -> int:
            return len(_tok(text, add_special_tokens=False)["input_ids"])
        source = "model tokenizer"
    return Limits(min_duration_s=float(cfg.data.min_duration_s), window_s=window, long_audio=str(cfg.data.long_audio),
                  max_prompt_tokens=max(1, max_tokens), count_tokens=count, tokens_from=source,
                  response_format=str(cfg.data.response_format))


# ---------------------------------------------------------------- training items
def usable_training_items(items: Sequence[Any], cfg: Any, manifest: str | Path, *,
                          model_path: Optional[str | Path] = None, log: Callable[[str], None] = print) -> list:
    """The training items whose prompt fits (the rest skipped, counted and named), plus a count of the clips
    the window truncates (from file headers only). Raises UserError for a manifest with no usable item.

    Audio problems are left to the per-batch loader (``train/data.py``), which skips and counts them the
    way ``data check`` reports them (both use ``read_clip``).
    """
    if not items:
        raise UserError(f"{manifest}: the training manifest has no items; add items or fix "
                        "data.train_manifest (`echodistill data check` lists the problems)")
    path = model_path or cfg.model.path
    limits = limits_from_config(cfg, load_tokenizer(cfg.model, path), model_path=path)
    keep, skipped = [], []
    for it in items:
        why = prompt_problem(it, limits, int(cfg.data.choice_seed))
        (skipped.append(f"{it.id}: {why}") if why else keep.append(it))
    if skipped:
        log(f"[echodistill] {manifest}: skipped {len(skipped)} item(s) with prompt_too_long (first: {skipped[0]}); "
            f"fix: {FIXES['prompt_too_long']}")
    if not keep:
        raise UserError(f"{manifest}: none of the {len(items)} training item(s) is usable (prompt_too_long: "
                        f"{skipped[0]}); fix: {FIXES['prompt_too_long']}")
    long = count_long_clips(keep, limits)
    if long:
        verb = "are cut to their first" if limits.long_audio == "truncate" else "are skipped as longer than the"
        log(f"[echodistill] {manifest}: {long} clip(s) {verb} {limits.window_s:g} s window "
            f"(data.long_audio={limits.long_audio})")
    return keep


def count_long_clips(items: Sequence[Any], limits: Limits) -> int:
    """How many clean clips are longer than the window (soundfile headers only; unreadable ones are not counted)."""
    import soundfile as sf

    n = limits.window_samples
    if n is None:
        return 0
    count = 0
    for it in items:
        try:
            info = sf.info(str(it.audio)) if Path(it.audio).is_file() else None
        except Exception:
            info = None
        if info is not None and info.frames * SAMPLE_RATE / max(1, info.samplerate) > n + 1:
            count += 1
    return count


__all__ = ["Limits", "Clip", "FIXES", "LONG_AUDIO", "read_clip", "noisy_length_problem", "prompt_problem",
           "limits_from_config", "load_tokenizer", "model_positions", "usable_training_items", "count_long_clips"]
