"""Noise bank and exact-SNR mixing.

``mix_at_snr`` picks the gain so that the SNR of the mix is exactly the requested value (the
paper's levels: -10 ... 30 dB) and keeps the clean clip's length: teacher (clean) and student
(noisy) must see the same number of audio placeholder tokens.

Noise types: ``white pink brown hum`` are synthesised per draw; ``babble music midi`` are read
lazily from folders of the same names under ``noise_dir`` (written by ``echodistill data build``);
user files passed as ``extra_paths`` are type ``file`` (any of them) or ``file:<stem>``.
Every draw is a pure function of the ``np.random.Generator`` passed in, so ``seeded_rng`` keys
make a mix reproducible across processes and runs.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

from ..errors import UserError
from .io import SAMPLE_RATE, SILENCE_RMS, AudioError, load_audio

GENERATED_TYPES = ("white", "pink", "brown", "hum")
FOLDER_TYPES = ("babble", "music", "midi")  # sub-folders of noise_dir
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif"}
COLOR_FLOOR_HZ = 20.0  # pink/brown spectra are flat below this (see _colored)


class NoiseTypeError(UserError, ValueError):
    """A noise type that is unknown or has no files in this bank."""


class NoiseError(UserError, ValueError):
    """A noise file that cannot be used (missing, undecodable, NaN/inf, silent). Deliberately not an
    ``AudioError``: runs skip items with bad audio, but a bad noise bank is the run's problem, not the
    items', and must stop it before any number is computed."""

    def __init__(self, message: str, kind: str = "bad_noise"):
        super().__init__(message)
        self.kind = kind


_VERIFIED: set = set()  # (path, size, mtime_ns) of noise files already decoded and found usable


# ---------------------------------------------------------------- seeding
def _canonical(key):
    # numpy scalars repr as "np.float64(5.0)" and 5 vs 5.0 repr differently; normalise both so
    # seeded_rng(0, id, "white", 5) == seeded_rng(0, id, "white", np.float64(5.0)).
    if isinstance(key, np.generic):
        key = key.item()
    if isinstance(key, float) and key.is_integer():
        key = int(key)
    if isinstance(key, (tuple, list)):
        return tuple(_canonical(k) for k in key)
    return key


def seeded_rng(*keys) -> np.random.Generator:
    """A Generator determined only by ``keys`` (sha256 of their repr; Python's ``hash`` is salted per process)."""
    digest = hashlib.sha256(repr(tuple(_canonical(k) for k in keys)).encode()).digest()
    return np.random.default_rng(np.frombuffer(digest, dtype=np.uint32))


# ---------------------------------------------------------------- mixing
def _power(x: np.ndarray) -> float:
    return float(np.mean(np.square(x, dtype=np.float64)))


def mix_at_snr(clean: np.ndarray, noise: np.ndarray, snr_db: float, peak: float = 0.99) -> np.ndarray:
    """clean [S] + g * noise [S] -> noisy [S] float32 with 10*log10(P(clean)/P(g*noise)) == snr_db.

    If the mix would exceed ``peak``, clean and noise are scaled together, which keeps the SNR.
    Raises ValueError for different lengths or a non-finite SNR, AudioError for silent inputs.
    """
    clean = np.asarray(clean)
    noise = np.asarray(noise)
    if clean.shape != noise.shape or clean.ndim != 1:
        raise ValueError(f"mix_at_snr needs two 1-D arrays of equal length, got {clean.shape} and {noise.shape}")
    if not np.isfinite(snr_db):
        raise ValueError(f"snr_db must be finite, got {snr_db}")
    p_clean, p_noise = _power(clean), _power(noise)
    if p_clean < SILENCE_RMS ** 2:
        raise AudioError("clean clip is silent (RMS < 1e-5): its SNR is undefined", "silent_audio")
    if p_noise < SILENCE_RMS ** 2:
        raise NoiseError("noise segment is silent (RMS < 1e-5): no gain reaches a finite SNR; "
                         "use another noise file or type", "silent_noise")
    gain = np.sqrt(p_clean / (p_noise * 10.0 ** (snr_db / 10.0)))
    noisy = clean.astype(np.float64) + gain * noise.astype(np.float64)
    top = float(np.max(np.abs(noisy)))
    if top > peak:
        noisy *= peak / top
    return noisy.astype(np.float32)


# ---------------------------------------------------------------- generators
def _unit_rms(x: np.ndarray) -> np.ndarray:
    return (x / np.sqrt(max(_power(x), 1e-20))).astype(np.float32)


