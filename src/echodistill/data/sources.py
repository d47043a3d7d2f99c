"""Packaged audio sources for the offline benchmark: Asterisk recordings, flite, espeak-ng and festival
voices, fluidsynth renders with several General MIDI soundfonts, and a per-utterance cache.

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
SOUNDFONT_DIR = Path(os.environ.get("ECHODISTILL_SOUNDFONT_DIR", "/usr/share/sounds"))


@dataclass(frozen=True)
class Voice:
    """One speaking voice: an engine plus fixed options. ``name`` is what manifests record."""

    name: str
    engine: str  # flite | espeak | festival | asterisk
    model: str = ""  # flite voice, espeak language (+variant), festival voice; "" for asterisk
    gender: str = "unknown"
    rates: tuple = (1.0,)  # speed variants (tempo factors; > 1 = faster)
    pitches: tuple = (50,)  # espeak pitch variants (0..99)
    licence: str = ""
    package: str = ""
    timbres: tuple = ("",)  # espeak-ng variants (m1, f3, klatt, ...) spoken with this voice's language

    def variants(self) -> list[tuple[float, int, str]]:
        """Every (rate, pitch, timbre) this voice speaks with; one is drawn per clip."""
        return [(r, p, t) for r in self.rates for p in self.pitches for t in self.timbres]

    def model_for(self, timbre: str) -> str:
        """The engine's voice argument for one timbre (espeak-ng: ``language+variant``)."""
        return f"{self.model}+{timbre}" if timbre else self.model


@dataclass(frozen=True)
class Soundfont:
    """One General MIDI soundfont from a Debian package. ``family`` names the sample set it is built
    from: soundfonts of one family share recordings, so a held-out soundfont's family stays out of
    training entirely."""

    name: str
    file: str  # relative to SOUNDFONT_DIR
    package: str
    family: str
    licence: str

    @property
    def path(self) -> Path:
        return SOUNDFONT_DIR / self.file


FLITE_LICENCE = "flite and CMU ARCTIC voices: BSD-style (CMU/Edinburgh), free for any use"
ESPEAK_LICENCE = "espeak-ng engine GPL-3.0-or-later; synthesized output is not restricted"
ASTERISK_LICENCE = "CC-BY-SA-3.0 (Asterisk core sounds, voice of Allison Smith, Digium)"
MOH_LICENCE = "CC-BY-SA-3.0 (opsound.org artists, Asterisk music-on-hold opsound)"
MIDI_LICENCE = "rendered with fluidsynth (LGPL-2.1) and the soundfont named in meta.soundfont (see SOUNDFONTS)"
FESTIVAL_LICENCE = "festival (X11-style) and its festvox voices (free for any use); output not restricted"

# Every General MIDI soundfont the benchmark knows, in a fixed order (the seeded draws index this list).
SOUNDFONTS = (
    Soundfont("timgm6mb", "sf2/TimGM6mb.sf2", "timgm6mb-soundfont", "timgm6mb", "GPL-2"),
    Soundfont("fluidr3_gm", "sf2/FluidR3_GM.sf2", "fluid-soundfont-gm", "fluidr3", "MIT"),
    Soundfont("musescore_general_lite", "sf3/MuseScore_General_Lite.sf3", "musescore-general-soundfont-small",
              "fluidr3", "MIT (parts PD/CC0); partly FluidR3 Mono samples"),
    Soundfont("opl3_fm", "sf2/OPL-3_FM_128M.sf2", "opl3-soundfont", "opl3", "GPL-3+ / CC-BY-SA-4.0"),
    Soundfont("csound_gm_gs_bank", "sf2/sf_GMbank.sf2", "csound-soundfont", "csound_gmbank", "LGPL-2.1+ (csound)"),
)
SOUNDFONT_BY_NAME = {f.name: f for f in SOUNDFONTS}


# ------------------------------------------------------------------ availability
@dataclass
class Availability:
    flite: bool = False
    flite_voices: tuple = ()
    espeak: bool = False
    asterisk: bool = False
    moh: bool = False
    festival: bool = False
    festival_voices: tuple = ()
    fluidsynth: bool = False
    soundfonts: tuple = ()  # names (SOUNDFONTS order) whose file is present
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
    if shutil.which("text2wave"):
        a.festival = True
        a.festival_voices = tuple(sorted(p.name for p in FESTIVAL_VOICE_DIR.glob("*/*") if p.is_dir()))
    else:
        a.missing.append("festival not found (Debian package: festival): festival voices skipped")
    a.fluidsynth = shutil.which("fluidsynth") is not None
    if not a.fluidsynth:
        a.missing.append("fluidsynth not found (Debian package: fluidsynth): music tasks and noise/midi/ skipped")
    a.soundfonts = tuple(f.name for f in SOUNDFONTS if f.path.is_file())
    for f in SOUNDFONTS:
        if not f.path.is_file():
            a.missing.append(f"soundfont {f.name} not found at {f.path} (Debian package: {f.package}): "
                             "music is rendered with the other soundfonts")
    if not a.soundfonts:
        a.missing.append("no General MIDI soundfont (Debian packages: " + ", ".join(f.package for f in SOUNDFONTS)
                         + "): music tasks skipped")
        a.fluidsynth = False
    return a


