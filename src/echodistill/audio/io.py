"""Audio in and out: any file soundfile reads, any rate, to mono float32 at 16 kHz.

Every error is an ``AudioError`` whose message names the file and says what to do, so that a
user mistake never surfaces as a traceback from inside libsndfile.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Optional

import numpy as np
import soundfile as sf
import soxr

from ..errors import UserError

SAMPLE_RATE = 16_000
SILENCE_RMS = 1e-5  # below this a clean clip is treated as silent (its SNR would be undefined)


class AudioError(UserError, ValueError):
    """A clip that cannot be used. ``kind`` is a short machine-readable problem name."""

    def __init__(self, message: str, kind: str = "unreadable_audio"):
        super().__init__(message)
        self.kind = kind


def to_mono_16k(wav: np.ndarray, sr: int) -> np.ndarray:
    """[T] or [T, C] at any rate -> [T'] float32 mono at 16 kHz (channel mean, soxr HQ resampling)."""
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim == 2:
        wav = wav.mean(axis=1)
    if sr != SAMPLE_RATE:
        wav = soxr.resample(wav, sr, SAMPLE_RATE, quality="HQ").astype(np.float32)
    return wav


def validate_waveform(wav: np.ndarray, source: str, *, min_duration_s: float = 0.0,
                      max_duration_s: Optional[float] = None, require_signal: bool = True) -> None:
    """Raise AudioError (naming ``source``) for empty, non-finite, too short/long or silent audio."""
    if wav.size == 0:
        raise AudioError(f"{source}: audio is empty (0 samples); re-export the clip or drop the item",
                         "empty_audio")
    if not np.all(np.isfinite(wav)):
        raise AudioError(f"{source}: audio has NaN/inf samples; re-export the clip or drop the item",
                         "nonfinite_audio")
    duration = wav.size / SAMPLE_RATE
    if duration < min_duration_s:
        raise AudioError(f"{source}: clip is {duration:.3f} s, shorter than the minimum {min_duration_s} s",
                         "too_short")
    if max_duration_s is not None and duration > max_duration_s:
        raise AudioError(f"{source}: clip is {duration:.2f} s, longer than the maximum {max_duration_s} s; "
                         "trim it or raise data.max_duration_s", "too_long")
    if require_signal and float(np.sqrt(np.mean(wav.astype(np.float64) ** 2))) < SILENCE_RMS:
        raise AudioError(f"{source}: clean clip is silent (RMS < {SILENCE_RMS}); its SNR is undefined. "
                         "Replace the clip or drop the item", "silent_audio")


def _open_regular(path: Path) -> None:
    """Missing paths and anything but a regular file (a FIFO would block the reader forever, a device
    never ends, a folder is not audio) are refused before the file is opened."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise AudioError(f"{path}: audio file not found; fix the path or pass a path map "
                         "(--path-map OLD=NEW)", "missing_audio") from None
    except OSError as e:
        raise AudioError(f"{path}: cannot open ({e.strerror or e}); check the path and its permissions",
                         "unreadable_audio") from None
    if not stat.S_ISREG(st.st_mode):
        what = "a folder" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode) else \
            "a device or socket"
        raise AudioError(f"{path}: is {what}, not a regular audio file; point the item at an audio file",
                         "not_a_file")


def read_audio(path: str | Path, *, max_samples: Optional[int] = None) -> tuple[np.ndarray, int]:
    """Read ``path`` -> (mono 16 kHz float32 [<= max_samples], full length in 16 kHz samples).

    Decodes at most the first ``max_samples`` (plus a little resampler margin) of the file, so a
    ten-hour recording costs what its first window costs: memory is bounded for any clip.
    No validation beyond "a decodable regular file" (see ``load_audio``).
    """
    path = Path(path)
    _open_regular(path)
    try:
        info = sf.info(str(path))
        sr = int(info.samplerate)
        want = -1
        if max_samples is not None:  # input frames covering the window, + 50 ms for the resampler's edge
            want = int(np.ceil(max_samples * sr / SAMPLE_RATE)) + sr // 20
        wav, sr = sf.read(str(path), frames=want, dtype="float32", always_2d=False)
    except Exception as e:  # libsndfile raises a variety of errors for corrupt/unknown files
        raise AudioError(f"{path}: cannot decode audio ({str(e).strip()}); re-export as WAV/FLAC/OGG",
                         "unreadable_audio") from None
    to_end = want < 0 or wav.shape[0] < want  # decoded to the end of the file
    wav = to_mono_16k(wav, sr)
    # Decoded to the end: the real length (a truncated file is shorter than its header says), with the
    # resampler's own rounding. Else the header's length, converted to 16 kHz.
    full = wav.size if to_end else int(round(max(int(info.frames), 0) * SAMPLE_RATE / sr))
    if max_samples is not None:
        wav = wav[:max_samples]
    return wav, full


def load_audio(path: str | Path, *, min_duration_s: float = 0.0, max_duration_s: Optional[float] = None,
               require_signal: bool = True) -> np.ndarray:
    """Read ``path`` (wav/flac/ogg/...) -> [T] float32 mono 16 kHz, validated (whole file)."""
    wav, _ = read_audio(path)
    validate_waveform(wav, str(Path(path)), min_duration_s=min_duration_s, max_duration_s=max_duration_s,
                      require_signal=require_signal)
    return wav


def fit_length(wav: np.ndarray, num_samples: int) -> np.ndarray:
    """Crop or zero-pad [T] to exactly ``num_samples`` (the model window)."""
    if wav.size >= num_samples:
        return wav[:num_samples]
    return np.pad(wav, (0, num_samples - wav.size))


def write_audio(path: str | Path, wav: np.ndarray, sr: int = SAMPLE_RATE) -> None:
    """Write [T] float32 as 16-bit PCM WAV (or FLAC by suffix), creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.asarray(wav, dtype=np.float32), sr, subtype="PCM_16" if path.suffix == ".wav" else None)