def _colored(num_samples: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise [S] with power spectrum ~ 1/f**exponent (1 = pink, 2 = brown), unit RMS.

    Shapes the FFT of white noise. The spectrum is held flat below COLOR_FLOOR_HZ: otherwise
    sub-audible rumble would carry most of brown noise's power, and the SNR would describe it.
    """
    spectrum = np.fft.rfft(rng.standard_normal(num_samples))
    freqs = np.fft.rfftfreq(num_samples, d=1.0 / SAMPLE_RATE)
    spectrum *= np.maximum(freqs, COLOR_FLOOR_HZ) ** (-exponent / 2.0)  # amplitude ~ f^(-e/2)
    spectrum[0] = 0.0  # no DC offset
    return _unit_rms(np.fft.irfft(spectrum, n=num_samples))


def _hum(num_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Mains hum [S]: 50 or 60 Hz (+-0.5 Hz drift) with decaying harmonics at random phases, unit RMS."""
    f0 = rng.choice([50.0, 60.0]) + rng.uniform(-0.5, 0.5)
    t = np.arange(num_samples) / SAMPLE_RATE
    out = np.zeros(num_samples)
    for k in range(1, 9):  # odd harmonics dominate transformer/rectifier hum, hence the 1.5x boost
        amp = rng.uniform(0.5, 1.0) / k * (1.5 if k % 2 else 1.0)
        out += amp * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi))
    return _unit_rms(out)


def _crop_or_loop(wav: np.ndarray, num_samples: int, rng: np.random.Generator) -> np.ndarray:
    """[T] -> [num_samples]: a random window of a longer file, or the file looped from a random offset."""
    if wav.size >= num_samples:
        start = int(rng.integers(0, wav.size - num_samples + 1))
        return wav[start:start + num_samples]
    return wav.take(np.arange(num_samples) + int(rng.integers(0, wav.size)), mode="wrap")


# ---------------------------------------------------------------- bank
def _audio_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)