FESTIVAL_VOICE_DIR = Path(os.environ.get("ECHODISTILL_FESTIVAL_VOICES", "/usr/share/festival/voices"))


def soundfont_path(name: str) -> Path:
    """The file of a soundfont by name; a clear set-up message when it is absent."""
    f = SOUNDFONT_BY_NAME.get(name)
    if f is None:
        raise FileNotFoundError(f"unknown soundfont {name!r}; known: {', '.join(SOUNDFONT_BY_NAME)}")
    if not f.path.is_file():
        raise FileNotFoundError(f"soundfont {name} not found at {f.path}: install it with "
                                f"`sudo apt-get install {f.package}` (or run scripts/setup.sh as root)")
    return f.path


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


def synth_request_key(voice: Voice, text: str, rate: float, pitch: int, timbre: str = "") -> str:
    return f"v1|{voice.engine}|{voice.model_for(timbre)}|{rate:.3f}|{pitch}|{text}"


def synthesize(voice: Voice, text: str, rate: float = 1.0, pitch: int = 50,
               cache: Optional[Cache] = None, timbre: str = "") -> Optional[np.ndarray]:
    """Speak ``text`` (for asterisk: the recording's relative path) -> float32 16 kHz, or None on failure."""
    key = synth_request_key(voice, text, rate, pitch, timbre)
    if cache is not None:
        hit = cache.get(key)
        if hit is not None:
            return hit
    wav = _synthesize(voice, text, rate, pitch, timbre)
    if wav is not None and cache is not None:
        cache.put(key, wav)
    return wav


def festival_batch(voice: Voice, requests: Sequence[tuple[str, float]], cache: Cache) -> None:
    """Speak many (text, rate) pairs with one festival process (loading a voice takes ~1 s, one
    utterance ~0.05 s) and store them in ``cache``; ``synthesize`` then finds them there."""
    todo = [(t, r) for t, r in requests if cache.get(synth_request_key(voice, t, r, 50)) is None]
    if not todo:
        return
    with tempfile.TemporaryDirectory(prefix="echodistill_festival_") as td:
        lines = [f"(voice_{voice.model})"]
        for k, (text, rate) in enumerate(todo):
            safe = text.replace("\\", " ").replace('"', " ")
            lines.append(f"(Parameter.set 'Duration_Stretch {1.0 / rate:.3f})")
            lines.append(f'(utt.save.wave (utt.synth (Utterance Text "{safe}")) "{Path(td) / f"{k}.wav"}" \'riff)')
        script = Path(td) / "batch.scm"
        script.write_text("\n".join(lines) + "\n")
        try:
            subprocess.run(["festival", "-b", str(script)], capture_output=True, timeout=600, check=True)
        except (OSError, subprocess.SubprocessError):
            return  # synthesize() tries the failed ones one by one and reports them as dropped
        for k, (text, rate) in enumerate(todo):
            out = Path(td) / f"{k}.wav"
            if out.is_file():
                cache.put(synth_request_key(voice, text, rate, 50), _read_wav(out))


def _synthesize(voice: Voice, text: str, rate: float, pitch: int, timbre: str = "") -> Optional[np.ndarray]:
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
            cmd = ["espeak-ng", "-v", voice.model_for(timbre), "-s", str(int(round(165 * rate))), "-p", str(pitch),
                   "-w", str(out), text]
        elif voice.engine == "festival":
            txt = Path(td) / "u.txt"
            txt.write_text(text + "\n")
            cmd = ["text2wave", "-o", str(out), "-eval", f"(voice_{voice.model})",
                   "-eval", f"(Parameter.set 'Duration_Stretch {1.0 / rate:.3f})", str(txt)]
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
        # dynamic sample loading: only the presets the MIDI uses are decoded (an .sf3 soundfont
        # otherwise decompresses every sample first: 8 s instead of 3 s); the audio is the same.
        cmd = ["fluidsynth", "-ni", "-q", "-R", "0", "-C", "0", "-g", "0.6", "-r", str(SAMPLE_RATE),
               "-o", "synth.dynamic-sample-loading=1",
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
