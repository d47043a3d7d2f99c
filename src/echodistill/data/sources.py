"""Packaged audio sources for the offline benchmark: Asterisk recordings, flite and espeak-ng voices,
fluidsynth renders, and a per-utterance cache.

Every function returns float32 mono audio at 16 kHz (``echodistill.audio.io.SAMPLE_RATE``). All tools
used here are deterministic (no dithering, no random seeds inside), so the same request always gives
the same samples; the cache only saves time.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import soundfile as sf

from ..audio.io import SAMPLE_RATE, to_mono_16k

ASTERISK_DIR = Path(os.environ.get("ECHODISTILL_ASTERISK_SOUNDS", "/usr/share/asterisk/sounds/en"))
ASTERISK_MOH_DIR = Path(os.environ.get("ECHODISTILL_ASTERISK_MOH", "/usr/share/asterisk/moh"))
ASTERISK_TRANSCRIPTS = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
SOUNDFONT_CANDIDATES = (
    Path("/usr/share/sounds/sf2/TimGM6mb.sf2"),  # Debian timgm6mb-soundfont
    Path("/usr/share/sounds/sf2/default-GM.sf2"),
    Path("/usr/share/sounds/sf2/FluidR3_GM.sf2"),
)


@dataclass(frozen=True)
class Voice:
    """One speaking voice: an engine plus fixed options. ``name`` is what manifests record."""

    name: str
    engine: str  # flite | espeak | asterisk
    model: str = ""  # flite voice name, espeak voice+variant; "" for asterisk
    gender: str = "unknown"
    rates: tuple = (1.0,)  # speed variants (tempo factors; > 1 = faster)
    pitches: tuple = (50,)  # espeak pitch variants (0..99)
    licence: str = ""
    package: str = ""

    def variants(self) -> list[tuple[float, int]]:
        return [(r, p) for r in self.rates for p in self.pitches]


FLITE_LICENCE = "flite and CMU ARCTIC voices: BSD-style (CMU/Edinburgh), free for any use"
ESPEAK_LICENCE = "espeak-ng engine GPL-3.0-or-later; synthesized output is not restricted"
ASTERISK_LICENCE = "CC-BY-SA-3.0 (Asterisk core sounds, voice of Allison Smith, Digium)"
MOH_LICENCE = "CC-BY-SA-3.0 (opsound.org artists, Asterisk music-on-hold opsound)"
MIDI_LICENCE = "rendered with fluidsynth (LGPL-2.1) and the TimGM6mb soundfont (GPL-2)"


# ------------------------------------------------------------------ availability
@dataclass
class Availability:
    flite: bool = False
    flite_voices: tuple = ()
    espeak: bool = False
    asterisk: bool = False
    moh: bool = False
    fluidsynth: bool = False
    soundfont: Optional[Path] = None
    missing: list = field(default_factory=list)  # human-readable lines: what is missing, which package


def probe() -> Availability:
    """Find which packaged sources exist; record a line per missing one (with the Debian package)."""
    a = Availability()
    if shutil.which("flite"):
        a.flite = True
        try:
            out = subprocess.run(["flite", "-lv"], capture_output=True, text=True, timeout=20).stdout
            a.flite_voices = tuple(out.split(":", 1)[-1].split())
        except (OSError, subprocess.SubprocessError):
            a.flite_voices = ()
    else:
        a.missing.append("flite not found (Debian package: flite): flite voices skipped")
    if shutil.which("espeak-ng"):
        a.espeak = True
    else:
        a.missing.append("espeak-ng not found (Debian package: espeak-ng): espeak voices and babble skipped")
    if (ASTERISK_DIR / "digits" / "1.wav").is_file():
        a.asterisk = True
    else:
        a.missing.append(f"Asterisk recordings not found under {ASTERISK_DIR} (Debian package: "
                         "asterisk-core-sounds-en-wav): the human held-out voice is skipped")
    if ASTERISK_MOH_DIR.is_dir() and any(ASTERISK_MOH_DIR.glob("*.wav")):
        a.moh = True
    else:
        a.missing.append(f"music-on-hold tracks not found under {ASTERISK_MOH_DIR} (Debian package: "
                         "asterisk-moh-opsound-wav): noise/music/ stays empty")
    a.fluidsynth = shutil.which("fluidsynth") is not None
    if not a.fluidsynth:
        a.missing.append("fluidsynth not found (Debian package: fluidsynth): music tasks and noise/midi/ skipped")
    for p in SOUNDFONT_CANDIDATES:
        if p.is_file():
            a.soundfont = p
            break
    if a.soundfont is None:
        try:  # pretty_midi ships the same TimGM6mb soundfont
            import pretty_midi
            p = Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"
            a.soundfont = p if p.is_file() else None
        except ImportError:
            pass
    if a.soundfont is None:
        a.missing.append("no General MIDI soundfont (Debian package: timgm6mb-soundfont): music tasks skipped")
        a.fluidsynth = False
    return a


# ------------------------------------------------------------------ cache
class Cache:
    """Per-utterance cache: ``<dir>/<sha1 of the request>.npy`` (float32, 16 kHz)."""

    def __init__(self, root: Optional[Path]):
        self.root = root
        if root is not None:
            root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Optional[Path]:
        if self.root is None:
            return None
        h = hashlib.sha1(key.encode()).hexdigest()
        return self.root / h[:2] / f"{h}.npy"

    def get(self, key: str) -> Optional[np.ndarray]:
        p = self.path(key)
        if p is not None and p.is_file():
            try:
                return np.load(p)
            except Exception:  # a torn file from an interrupted run: synthesize again
                return None
        return None

    def put(self, key: str, wav: np.ndarray) -> None:
        p = self.path(key)
        if p is None:
            return
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + f".{os.getpid()}.tmp.npy")
        np.save(tmp, wav.astype(np.float32))
        os.replace(tmp, p)


# ------------------------------------------------------------------ speech
def _read_wav(path: Path) -> np.ndarray:
    wav, sr = sf.read(str(path), dtype="float32", always_2d=False)
    return to_mono_16k(wav, sr)


def change_tempo(wav: np.ndarray, factor: float) -> np.ndarray:
    """Speed up (> 1) or slow down by resampling (pitch moves with it, like a tape): a new 'voice'."""
    if abs(factor - 1.0) < 1e-6:
        return wav
    import soxr
    # Treat the clip as if recorded at SAMPLE_RATE*factor and bring it back to SAMPLE_RATE.
    return soxr.resample(wav, int(round(SAMPLE_RATE * factor)), SAMPLE_RATE, quality="HQ").astype(np.float32)


def synth_request_key(voice: Voice, text: str, rate: float, pitch: int) -> str:
    return f"v1|{voice.engine}|{voice.model}|{rate:.3f}|{pitch}|{text}"


def synthesize(voice: Voice, text: str, rate: float = 1.0, pitch: int = 50,
               cache: Optional[Cache] = None) -> Optional[np.ndarray]:
    """Speak ``text`` (for asterisk: the recording's relative path) -> float32 16 kHz, or None on failure."""
    key = synth_request_key(voice, text, rate, pitch)
    if cache is not None:
        hit = cache.get(key)
        if hit is not None:
            return hit
    wav = _synthesize(voice, text, rate, pitch)
    if wav is not None and cache is not None:
        cache.put(key, wav)
    return wav


def _synthesize(voice: Voice, text: str, rate: float, pitch: int) -> Optional[np.ndarray]:
    if voice.engine == "asterisk":
        p = ASTERISK_DIR / text
        if not p.is_file():
            return None
        return change_tempo(_read_wav(p), rate)
    with tempfile.TemporaryDirectory(prefix="echodistill_tts_") as td:
        out = Path(td) / "u.wav"
        if voice.engine == "flite":
            cmd = ["flite", "-voice", voice.model, "--setf", f"duration_stretch={1.0 / rate:.3f}",
                   "-t", text, "-o", str(out)]
        elif voice.engine == "espeak":
            cmd = ["espeak-ng", "-v", voice.model, "-s", str(int(round(165 * rate))), "-p", str(pitch),
                   "-w", str(out), text]
        else:
            raise ValueError(f"unknown engine {voice.engine}")
        try:
            subprocess.run(cmd, capture_output=True, timeout=60, check=True)
        except (OSError, subprocess.SubprocessError):
            return None
        if not out.is_file():
            return None
        return _read_wav(out)


# ------------------------------------------------------------------ music
@dataclass
class NoteSpec:
    program: int
    pitch: int
    start: float  # seconds from the clip start
    end: float
    velocity: int = 100


def render_clips(clips: Sequence[Sequence[NoteSpec]], soundfont: Path, slot_s: float = 3.0,
                 clip_s: float = 2.0) -> list[np.ndarray]:
    """Render many short clips with one fluidsynth call: clip k is placed at k*slot_s, then cut out.

    One MIDI track per GM program (<= 15 programs per call). Reverb and chorus are off, so the output
    is deterministic. Returns float32 16 kHz arrays of ``clip_s`` seconds (trailing silence kept).
    """
    import pretty_midi
    pm = pretty_midi.PrettyMIDI(initial_tempo=120)
    tracks: dict[int, "pretty_midi.Instrument"] = {}
    for k, notes in enumerate(clips):
        base = k * slot_s + 0.05
        for n in notes:
            if n.program not in tracks:
                tracks[n.program] = pretty_midi.Instrument(program=n.program)
            tracks[n.program].notes.append(pretty_midi.Note(velocity=int(n.velocity), pitch=int(n.pitch),
                                                            start=base + n.start, end=base + min(n.end, clip_s - 0.1)))
    if len(tracks) > 15:
        raise ValueError("render_clips: at most 15 programs per call")
    for prog in sorted(tracks):
        pm.instruments.append(tracks[prog])
    full = render_midi(pm, soundfont)
    return [_slice(full, k * slot_s, clip_s) for k in range(len(clips))]


def render_midi(pm, soundfont: Path) -> np.ndarray:
    """A pretty_midi object -> float32 mono 16 kHz via the fluidsynth command line."""
    with tempfile.TemporaryDirectory(prefix="echodistill_midi_") as td:
        mid, out = Path(td) / "m.mid", Path(td) / "o.wav"
        pm.write(str(mid))
        cmd = ["fluidsynth", "-ni", "-q", "-R", "0", "-C", "0", "-g", "0.6", "-r", str(SAMPLE_RATE),
               "-O", "float", "-T", "wav", "-F", str(out), str(soundfont), str(mid)]
        subprocess.run(cmd, capture_output=True, timeout=600, check=True)
        return _read_wav(out)


def _slice(wav: np.ndarray, start_s: float, dur_s: float) -> np.ndarray:
    a = int(round(start_s * SAMPLE_RATE))
    seg = wav[a:a + int(round(dur_s * SAMPLE_RATE))]
    return np.ascontiguousarray(seg, dtype=np.float32)


def asterisk_sentences(limit: int = 200) -> list[str]:
    """Transcript sentences from the asterisk-core-sounds-en package (text only; used for babble)."""
    import gzip
    out = []
    if not ASTERISK_TRANSCRIPTS.is_file():
        return out
    with gzip.open(ASTERISK_TRANSCRIPTS, "rt", encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith(";") or ":" not in line:
                continue
            text = line.split(":", 1)[1].strip()
            if text.startswith("[") or len(text) < 15 or len(text) > 160:
                continue
            out.append(text)
            if len(out) >= limit:
                break
    return out
