"""``echodistill data check``: validate a manifest and report every problem with its location and a fix.

Items may be open-ended (no ``choices``) and unlabeled (no ``target``): both are valid, and counted in one
summary line. Checks, per item: the JSON itself (``malformed_json``, ``non_utf8``, ``line_too_long``), its fields
(``missing_field``, ``bad_field``: valid JSON, a required field absent or of the wrong type), the labels
(``target_not_in_choices``, ``too_few_choices``, ``duplicate_choices``, ``empty_choice``, ``duplicate_id``,
``noisy_without_snr``), the prompt (``prompt_too_long``), the clean clip (``missing_audio``, ``not_a_file``,
``unreadable_audio``, ``empty_audio``, ``nonfinite_audio``, ``silent_audio``, ``too_short``, ``too_long``;
``truncated`` is a counted note) and the pre-mixed noisy clip when present (the same kinds, plus
``noisy_length_mismatch``). Across items: ``leakage`` (the same clean clip content and question in two
splits, METHOD.md section 4 flaw 2), ``position_bias`` (the target nearly always stored at one position,
flaw 1) and ``empty_manifest``.

The benchmark's source fields (``meta.soundfont``, ``meta.room`` with ``rt60_s`` / ``distance_m``,
``meta.voice``) are checked too: ``bad_source_field`` (an unknown soundfont, a room without a sane
RT60) and ``heldout_source_in_training`` (a soundfont, room or voice that ``data build`` reserves for
test_heldout, in any other split: the held-out results would no longer measure transfer).

The per-item audio and prompt checks are ``data/validate.py``'s, the very functions the runs call with
the same limits (``limits_from_config``), so what this check passes the runs accept and what the runs
skip this check reports.

Any format the readers accept is checked; a bad row never stops the check, and no input produces a
traceback: every per-item check is wrapped.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..audio.io import AudioError, read_audio
from .manifest import Issue, iter_rows
from .validate import FIXES, Limits, noisy_length_problem, prompt_problem, read_clip

# The position-bias warning needs enough items for the share to mean something.
POSITION_BIAS_MIN_ITEMS = 20
POSITION_BIAS_SHARE = 0.9

@dataclass
class Problem:
    """One finding. ``location`` is ``file:line`` or ``file:line (item <id>)`` (``file`` for whole-file ones)."""

    kind: str
    location: str
    message: str
    fix: str
    severity: str = "error"  # error | warning (position_bias): nonzero exit code; note (truncated): counted only

    def __str__(self) -> str:
        return f"{self.location}: {self.kind}: {self.message} — fix: {self.fix}"


@dataclass
class _Clip:
    """What one decoded clip contributes to the checks (cached: release rows share clean clips)."""

    num_samples: int = 0
    fingerprint: Optional[np.ndarray] = None  # block RMS profile, for finding copies of a clip
    error: Optional[AudioError] = None
    clip: Any = None  # the validate.Clip (lengths), None on error


def _loc(path: Path, line: int, item_id: Optional[str] = None) -> str:
    return f"{path}:{line}" + (f" (item {item_id})" if item_id is not None else "")


def _fingerprint(wav: np.ndarray, blocks: int = 32) -> np.ndarray:
    """RMS of ``blocks`` equal slices. A byte hash would miss copies: re-encoding the same samples
    (WAV -> FLAC) already changes some of them by one LSB. Candidates found by this profile are then
    confirmed on the waveforms (``_same_audio``)."""
    parts = np.array_split(wav.astype(np.float64), blocks)
    return np.array([np.sqrt(np.mean(p ** 2)) if p.size else 0.0 for p in parts])


# Copies are compared on at most this much audio (bounded memory for any file).
_COMPARE_SAMPLES = 16_000 * 60


def _same_audio(a: str, b: str) -> bool:
    """True when two files decode to the same 16 kHz samples within a few LSB (a copy, any codec)."""
    try:
        (wa, na), (wb, nb) = read_audio(a, max_samples=_COMPARE_SAMPLES), read_audio(b, max_samples=_COMPARE_SAMPLES)
    except AudioError:
        return False
    return na == nb and wa.size == wb.size and float(np.max(np.abs(wa - wb), initial=0.0)) <= 1e-3


def _load(path: str, cache: dict, *, clean: bool, limits: Limits) -> _Clip:
    key = (path, clean)
    if key not in cache:
        try:
            # Noisy clips may legitimately be quiet; only clean ones must carry signal.
            clip = read_clip(path, limits, clean=clean)
            cache[key] = _Clip(clip.num_samples, _fingerprint(clip.wav) if clean else None, clip=clip)
        except AudioError as e:
            cache[key] = _Clip(error=e)
        except Exception as e:  # e.g. resampler or memory errors on absurd files: report, don't crash
            cache[key] = _Clip(error=AudioError(f"{path}: cannot load audio ({type(e).__name__}: {e})"))
    return cache[key]


def _audio_problems(item, line: int, path: Path, cache: dict, limits: Limits) -> tuple[list[Problem], _Clip]:
    out = []
    loc = _loc(path, line, item.id)
    clean = _load(item.audio, cache, clean=True, limits=limits)
    if clean.error is not None:
        kind = clean.error.kind
        out.append(Problem(kind, loc, f"clean audio {_what(clean.error)}", FIXES.get(kind, FIXES["unreadable_audio"])))
    elif clean.clip.truncated:
        out.append(Problem("truncated", loc, f"clean clip is {clean.num_samples / 16000:.2f} s: the runs use its first "
                           f"{limits.window_s:g} s (data.long_audio=truncate)", FIXES["truncated"], severity="note"))
    if item.noisy_audio:
        noisy = _load(item.noisy_audio, cache, clean=False, limits=limits)
        if noisy.error is not None:
            kind = noisy.error.kind
            out.append(Problem(kind, loc, f"noisy audio {_what(noisy.error)}", FIXES.get(kind, FIXES["unreadable_audio"])))
        elif clean.error is None:
            msg = noisy_length_problem(clean.clip, noisy.clip, item.audio, item.noisy_audio)
            if msg:
                out.append(Problem("noisy_length_mismatch", loc, msg, FIXES["noisy_length_mismatch"]))
    return out, clean


def _what(e: AudioError) -> str:
    """The AudioError's description without its own fix clause (the Problem carries the fix)."""
    return str(e).split("; ", 1)[0]


