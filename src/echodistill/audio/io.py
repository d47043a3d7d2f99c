"""Audio in and out: any file soundfile reads, any rate, to mono float32 at 16 kHz.

Every error is an ``AudioError`` whose message names the file and says what to do, so that a
user mistake never surfaces as a traceback from inside libsndfile.
"""

from __future__ import annotations

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


def load_audio(path: str | Path, *, min_duration_s: float = 0.0, max_duration_s: Optional[float] = None,
               require_signal: bool = True) -> np.ndarray:
    """Read ``path`` (wav/flac/ogg/...) -> [T] float32 mono 16 kHz, validated."""
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: audio file not found; fix the path or pass a path map "
                         "(--path-map OLD=NEW)", "missing_audio")
    try:
        wav, sr = sf.read(str(path), dtype="float32", always_2d=False)
    except Exception as e:  # libsndfile raises a variety of errors for corrupt/unknown files
        raise AudioError(f"{path}: cannot decode audio ({str(e).strip()}); re-export as WAV/FLAC/OGG",
                         "unreadable_audio") from None
    wav = to_mono_16k(wav, sr)
    validate_waveform(wav, str(path), min_duration_s=min_duration_s, max_duration_s=max_duration_s,
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