class NoiseBank:
    """Generated and file-backed noise sources; ``sample`` returns float32 [num_samples].

    ``noise_dir``: folder with ``babble/ music/ midi/`` sub-folders of audio files (any may be
    missing). ``extra_paths``: user noise files or folders, exposed as ``file`` and ``file:<stem>``.
    Files are decoded on first use and kept in an LRU cache of at most ``cache_mb`` MiB.
    """

    def __init__(self, noise_dir: Optional[str | Path] = None, extra_paths: Iterable[str | Path] = (),
                 cache_mb: float = 512.0):
        self.noise_dir = Path(noise_dir) if noise_dir else None
        self._files: dict[str, list[Path]] = {}
        for name in FOLDER_TYPES:
            folder = self.noise_dir / name if self.noise_dir else None
            files = _audio_files(folder) if folder and folder.is_dir() else []
            if files:
                self._files[name] = files
        user: list[Path] = []
        for p in extra_paths:
            p = Path(p)
            if p.is_dir():
                found = _audio_files(p)
                if not found:
                    raise NoiseError(f"{p}: noise folder has no audio files ({', '.join(sorted(AUDIO_SUFFIXES))}); "
                                     "fix noise.extra_noise_paths", "missing_noise")
                user += found
            elif p.is_file():
                user.append(p)
            else:
                raise NoiseError(f"{p}: noise file or folder not found; fix noise.extra_noise_paths", "missing_noise")
        if user:
            self._files["file"] = user
            for f in user:  # same stem in two folders: file:<stem> draws from both
                self._files.setdefault(f"file:{f.stem}", []).append(f)
        self._cache: OrderedDict[Path, np.ndarray] = OrderedDict()
        self._cache_bytes = 0
        self._cache_limit = int(cache_mb * 2 ** 20)

    @property
    def types(self) -> list[str]:
        """Available noise types: generated ones, then file-backed ones that have files."""
        return list(GENERATED_TYPES) + list(self._files)

    def _load(self, path: Path) -> np.ndarray:
        if path in self._cache:
            self._cache.move_to_end(path)
            return self._cache[path]
        try:
            wav = load_audio(path, require_signal=True)
        except AudioError as e:  # worded for clean clips by load_audio: say it is a noise file, and why
            what = {"silent_audio": f"is silent (RMS < {SILENCE_RMS})", "nonfinite_audio": "has NaN/inf samples",
                    "empty_audio": "is empty (0 samples)", "missing_audio": "is missing"}.get(
                        e.kind, "cannot be decoded (" + str(e).split(": ", 1)[-1].split("; ")[0] + ")")
            raise NoiseError(f"noise file {path} {what}; remove it from the noise bank "
                             f"({'noise.extra_noise_paths' if path in self._files.get('file', []) else 'noise.noise_dir'})"
                             " or replace it", "bad_noise") from None
        self._cache[path] = wav
        self._cache_bytes += wav.nbytes
        while self._cache_bytes > self._cache_limit and len(self._cache) > 1:
            self._cache_bytes -= self._cache.popitem(last=False)[1].nbytes
        return wav

    def _segment(self, path: Path, num_samples: int, rng: np.random.Generator) -> np.ndarray:
        """A non-silent window of one file (a window inside a pause would make the SNR undefined)."""
        wav = self._load(path)
        for _ in range(8):
            seg = _crop_or_loop(wav, num_samples, rng)
            if _power(seg) >= SILENCE_RMS ** 2:
                return seg
        raise NoiseError(f"noise file {path}: 8 random {num_samples}-sample windows were all silent; "
                         "trim the silence from this noise file or remove it", "silent_noise")

    def fingerprint(self) -> list:
        """What a cached result drawn from this bank depends on, by content: ``[type, [[file name, sha256],
        ...]]`` per type in draw order. The same whether the bank was opened through a relative or an
        absolute path (a report checks it against the evaluation's)."""
        from ..provenance import sha256_file
        return [[t, [[f.name, sha256_file(f)] for f in files]] for t, files in sorted(self._files.items())]

    def path_stamps(self) -> list:
        """(path as given, size, mtime_ns) of every noise file: the fingerprint of eval folders of format 2."""
        from ..provenance import file_stamps
        return file_stamps(sorted({str(f) for files in self._files.values() for f in files}))

    def _unknown(self, noise_type: str) -> NoiseTypeError:
        if noise_type in FOLDER_TYPES:
            where = self.noise_dir / noise_type if self.noise_dir else "no noise_dir was given"
            why = (f"no audio files in {where} (the noise bank `echodistill data build` writes; set noise.noise_dir, "
                   "by default <data.bench_dir>/noise, or `-c` the run's config)")
        elif noise_type.startswith("file"):
            why = "no such user noise file (add it to noise.extra_noise_paths)"
        else:
            why = "unknown noise type"
        return NoiseTypeError(f"noise type {noise_type!r}: {why}; available: {', '.join(self.types)}")

    def check(self, noise_types: Sequence[str]) -> None:
        """Fail before a long run, not half-way through it, and never on a biased subset of the items.

        Raises NoiseTypeError for the first type this bank cannot draw, and NoiseError listing every file
        of those types (and every user file in ``extra_paths``) that does not decode to finite, non-silent
        16 kHz audio. Each file is decoded once per process (then kept in the LRU cache as usual).
        """
        for t in noise_types:
            if t not in GENERATED_TYPES and t not in self._files:
                raise self._unknown(t)
        files = {f for t in noise_types if t not in GENERATED_TYPES for f in self._files[t]}
        files |= set(self._files.get("file", []))
        problems, total = [], len(files)
        for f in sorted(files):
            try:
                st = f.stat()
                stamp = (str(f), st.st_size, st.st_mtime_ns)
            except OSError:
                stamp = None
            if stamp is not None and stamp in _VERIFIED:
                continue
            try:
                self._load(f)
                if stamp is not None:
                    _VERIFIED.add(stamp)
            except NoiseError as e:
                problems.append(str(e))
        if problems:
            raise NoiseError(f"noise bank: {len(problems)} of {total} noise file(s) unusable, fix them before "
                             f"anything is computed: " + " | ".join(problems[:5])
                             + (f" | ... ({len(problems) - 5} more)" if len(problems) > 5 else ""))

    def sample(self, noise_type: str, num_samples: int, rng: np.random.Generator) -> np.ndarray:
        """float32 [num_samples] of ``noise_type``; all randomness comes from ``rng``."""
        if num_samples <= 0:
            raise ValueError(f"num_samples must be positive, got {num_samples}")
        if noise_type == "white":
            return rng.standard_normal(num_samples).astype(np.float32)
        if noise_type == "pink":
            return _colored(num_samples, 1.0, rng)
        if noise_type == "brown":
            return _colored(num_samples, 2.0, rng)
        if noise_type == "hum":
            return _hum(num_samples, rng)
        files = self._files.get(noise_type)
        if not files:
            raise self._unknown(noise_type)
        if noise_type == "babble":
            # Several talkers at once, equally loud (each RMS-normalised), each from its own offset.
            out = np.zeros(num_samples, dtype=np.float64)
            for _ in range(int(rng.integers(3, 7))):
                seg = self._segment(files[int(rng.integers(len(files)))], num_samples, rng)
                out += seg / np.sqrt(_power(seg))
            return out.astype(np.float32)
        return self._segment(files[int(rng.integers(len(files)))], num_samples, rng).astype(np.float32)


# ---------------------------------------------------------------- one draw
@dataclass
class NoiseDraw:
    noisy: np.ndarray  # float32 [S], same length as the clean clip
    noise_type: str
    snr: float  # dB


def draw_noisy(clean: np.ndarray, bank: NoiseBank, noise_types: Sequence[str], rng: np.random.Generator,
               snr_range: Optional[tuple[float, float]] = None,
               snr_levels: Optional[Sequence[float]] = None) -> NoiseDraw:
    """Mix clean [S] with a random type from ``noise_types`` at an SNR uniform in ``snr_range``
    or chosen from ``snr_levels`` (exactly one of the two)."""
    if (snr_range is None) == (snr_levels is None):
        raise ValueError("draw_noisy needs exactly one of snr_range or snr_levels")
    if not noise_types:
        raise ValueError("draw_noisy needs at least one noise type")
    noise_type = str(noise_types[int(rng.integers(len(noise_types)))])
    if snr_range is not None:
        snr = float(rng.uniform(float(snr_range[0]), float(snr_range[1])))
    else:
        snr = float(snr_levels[int(rng.integers(len(snr_levels)))])
    noise = bank.sample(noise_type, int(np.asarray(clean).size), rng)
    return NoiseDraw(mix_at_snr(clean, noise, snr), noise_type, snr)