def _issue_problem(path: Path, i: Issue) -> Problem:
    return Problem(i.kind, _loc(path, i.line, i.item_id), i.message, i.fix)


def _find_leak(item, line: int, q: str, clip: _Clip, seen_paths: dict, seen_clips: dict) -> Optional[str]:
    """A message when (clean clip, question) already occurred in another split, by path or by content."""
    real = os.path.realpath(item.audio)
    prev = seen_paths.setdefault((q, real), (item.split, line, item.id))
    if prev[0] != item.split:
        return f"same clean file and question as item {prev[2]} (line {prev[1]}) but split {item.split!r} vs {prev[0]!r}"
    if clip.fingerprint is None:
        return None
    bucket = seen_clips.setdefault((q, clip.num_samples), [])
    found = None
    for split, pline, pid, ppath, fp in bucket:
        if (split != item.split and ppath != real
                and np.allclose(fp, clip.fingerprint, rtol=1e-2, atol=1e-5) and _same_audio(ppath, real)):
            found = (f"same clean audio content as item {pid} (line {pline}, a copy: {ppath}) and the same "
                     f"question, but split {item.split!r} vs {split!r}")
            break
    if not any(e[3] == real and e[0] == item.split for e in bucket):
        bucket.append((item.split, line, item.id, real, clip.fingerprint))
    return found


_SOURCE_FIXES = {
    "bad_source_field": "rebuild with `echodistill data build`, or correct the item's meta",
    "heldout_source_in_training": "rebuild with `echodistill data build` (it never does this), or move the item "
                                  "to test_heldout",
}


def _source_problem(item) -> Optional[tuple[str, str]]:
    """(kind, message) when the item's benchmark source fields are malformed or use a held-out source
    outside test_heldout; None otherwise (also for manifests without these fields)."""
    from . import sources as S
    from .bench import HELDOUT_SOUNDFONT, HELDOUT_VOICES
    meta = item.meta or {}
    font, room, voice = meta.get("soundfont"), meta.get("room"), meta.get("voice")
    if font is not None and font not in S.SOUNDFONT_BY_NAME:
        return "bad_source_field", (f"meta.soundfont {font!r} is not a known soundfont "
                                    f"({', '.join(S.SOUNDFONT_BY_NAME)})")
    if room is not None and room != "dry":
        rt60 = meta.get("rt60_s")
        if not isinstance(rt60, (int, float)) or not 0 < rt60 <= 5:
            return "bad_source_field", f"meta.room {room!r} has no RT60 in (0, 5] s (meta.rt60_s = {rt60!r})"
    if item.split in (None, "", "test_heldout"):
        return None
    held = []
    if font == HELDOUT_SOUNDFONT:
        held.append(f"soundfont {font}")
    if isinstance(room, str) and room.startswith("heldout_room"):
        held.append(f"room {room}")
    if meta.get("source") != "fluidsynth" and voice in {v.name for v in HELDOUT_VOICES}:
        held.append(f"voice {voice}")
    if held:
        return "heldout_source_in_training", (f"split {item.split!r} uses {' and '.join(held)}, which the "
                                              "benchmark keeps for test_heldout only")
    return None


def _progress(total: int):
    """Progress on stderr for large manifests (a bar on a terminal, a line per interval in a log:
    progress.py); none under 200 items."""
    from ..progress import progress
    return progress(total, "checking audio", "item", disable=total < 200)


def check_manifest(path: str | Path, path_map: Optional[dict] = None, fmt: str = "auto",
                   max_duration_s: Optional[float] = None, columns: Optional[dict] = None,
                   limits: Optional[Limits] = None, choice_seed: int = 1234) -> list[Problem]:
    """Every problem in the manifest at ``path``, in file order, then the cross-item ones.

    ``limits``: the runs' limits (``validate.limits_from_config(cfg)``, what the CLI passes); without
    them only ``max_duration_s`` is enforced, as a hard limit. Raises ``ManifestError`` only when the
    file cannot be opened at all.
    """
    path = Path(path)
    if limits is None:
        limits = Limits(window_s=max_duration_s, long_audio="skip")
    problems: list[Problem] = []
    rows = list(iter_rows(path, fmt, path_map, columns))
    first_line: dict[str, int] = {}
    cache: dict = {}
    seen_paths: dict = {}  # (question, real path) -> (split, line, id) of the first item seen
    seen_clips: dict = {}  # (question, num samples) -> [(split, line, id, path, fingerprint)]
    positions: Counter = Counter()
    bar = _progress(sum(r.item is not None for r in rows))
    for row in rows:
        problems.extend(_issue_problem(path, i) for i in row.issues)
        item = row.item
        if item is None:
            continue
        loc = _loc(path, row.line, item.id)
        try:
            if item.id in first_line:
                problems.append(Problem("duplicate_id", loc, f"id {item.id!r} is also used on line {first_line[item.id]}",
                                        "give every item a unique id (ids key predictions, splits and noise draws)"))
            else:
                first_line[item.id] = row.line
            if row.stored_target_index is not None:
                positions[row.stored_target_index] += 1
            why = prompt_problem(item, limits, choice_seed)
            if why:
                problems.append(Problem("prompt_too_long", loc, why, FIXES["prompt_too_long"]))
            source = _source_problem(item)
            if source is not None:
                problems.append(Problem(source[0], loc, source[1], _SOURCE_FIXES[source[0]]))
            audio_problems, clip = _audio_problems(item, row.line, path, cache, limits)
            problems.extend(audio_problems)
            q = " ".join(item.question.split()).casefold()
            leak = _find_leak(item, row.line, q, clip, seen_paths, seen_clips)
            if leak is not None:
                problems.append(Problem("leakage", loc, leak,
                                        "keep each clip+question in one split: split by item, not by noise condition"))
        except Exception as e:  # a bug or an unforeseen input must not end the whole check
            problems.append(Problem("check_failed", loc, f"could not check this item ({type(e).__name__}: {e})",
                                    "report this as a bug with the line above; fix or drop the item meanwhile"))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if not rows:
        problems.append(Problem("empty_manifest", str(path), "the manifest has no items (0 rows)",
                                FIXES["empty_manifest"]))
    items = [r.item for r in rows if r.item is not None]
    bare = [it for it in items if not it.evidence]
    if bare and len(bare) < len(items):  # all or none is a choice; some is usually a mistake
        problems.append(Problem(
            "missing_evidence", str(path), f"{len(bare)} of {len(items)} items have no evidence (first: {bare[0].id}); "
            "the reasoning format's warm-up skips them and the evidence metrics leave them out",
            "add an `evidence` text (what the clip contains) to every item, or to none", severity="note"))
    total = sum(positions.values())
    if total >= POSITION_BIAS_MIN_ITEMS:
        pos, count = positions.most_common(1)[0]
        if count / total >= POSITION_BIAS_SHARE:
            problems.append(Problem(
                "position_bias", str(path),
                f"the target is stored at position {pos + 1} in {count} of {total} items ({count / total:.0%}) — "
                "the release's target-first order. Prompts shuffle the choices (seeded), but labels made this "
                "way are suspect", "check where the labels came from; store choices in a shuffled order",
                severity="warning"))
    return problems


def composition(path: str | Path, path_map: Optional[dict] = None, fmt: str = "auto",
                columns: Optional[dict] = None) -> str:
    """What kinds of items the manifest holds, when it is not all labeled multiple-choice ("" then)."""
    from .labels import label_free_variants

    items = [r.item for r in iter_rows(path, fmt, path_map, columns) if r.item is not None]
    open_ended, unlabeled = sum(it.open_ended for it in items), sum(not it.labeled for it in items)
    if not open_ended and not unlabeled:
        return ""
    text = f"{len(items)} items: {len(items) - open_ended} multiple-choice, {open_ended} open-ended"
    if unlabeled:
        text += (f"; {unlabeled} without a target (unlabeled: they train with a variant that needs no label, "
                 f"{', '.join(label_free_variants())}, and evaluate with the label-free metrics)")
    return text


def run_check(path: str | Path, path_map: Optional[dict] = None, fmt: str = "auto",
              max_duration_s: Optional[float] = None, columns: Optional[dict] = None,
              limits: Optional[Limits] = None, choice_seed: int = 1234) -> int:
    """Print every problem and a summary per kind; return 0 when clean (notes allowed), 2 otherwise."""
    problems = check_manifest(path, path_map=path_map, fmt=fmt, max_duration_s=max_duration_s, columns=columns,
                              limits=limits, choice_seed=choice_seed)
    try:
        for p in problems:
            print(p)
        kinds = composition(path, path_map, fmt, columns)
        if kinds:
            print(f"{path}: {kinds}")
        real = [p for p in problems if p.severity != "note"]
        notes = Counter(p.kind for p in problems if p.severity == "note")
        noted = ("; notes: " + ", ".join(f"{k}: {n}" for k, n in sorted(notes.items()))) if notes else ""
        if not real:
            print(f"{path}: OK, no problems found{noted}")
            return 0
        counts = Counter(p.kind for p in real)
        summary = ", ".join(f"{k}: {n}" for k, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
        print(f"{path}: {len(real)} problem(s) — {summary}{noted}")
    except BrokenPipeError:
        # `echodistill data check big.jsonl | head`: the reader left; stop quietly (Python docs' recipe).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 2
