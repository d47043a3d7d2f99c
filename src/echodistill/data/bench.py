"""`echodistill data build`: the offline spoken-QA benchmark, generated at run time from packaged sources.

Licences forbid committing the audio, so every clip is made here from Debian packages: Asterisk
human recordings (held out), flite, espeak-ng (languages x variants) and festival voices, fluidsynth
renders of MIDI notes with several General MIDI soundfonts (one drawn per clip; one held out), and
the Asterisk music-on-hold tracks (noise bank only). Recording conditions vary per clip: tempo,
articulation, dynamics and mild mastering for music, and a simulated room for a share of all clips
(``acoustics.py``), so a model has to learn the sound, not one synthesiser.

Tasks (4 choices each, distractors from the same task; the answer is one of the offered strings):

* speech: ``spoken_number`` (zero..twenty, thirty..ninety), ``spoken_word`` (NATO alphabet),
  ``spoken_letter`` (A..Z), ``command`` (what a short spoken request asks for)
* music: ``instrument`` (which GM instrument plays), ``melody_contour`` (three notes: rising,
  falling, rising then falling, falling then rising), ``note_count`` (one..four notes)
* inferred from what is heard (the same clips as their source task, another question): ``word_initial``
  (the first letter of the spoken code word), ``number_plus_one`` (the spoken number plus one). Their
  answer is not what the clip says, so a model can hear right and answer wrong, or the reverse.

Every item carries ``evidence``: what its clip contains, in words -- the phrase spoken ("x ray",
"double you", "turn on the lights"), or the generator's description of the music ("piano, three notes,
rising"). The reasoning format (``data.response_format=reasoning``) states it before answering.

Splits are made by *group* (task, label, phrase, voice for speech; one rendered clip for music), so
no clip, and no other speed/pitch variant of the same voice saying the same words, is in two splits.
``test_heldout`` uses voices never heard in train/val/test (the Asterisk human speaker, flite kal,
one espeak accent, festival ked), for music instruments and chords never used in training and a
soundfont whose samples no training soundfont shares, and rooms of its own.

Outputs under ``out_dir``: ``train.jsonl val.jsonl test.jsonl test_heldout.jsonl``, ``audio/<task>/``,
``noise/{babble,music,midi}/``, ``datasheet.md``, ``datasheet.json``; ``.cache/`` keeps synthesized
utterances so a second build is fast. Same seed -> byte-identical manifests and audio.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from ..audio.io import SAMPLE_RATE, write_audio
from ..errors import UserError
from . import acoustics as A
from . import sources as S
from .sources import NoteSpec, Voice

MAX_CLIP_S = 2.0  # the embedded model's window
MAX_SPEEDUP = 1.35  # clips longer than the window are sped up at most this much, else dropped
NUM_WORKERS = 2
SPLITS = ("train", "val", "test", "test_heldout")
SIZES = {  # items per task and split
    "small": {"train": 22, "val": 6, "test": 6, "test_heldout": 6},
    "default": {"train": 350, "val": 50, "test": 50, "test_heldout": 50},
}


class BenchmarkError(UserError, RuntimeError):
    """Too few sources to build a useful benchmark; the message names the missing packages."""


# ------------------------------------------------------------------ voices
_R3 = (0.9, 1.0, 1.15)
# espeak-ng variants (voices/!v in espeak-ng-data) spoken with each espeak language: one drawn per clip.
ESPEAK_TIMBRES = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5",
                  "klatt", "klatt2", "klatt3", "croak")


def _espeak(name: str, language: str, timbres=ESPEAK_TIMBRES, rates=_R3, pitches=(40, 60)) -> Voice:
    return Voice(name, "espeak", language, "unknown", rates, pitches, S.ESPEAK_LICENCE, "espeak-ng", tuple(timbres))


def _festival(name: str, model: str, gender: str, package: str) -> Voice:
    return Voice(name, "festival", model, gender, _R3, licence=S.FESTIVAL_LICENCE, package=package)


SEEN_VOICES = [
    Voice("flite_slt", "flite", "slt", "female", _R3, licence=S.FLITE_LICENCE, package="flite"),
    Voice("flite_rms", "flite", "rms", "male", _R3, licence=S.FLITE_LICENCE, package="flite"),
    Voice("flite_awb", "flite", "awb", "male", _R3, licence=S.FLITE_LICENCE, package="flite"),
    Voice("flite_kal16", "flite", "kal16", "male", _R3, licence=S.FLITE_LICENCE, package="flite"),
    _espeak("espeak_us", "en-us"),
    _espeak("espeak_gb", "en-gb"),
    _espeak("espeak_gb_rp", "en-gb-x-rp"),
    _espeak("espeak_caribbean", "en-029"),
    _festival("festival_kal", "kal_diphone", "male", "festvox-kallpc16k"),
    _festival("festival_slt_hts", "cmu_us_slt_arctic_hts", "female", "festvox-us-slt-hts"),
]
HELDOUT_VOICES = [
    Voice("asterisk_human", "asterisk", "", "female", (0.95, 1.0, 1.1), licence=S.ASTERISK_LICENCE,
          package="asterisk-core-sounds-en-wav"),
    Voice("flite_kal", "flite", "kal", "male", _R3, licence=S.FLITE_LICENCE, package="flite"),
    _espeak("espeak_scotland", "en-gb-scotland", pitches=(50,)),
    _festival("festival_ked", "ked_diphone", "male", "festvox-kdlpc16k"),
]
# Babble talkers: espeak languages no item is spoken in.
BABBLE_VOICES = [
    _espeak("babble_nyc_m5", "en-us-nyc", ("m5",), (1.0,), (50,)),
    _espeak("babble_nyc_f5", "en-us-nyc", ("f5",), (1.0,), (50,)),
    _espeak("babble_midlands_m6", "en-gb-x-gbcwmd", ("m6",), (1.0,), (50,)),
    _espeak("babble_lancaster_f1", "en-gb-x-gbclan", ("f1",), (1.0,), (50,)),
]

# ------------------------------------------------------------------ soundfonts
# One soundfont per music item, drawn from the training ones; the held-out one (a sample set no
# training soundfont shares) renders test_heldout's music and nothing else.
HELDOUT_SOUNDFONT = "csound_gm_gs_bank"
TRAIN_SOUNDFONTS = tuple(f.name for f in S.SOUNDFONTS
                         if f.family != S.SOUNDFONT_BY_NAME[HELDOUT_SOUNDFONT].family)
RENDER_CHUNK = 150  # clips per fluidsynth call (loading an .sf3 soundfont takes seconds)

# ------------------------------------------------------------------ task vocabularies
NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
           "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
           "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
NUMBER_FILES = {w: f"digits/{n}.wav" for w, n in zip(NUMBERS, list(range(21)) + [30, 40, 50, 60, 70, 80, 90])}
NATO = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo",
        "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango", "uniform", "victor",
        "whiskey", "x-ray", "yankee", "zulu"]
NATO_TEXT = {"x-ray": "x ray", "juliet": "juliet", "quebec": "kebeck"}
LETTER_SOUNDS = dict(zip("ABCDEFGHIJKLMNOPQRSTUVWXYZ", [
    "ay", "bee", "see", "dee", "ee", "eff", "jee", "aitch", "eye", "jay", "kay", "ell", "em", "en", "oh",
    "pee", "cue", "are", "ess", "tee", "you", "vee", "double you", "ex", "why", "zee"]))
COMMANDS = {
    "lights on": ["turn on the lights", "lights on please", "switch the light on"],
    "lights off": ["turn off the lights", "lights off please", "switch the light off"],
    "play music": ["play some music", "put on a song", "start the music"],
    "volume up": ["turn it up", "louder please", "raise the volume"],
    "volume down": ["turn it down", "quieter please", "lower the volume"],
    "weather": ["what's the weather", "will it rain today", "is it cold outside"],
    "time": ["what time is it", "tell me the time", "what's the time now"],
    "call mom": ["call my mother", "phone mom please", "ring my mom"],
    "set alarm": ["set an alarm", "wake me up at seven", "set my alarm clock"],
    "open the door": ["open the door", "unlock the front door", "please open up"],
    "coffee": ["make me a coffee", "I want some coffee", "brew a pot of coffee"],
    "cancel": ["cancel that", "never mind", "forget about it"],
}
# GM program, lowest and highest MIDI pitch used
INSTRUMENTS = {
    "piano": (0, 48, 84), "xylophone": (13, 65, 96), "organ": (19, 48, 84), "guitar": (24, 45, 76),
    "bass": (33, 28, 52), "violin": (40, 55, 88), "cello": (42, 36, 64), "harp": (46, 40, 84),
    "trumpet": (56, 55, 82), "saxophone": (65, 49, 80), "clarinet": (71, 50, 84), "flute": (73, 60, 96),
}
PITCHED_SEEN = ["piano", "guitar", "violin", "flute", "trumpet", "organ"]  # contour/count in train
PITCHED_HELDOUT = ["harp", "clarinet", "xylophone", "saxophone"]  # contour/count only in test_heldout
CONTOURS = ["rising", "falling", "rising then falling", "falling then rising"]
COUNTS = ["one", "two", "three", "four"]


@dataclass(frozen=True)
class Task:
    name: str
    kind: str  # speech | music
    question: str
    labels: tuple


TASKS = [
    Task("spoken_number", "speech", "Which number is spoken?", tuple(NUMBERS)),
    Task("spoken_word", "speech", "Which code word does the speaker say?", tuple(NATO)),
    Task("spoken_letter", "speech", "Which letter is spoken?", tuple(LETTER_SOUNDS)),
    Task("command", "speech", "What does the speaker ask for?", tuple(COMMANDS)),
    Task("instrument", "music", "Which instrument is playing?", tuple(INSTRUMENTS)),
    Task("melody_contour", "music", "How does the melody move?", tuple(CONTOURS)),
    Task("note_count", "music", "How many notes are played?", tuple(COUNTS)),
]

# Tasks whose answer is inferred from what the clip contains: task -> (source task, label -> answer).
# Their items reuse the source task's clips (same split, same group: no leakage), with another question.
_PLUS_ONE = {w: (NUMBERS[i + 1] if i < 20 else f"{w} one") for i, w in enumerate(NUMBERS)}
INFERRED = {
    "word_initial": ("spoken_word", lambda label: label[0].upper()),
    "number_plus_one": ("spoken_number", _PLUS_ONE.__getitem__),
}
TASKS += [
    Task("word_initial", "speech", "The code word starts with which letter?", tuple(LETTER_SOUNDS)),
    Task("number_plus_one", "speech", "What is the spoken number plus one?", tuple(dict.fromkeys(_PLUS_ONE.values()))),
]


# ------------------------------------------------------------------ helpers
def _rng(*keys) -> np.random.Generator:
    """A generator seeded from the keys by SHA-256 (stable across processes and Python versions)."""
    h = hashlib.sha256("|".join(map(str, keys)).encode()).digest()
    return np.random.default_rng(int.from_bytes(h[:8], "little"))


def _say(msg: str) -> None:
    print(f"[data build] {msg}", file=sys.stderr, flush=True)


def _progress(it, total: int, desc: str):
    try:
        from tqdm import tqdm
        return tqdm(it, total=total, desc=f"[data build] {desc}", file=sys.stderr, leave=True,
                    mininterval=1.0, disable=None)
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return it


@dataclass
class Spec:
    """One candidate clip before synthesis: what to say/play and where it may go."""

    task: Task
    label: str
    pool: str  # seen | heldout
    group: str
    voice: Optional[Voice] = None
    text: str = ""  # spoken text (asterisk: relative file)
    rate: float = 1.0
    pitch: int = 50
    timbre: str = ""  # espeak-ng variant
    notes: list = field(default_factory=list)  # music: NoteSpec list
    soundfont: str = ""  # music: the soundfont that renders it (sources.SOUNDFONTS name)
    mastering: Optional[dict] = None  # music: acoustics.master settings
    room: Optional[A.Room] = None  # None = dry
    meta: dict = field(default_factory=dict)
    wav: Optional[np.ndarray] = None
    drop: str = ""

    def condition(self, wav: Optional[np.ndarray]) -> Optional[np.ndarray]:
        """The recording conditions on top of the synthesised clip: mastering, then the room."""
        if wav is None or wav.size == 0 or not np.any(wav):
            return wav
        if self.mastering is not None:
            wav = A.master(wav, self.mastering)
        if self.room is not None:
            wav = A.reverberate(wav, self.room)
        return wav


def postprocess(wav: Optional[np.ndarray], gain_rng: np.random.Generator) -> tuple[Optional[np.ndarray], str]:
    """Trim silence, fit into MAX_CLIP_S (speed-up <= MAX_SPEEDUP), reject silence, set a seeded level."""
    if wav is None or wav.size == 0:
        return None, "synthesis_failed"
    wav = np.asarray(wav, dtype=np.float32)
    frame = SAMPLE_RATE // 100
    n = wav.size // frame
    if n == 0:
        return None, "too_short"
    rms = np.sqrt(np.mean(wav[: n * frame].reshape(n, frame).astype(np.float64) ** 2, axis=1))
    if rms.max() < 1e-4:
        return None, "silent"
    on = np.nonzero(rms > rms.max() * 0.02)[0]
    pad = 4  # 40 ms
    a, b = max(0, on[0] - pad) * frame, min(n, on[-1] + 1 + pad) * frame
    wav = wav[a:b]
    limit = int(MAX_CLIP_S * SAMPLE_RATE)
    if wav.size > limit:
        factor = wav.size / (limit - frame)
        if factor > MAX_SPEEDUP:
            return None, "too_long"
        wav = S.change_tempo(wav, factor)[:limit]
    if wav.size < SAMPLE_RATE // 10:
        return None, "too_short"
    peak = float(np.max(np.abs(wav)))
    if peak < 1e-3:
        return None, "silent"
    wav = wav * (float(gain_rng.uniform(0.35, 0.9)) / peak)
    # Quantise to what a 16-bit WAV stores, so the in-memory clip equals the written one.
    return (np.round(wav * 32767.0) / 32767.0).astype(np.float32), ""


# ------------------------------------------------------------------ evidence
def _count_word(n: int) -> str:
    return NUMBERS[n] if n < len(NUMBERS) else str(n)


def clip_evidence(s: "Spec") -> str:
    """What the clip of ``s`` contains, in words: the phrase spoken, or the generator's music description.

    Speech: the words said, as words ("x ray", "double you", "turn on the lights"), not the spelling a
    TTS engine needed ("kebeck"). Music: instrument, number of notes, and the melody's direction where
    the generator made one ("violin, three notes, falling then rising"; a held-out chord: "harp, a chord
    of three notes").
    """
    task = s.task.name
    if task == "spoken_number":
        return s.label
    if task == "spoken_word":
        return s.label.replace("-", " ")
    if task == "spoken_letter":
        return LETTER_SOUNDS[s.label]
    if task == "command":
        return str(s.meta["text"])
    inst, n = s.meta["instrument"], len(s.notes)
    if n > 1 and len({round(x.start, 3) for x in s.notes}) == 1:
        return f"{inst}, a chord of {_count_word(n)} notes"
    desc = f"{inst}, {_count_word(n)} note{'s' if n != 1 else ''}"
    return f"{desc}, {s.label}" if task == "melody_contour" else desc


def inferred_items(rows: list[dict], task: Task, seed: int) -> list[tuple[dict, dict]]:
    """(source row, new row) for ``task`` (one of ``INFERRED``): one item per source item of the split,
    the same clip and evidence, the inferred answer, 3 distractors from the task's labels (the heard
    label's own text among them when it is one: "seven" offered for "seven plus one")."""
    source, answer_of = INFERRED[task.name]
    out = []
    for k, r in enumerate(x for x in rows if x["task"] == source):
        iid = f"{task.name}-{r['split']}-{k:04d}"
        target = answer_of(r["target"])
        crng = _rng(seed, "choices", iid)
        others = [lab for lab in task.labels if lab != target]
        heard = [o for o in others if o == r["target"]]
        rest = [o for o in others if o != r["target"]]
        picks = heard + [rest[i] for i in crng.choice(len(rest), 3 - len(heard), replace=False)]
        choices = [target] + picks
        choices = [choices[i] for i in crng.permutation(4)]
        out.append((r, dict(id=iid, audio=f"audio/{task.name}/{iid}.wav", question=task.question, choices=choices,
                            target=target, task=task.name, split=r["split"], evidence=r["evidence"],
                            meta=dict(r["meta"], inferred_from=r["id"]))))
    return out


def _link_or_copy(src: Path, dst: Path) -> None:
    """The same clip under another item's path: a hard link (no disk), a copy across file systems."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


# ------------------------------------------------------------------ candidate specs
def _speech_utterances(task: Task, label: str) -> list[tuple[str, str]]:
    """(phrase id, TTS text) for one label."""
    if task.name == "spoken_number":
        return [("0", label)]
    if task.name == "spoken_word":
        return [("0", NATO_TEXT.get(label, label))]
    if task.name == "spoken_letter":
        return [("0", LETTER_SOUNDS[label])]
    if task.name == "command":
        return [(str(i), t) for i, t in enumerate(COMMANDS[label])]
    raise ValueError(task.name)


def _asterisk_file(task: Task, label: str) -> Optional[str]:
    if task.name == "spoken_number":
        return NUMBER_FILES[label]
    if task.name == "spoken_word":
        return f"phonetic/{label[0]}_p.wav"  # every NATO word starts with its letter
    if task.name == "spoken_letter":
        return f"letters/{label.lower()}.wav"
    return None  # no Asterisk recording for commands


def _speech_specs(task: Task, voices: list[Voice], pool: str) -> list[Spec]:
    out = []
    for label in task.labels:
        for pid, text in _speech_utterances(task, label):
            for v in voices:
                if v.engine == "asterisk":
                    f = _asterisk_file(task, label)
                    if f is None or pid != "0":
                        continue
                    text_v = f
                else:
                    text_v = text
                for rate, pitch, timbre in v.variants():
                    espeak = {"pitch": pitch, "timbre": timbre} if v.engine == "espeak" else {}
                    out.append(Spec(task, label, pool, group=f"{task.name}|{label}|{pid}|{v.name}", voice=v,
                                    text=text_v, rate=rate, pitch=pitch, timbre=timbre,
                                    meta={"voice": v.name, "gender": _gender(v, timbre), "source": v.engine,
                                          "licence": v.licence, "text": text if v.engine != "asterisk" else
                                          label, "rate": rate, **espeak}))
    return out


def _gender(v: Voice, timbre: str) -> str:
    """espeak-ng's m*/f* variants set the gender; other voices have one."""
    return {"m": "male", "f": "female"}.get(timbre[:1], v.gender) if v.engine == "espeak" else v.gender


def _music_spec(task: Task, pool: str, k: int, seed: int, soundfonts: tuple) -> Spec:
    """One music clip: the notes (seeded by task, pool and index), then how it is performed and
    recorded (seeded apart, so the same notes can be rendered with another soundfont)."""
    rng = _rng(seed, "music", task.name, pool, k)
    vel = lambda: int(rng.integers(70, 118))  # noqa: E731
    notes: list[NoteSpec] = []
    if task.name == "instrument":
        label = task.labels[int(rng.integers(len(task.labels)))]
        prog, lo, hi = INSTRUMENTS[label]
        t = 0.0
        if pool == "seen":  # a short single-line motif
            for _ in range(int(rng.integers(1, 4))):
                d = float(rng.uniform(0.4, 0.7))
                notes.append(NoteSpec(prog, int(rng.integers(lo, hi + 1)), t, t + d, vel()))
                t += d + 0.05
        else:  # held out: chords, never heard in training
            root = int(rng.integers(lo, max(lo + 1, hi - 7)))
            for iv in (0, 4, 7)[: int(rng.integers(2, 4))]:
                notes.append(NoteSpec(prog, root + iv, 0.0, float(rng.uniform(0.8, 1.5)), vel()))
        meta = {"instrument": label, "program": prog}
    else:
        names = PITCHED_SEEN if pool == "seen" else PITCHED_HELDOUT
        inst = names[int(rng.integers(len(names)))]
        prog, lo, hi = INSTRUMENTS[inst]
        if task.name == "melody_contour":
            label = CONTOURS[int(rng.integers(4))]
            steps = [int(rng.integers(2, 8)), int(rng.integers(2, 8))]
            sign = {"rising": (1, 1), "falling": (-1, -1), "rising then falling": (1, -1),
                    "falling then rising": (-1, 1)}[label]
            span_lo = lo + (steps[0] if sign[0] < 0 else 0) + (steps[1] if sign[1] < 0 else 0)
            span_hi = hi - (steps[0] if sign[0] > 0 else 0) - (steps[1] if sign[1] > 0 else 0)
            p = int(rng.integers(min(span_lo, span_hi), max(span_lo, span_hi) + 1))
            pitches = [p, p + sign[0] * steps[0], p + sign[0] * steps[0] + sign[1] * steps[1]]
            d = float(rng.uniform(0.4, 0.55))
            for i, q in enumerate(pitches):
                notes.append(NoteSpec(prog, q, i * (d + 0.05), i * (d + 0.05) + d, vel()))
        else:  # note_count
            c = int(rng.integers(1, 5))
            label = COUNTS[c - 1]
            d, gap = float(rng.uniform(0.2, 0.3)), float(rng.uniform(0.12, 0.18))
            for i in range(c):
                q = int(rng.integers(lo, hi + 1))
                notes.append(NoteSpec(prog, q, i * (d + gap), i * (d + gap) + d, vel()))
        meta = {"instrument": inst, "program": prog}
    voice_name = f"gm_{meta['instrument']}"
    crng = _rng(seed, "music_condition", task.name, pool, k)
    notes, performance = _perform(notes, crng, legato_ok=task.name != "note_count")
    soundfont = soundfonts[int(crng.integers(len(soundfonts)))]
    mastering = A.draw_mastering(crng)
    return Spec(task, label, pool, group=f"{task.name}|{pool}|{k}", notes=notes, soundfont=soundfont,
                mastering=mastering,
                meta={"voice": voice_name, "source": "fluidsynth", "licence": S.MIDI_LICENCE, **meta,
                      "soundfont": soundfont, **performance, "mastering": mastering})


# How a clip is performed: tempo (a factor on every duration), articulation (share of each note's
# slot that sounds) and dynamics (a level per clip, a spread per note).
TEMPO_RANGE = (0.8, 1.25)
ARTICULATIONS = {"legato": 1.0, "normal": 0.8, "staccato": 0.45}
DYNAMICS_RANGE = (55, 110)  # MIDI velocity of the clip's level
VELOCITY_SPREAD = 12
MAX_MUSIC_SPAN_S = 1.8  # every note ends inside the 2 s window


def _perform(notes: list, rng: np.random.Generator, legato_ok: bool = True) -> tuple[list, dict]:
    """Apply a seeded tempo, articulation and dynamics to score-time notes; returns the performed
    notes and what was drawn (for the item's meta). Chords (equal onsets) stay chords."""
    tempo = float(rng.uniform(*TEMPO_RANGE))
    names = [a for a in ARTICULATIONS if legato_ok or a != "legato"]
    articulation = names[int(rng.integers(len(names)))]
    level = int(rng.integers(*DYNAMICS_RANGE))
    span = max((n.end for n in notes), default=0.0) / tempo
    scale = min(1.0, MAX_MUSIC_SPAN_S / span) / tempo if span > 0 else 1.0 / tempo
    onsets = sorted({n.start for n in notes})
    out = []
    for n in notes:
        later = [t for t in onsets if t > n.start]
        slot = (later[0] - n.start) if later else (n.end - n.start)  # time until the next onset
        sounding = min(n.end - n.start, slot) * (ARTICULATIONS[articulation] if later else 1.0)
        vel = int(np.clip(level + rng.integers(-VELOCITY_SPREAD, VELOCITY_SPREAD + 1), 20, 127))
        out.append(NoteSpec(n.program, n.pitch, n.start * scale, (n.start + max(0.08, sounding)) * scale, vel))
    return out, {"tempo": round(tempo, 2), "articulation": articulation, "dynamics": level}


def _draw_room(rng: np.random.Generator, rooms: list) -> Optional[A.Room]:
    """A room for ``acoustics.ROOM_SHARE`` of the clips (from the pool's rooms), else None (dry)."""
    if not rooms or rng.random() >= A.ROOM_SHARE:
        return None
    return rooms[int(rng.integers(len(rooms)))]


def _room_meta(room: Optional[A.Room]) -> dict:
    return room.describe() if room is not None else {"room": "dry"}


def draw_choices(task: Task, target: str, rng: np.random.Generator) -> list[str]:
    """The target and 3 distractors from the same task's labels, in a seeded order."""
    others = [lab for lab in task.labels if lab != target]
    choices = [target] + [others[i] for i in rng.choice(len(others), 3, replace=False)]
    return [choices[i] for i in rng.permutation(4)]


def _allocate(specs: list[Spec], quotas: dict[str, int], rng: np.random.Generator,
              margin: float = 1.25) -> dict[str, list[Spec]]:
    """Shuffle whole groups, then hand groups to splits (small splits first) until each has its quota
    plus a margin for clips dropped later. A group never spans two splits."""
    groups: dict[str, list[Spec]] = defaultdict(list)
    for s in specs:
        groups[s.group].append(s)
    keys = sorted(groups)
    order = rng.permutation(len(keys))
    total_need = sum(int(math.ceil(q * margin)) + 2 for q in quotas.values())
    # As few speed/pitch variants per group as the supply allows: more distinct (label, voice) pairs.
    cap = max(1, int(math.ceil(total_need / max(1, len(keys)))))
    out: dict[str, list[Spec]] = {}
    pos = 0
    for split in sorted(quotas, key=lambda s: (quotas[s], s)):
        need = int(math.ceil(quotas[split] * margin)) + 2
        chosen: list[Spec] = []
        while len(chosen) < need and pos < len(order):
            members = groups[keys[order[pos]]]
            pos += 1
            chosen.extend(members[i] for i in rng.permutation(len(members))[:cap])
        out[split] = [chosen[i] for i in rng.permutation(len(chosen))]
    return out


# ------------------------------------------------------------------ the builder
def build_benchmark(out_dir: Path, seed: int = 0, size: str = "default", workers: int = NUM_WORKERS) -> dict:
    """Build the benchmark into ``out_dir``; returns the datasheet dict. See the module docstring."""
    if size not in SIZES:
        raise BenchmarkError(f"--size {size!r} is not one of {sorted(SIZES)}")
    t0 = time.time()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("audio", "noise"):  # never mix clips of two builds; the cache stays
        if (out_dir / stale).exists():
            shutil.rmtree(out_dir / stale)
    cache = S.Cache(out_dir / ".cache" / "tts")
    avail = S.probe()
    for line in avail.missing:
        _say(f"missing source: {line}")

    def usable(v: Voice) -> bool:
        if v.engine == "flite":
            return avail.flite and (not avail.flite_voices or v.model in avail.flite_voices)
        if v.engine == "espeak":
            return avail.espeak
        if v.engine == "festival":
            return avail.festival and v.model in avail.festival_voices
        return avail.asterisk

    seen = [v for v in SEEN_VOICES if usable(v)]
    heldout = [v for v in HELDOUT_VOICES if usable(v)]
    babble_voices = [v for v in BABBLE_VOICES if usable(v)]
    skipped_voices = [v.name for v in SEEN_VOICES + HELDOUT_VOICES if not usable(v)]
    if skipped_voices:
        _say(f"skipped {len(skipped_voices)} voice(s) whose engine or voice package is missing: "
             + ", ".join(skipped_voices))
    fonts = {"seen": tuple(f for f in TRAIN_SOUNDFONTS if f in avail.soundfonts),
             "heldout": tuple(f for f in (HELDOUT_SOUNDFONT,) if f in avail.soundfonts)}
    music_ok = avail.fluidsynth and bool(fonts["seen"])
    tasks = [t for t in TASKS if (t.kind == "speech" and len(seen) >= 2 and heldout) or
             (t.kind == "music" and music_ok)]
    built = {t.name for t in tasks}
    tasks = [t for t in tasks if t.name not in INFERRED or INFERRED[t.name][0] in built]
    if len(tasks) < 3:
        raise BenchmarkError("too few sources for a benchmark (need flite or espeak-ng voices, or fluidsynth with "
                             "a soundfont): " + "; ".join(avail.missing) + ". Run scripts/setup.sh as root "
                             "or install: sudo apt-get install flite espeak-ng fluidsynth timgm6mb-soundfont "
                             "asterisk-core-sounds-en-wav asterisk-moh-opsound-wav")
    quotas = SIZES[size]
    if music_ok and not fonts["heldout"]:
        skipped = quotas["test_heldout"] * sum(t.kind == "music" for t in tasks)
        _say(f"warning: the held-out soundfont {HELDOUT_SOUNDFONT} is missing (install it: sudo apt-get install "
             f"{S.SOUNDFONT_BY_NAME[HELDOUT_SOUNDFONT].package}): {skipped} test_heldout music items skipped")
    rooms = {pool: A.make_rooms(_rng(seed, "rooms", pool), pool) for pool in A.ROOMS_PER_POOL}
    _say(f"size={size} seed={seed}: {len(tasks)} tasks, {len(seen)} training voices, {len(heldout)} held-out "
         f"voices, soundfonts {', '.join(fonts['seen']) or 'none'} (held out: {', '.join(fonts['heldout']) or 'none'})"
         f" -> {out_dir}")

    # 1. candidate clips per task and split
    planned: dict[str, dict[str, list[Spec]]] = {}
    for task in (t for t in tasks if t.name not in INFERRED):  # inferred tasks reuse their source's clips
        rng = _rng(seed, "allocate", task.name)
        if task.kind == "speech":
            alloc = _allocate(_speech_specs(task, seen, "seen"),
                              {k: v for k, v in quotas.items() if k != "test_heldout"}, rng)
            alloc.update(_allocate(_speech_specs(task, heldout, "heldout"),
                                   {"test_heldout": quotas["test_heldout"]}, rng))
        else:
            alloc = {}
            k = 0
            for split in ("test", "val", "train", "test_heldout"):
                pool = "heldout" if split == "test_heldout" else "seen"
                n = int(math.ceil(quotas[split] * 1.1)) + 1
                if fonts[pool]:
                    alloc[split] = [_music_spec(task, pool, k + i, seed, fonts[pool]) for i in range(n)]
                k += n
        planned[task.name] = alloc
    for alloc in planned.values():  # a room for a share of the clips: the pool's own rooms
        for lst in alloc.values():
            for s in lst:
                s.room = _draw_room(_rng(seed, "room", s.group, s.rate, s.pitch, s.timbre, s.text), rooms[s.pool])

    # 2. synthesize speech (threads: the work happens in flite/espeak subprocesses)
    speech = [s for a in planned.values() for lst in a.values() for s in lst if s.voice is not None]
    uniq = sorted({(s.voice.name, s.text, s.rate, s.pitch, s.timbre) for s in speech})
    _say(f"stage 1/4: {len(uniq)} speech utterances ({workers} workers; cache {cache.root})")
    vmap = {v.name: v for v in SEEN_VOICES + HELDOUT_VOICES}
    results: dict[tuple, Optional[np.ndarray]] = {}
    if uniq:
        with ThreadPoolExecutor(max_workers=workers) as ex:
            # festival loads a voice per process (~1 s): one process speaks a voice's whole batch first
            batches = defaultdict(list)
            for u in uniq:
                if vmap[u[0]].engine == "festival":
                    batches[u[0]].append((u[1], u[2]))
            if batches:
                _say(f"festival: {sum(map(len, batches.values()))} utterances, one process per voice "
                     f"({', '.join(sorted(batches))})")
            list(ex.map(lambda kv: S.festival_batch(vmap[kv[0]], kv[1], cache), sorted(batches.items())))
            futs = ex.map(lambda u: S.synthesize(vmap[u[0]], u[1], u[2], u[3], cache, timbre=u[4]), uniq)
            for u, wav in zip(uniq, _progress(futs, len(uniq), "speech clips")):
                results[u] = wav
    for s in speech:
        s.wav = results.get((s.voice.name, s.text, s.rate, s.pitch, s.timbre))

    # 3. render music: per soundfont, one fluidsynth call per chunk of clips
    music = [s for a in planned.values() for lst in a.values() for s in lst if s.voice is None]
    if music:
        chunks = [(sf, c[i:i + RENDER_CHUNK]) for sf in sorted({s.soundfont for s in music})
                  for c in [[s for s in music if s.soundfont == sf]] for i in range(0, len(c), RENDER_CHUNK)]
        _say(f"stage 2/4: {len(music)} music clips (fluidsynth, {len(chunks)} calls, soundfonts "
             f"{', '.join(sorted({s.soundfont for s in music}))})")
        with ThreadPoolExecutor(max_workers=workers) as ex:
            futs = ex.map(lambda c: S.render_clips([s.notes for s in c[1]], S.soundfont_path(c[0])), chunks)
            for (_, c), wavs in zip(chunks, _progress(futs, len(chunks), "music chunks")):
                for s, w in zip(c, wavs):
                    s.wav = w

    # 4. post-process, fill quotas, write clips and manifests
    _say("stage 3/4: trimming, fitting to the window, writing clips and manifests")
    items_by_split: dict[str, list] = {sp: [] for sp in SPLITS}
    dropped: Counter = Counter()
    for task in (t for t in tasks if t.name not in INFERRED):
        for split in SPLITS:
            taken = 0
            for s in planned[task.name].get(split, []):
                if taken >= quotas[split]:
                    break
                wav, why = postprocess(s.condition(s.wav), _rng(seed, "gain", s.group, s.rate, s.pitch, s.text))
                if wav is None:
                    dropped[f"{task.name}:{why}"] += 1
                    continue
                iid = f"{task.name}-{split}-{taken:04d}"
                rel = f"audio/{task.name}/{iid}.wav"
                write_audio(out_dir / rel, wav)
                choices = draw_choices(task, s.label, _rng(seed, "choices", iid))
                meta = dict(s.meta, **_room_meta(s.room), duration_s=round(wav.size / SAMPLE_RATE, 3), group=s.group)
                items_by_split[split].append(dict(id=iid, audio=rel, question=task.question, choices=choices,
                                                  target=s.label, task=task.name, split=split, meta=meta,
                                                  evidence=clip_evidence(s)))
                taken += 1
            if taken < quotas[split]:
                _say(f"warning: {task.name}/{split}: {taken} of {quotas[split]} items (sources ran short)")
    for task in (t for t in tasks if t.name in INFERRED):
        for split in SPLITS:
            for src, row in inferred_items(items_by_split[split], task, seed):
                _link_or_copy(out_dir / src["audio"], out_dir / row["audio"])
                items_by_split[split].append(row)
    if dropped:
        _say("dropped clips: " + ", ".join(f"{k} x{v}" for k, v in sorted(dropped.items())))
    for split in SPLITS:
        _write_manifest(out_dir / f"{split}.jsonl", items_by_split[split])

    # 5. noise bank
    _say("stage 4/4: noise bank (music-on-hold, MIDI pieces, babble)")
    noise = build_noise_bank(out_dir / "noise", seed, size, avail, babble_voices, cache, workers, fonts["seen"])

    # 6. datasheet
    sheet = _datasheet(out_dir, seed, size, tasks, items_by_split, seen, heldout, babble_voices, noise, avail,
                       dropped, fonts, rooms)
    (out_dir / "datasheet.json").write_text(json.dumps(sheet, indent=2, ensure_ascii=False) + "\n")
    (out_dir / "datasheet.md").write_text(_datasheet_md(sheet))
    n = {k: len(v) for k, v in items_by_split.items()}
    _say(f"done in {time.time() - t0:.1f} s: " + ", ".join(f"{k} {v}" for k, v in n.items())
         + f"; datasheet: {out_dir / 'datasheet.md'}")
    return sheet


def _write_manifest(path: Path, rows: list[dict]) -> None:
    try:
        from .manifest import Item, write_manifest
    except ImportError:  # pragma: no cover - manifest.py is part of the package
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        return
    write_manifest(path, [Item(**r) for r in rows])


# ------------------------------------------------------------------ noise bank
def build_noise_bank(noise_dir: Path, seed: int, size: str, avail: S.Availability, babble_voices: list[Voice],
                     cache: S.Cache, workers: int = NUM_WORKERS, soundfonts: tuple = ()) -> dict:
    """noise/music (music-on-hold, 30 s chunks), noise/midi (multi-instrument pieces rendered with the
    training ``soundfonts`` in turn), noise/babble (sums of 6 talkers of voices never used for items).
    Returns per-folder file lists."""
    small = size == "small"
    info: dict = {"music": [], "midi": [], "babble": []}
    # music-on-hold
    if avail.moh:
        tracks = sorted(S.ASTERISK_MOH_DIR.glob("*.wav"))
        for tr in _progress(tracks, len(tracks), "noise: music-on-hold"):
            wav = S._read_wav(tr)
            chunk = 30 * SAMPLE_RATE
            n = max(1, wav.size // chunk)
            for k in range(min(n, 1 if small else 8)):
                seg = wav[k * chunk:(k + 1) * chunk]
                name = f"music/{tr.stem}_{k:02d}.wav"
                write_audio(noise_dir / name, seg / max(1e-6, float(np.max(np.abs(seg)))) * 0.9)
                info["music"].append({"file": name, "seconds": round(seg.size / SAMPLE_RATE, 2),
                                      "source": f"asterisk-moh-opsound-wav:{tr.name}", "licence": S.MOH_LICENCE})
    # MIDI pieces
    if avail.fluidsynth and soundfonts:
        pieces = 2 if small else 6
        dur = 10.0 if small else 20.0
        for k in _progress(range(pieces), pieces, "noise: midi pieces"):
            pm = _midi_piece(_rng(seed, "midi_piece", k), dur)
            font = soundfonts[k % len(soundfonts)]
            wav = S.render_midi(pm, S.soundfont_path(font))
            wav = wav / max(1e-6, float(np.max(np.abs(wav)))) * 0.9
            name = f"midi/piece_{k:02d}.wav"
            write_audio(noise_dir / name, wav)
            info["midi"].append({"file": name, "seconds": round(wav.size / SAMPLE_RATE, 2), "source": "fluidsynth",
                                 "soundfont": font, "licence": S.MIDI_LICENCE})
    # babble
    if babble_voices:
        sentences = S.asterisk_sentences(200) or [
            "Please hold while we connect your call.", "The number you have dialed is not in service.",
            "Thank you for calling, have a nice day.", "Your message has been saved.",
            "Press one for sales, press two for support.", "All circuits are busy now."]
        n_utt = 12 if small else 60
        rng = _rng(seed, "babble_utts")
        reqs = sorted({(babble_voices[i % len(babble_voices)].name, sentences[int(rng.integers(len(sentences)))])
                       for i in range(n_utt)})
        vmap = {v.name: v for v in babble_voices}
        with ThreadPoolExecutor(max_workers=workers) as ex:
            utts = list(_progress(ex.map(lambda r: S.synthesize(vmap[r[0]], r[1], 1.0, 50, cache,
                                                                 timbre=vmap[r[0]].timbres[0]), reqs),
                                  len(reqs), "noise: babble utterances"))
        utts = [u for u in utts if u is not None and u.size > 0]
        files, dur, talkers = (2, 8.0, 5) if small else (8, 15.0, 6)
        for k in range(files):
            r = _rng(seed, "babble", k)
            n = int(dur * SAMPLE_RATE)
            mix = np.zeros(n, dtype=np.float64)
            for _ in range(talkers):
                stream, pos = np.zeros(n), int(r.integers(0, SAMPLE_RATE))
                while pos < n and utts:
                    u = utts[int(r.integers(len(utts)))]
                    u = u / max(1e-6, float(np.sqrt(np.mean(u.astype(np.float64) ** 2))))
                    m = min(u.size, n - pos)
                    stream[pos:pos + m] += u[:m]
                    pos += m + int(r.integers(SAMPLE_RATE // 10, SAMPLE_RATE // 2))
                mix += stream * float(r.uniform(0.6, 1.0))
            mix = (mix / max(1e-6, float(np.max(np.abs(mix)))) * 0.9).astype(np.float32)
            name = f"babble/babble_{k:02d}.wav"
            write_audio(noise_dir / name, mix)
            info["babble"].append({"file": name, "seconds": round(n / SAMPLE_RATE, 2), "talkers": talkers,
                                   "voices": [v.name for v in babble_voices], "source": "espeak-ng",
                                   "licence": S.ESPEAK_LICENCE + "; texts from asterisk-core-sounds-en "
                                                                 "transcripts (CC-BY-SA-3.0)"})
    return info


def _midi_piece(rng: np.random.Generator, dur: float):
    """A seeded multi-instrument piece: chords, bass line, melody and drums."""
    import pretty_midi
    pm = pretty_midi.PrettyMIDI(initial_tempo=float(rng.integers(80, 140)))
    beat = 60.0 / float(rng.integers(80, 140))
    key = int(rng.integers(55, 67))
    scale = [0, 2, 4, 5, 7, 9, 11, 12]
    progs = rng.choice([0, 4, 16, 24, 25, 48, 52, 61, 80, 89], 2, replace=False)
    chords = pretty_midi.Instrument(program=int(progs[0]))
    melody = pretty_midi.Instrument(program=int(progs[1]))
    bass = pretty_midi.Instrument(program=int(rng.choice([32, 33, 38])))
    drums = pretty_midi.Instrument(program=0, is_drum=True)
    t, bar = 0.0, 4 * beat
    while t < dur:
        root = key + int(rng.choice([0, 5, 7, 9]))
        for iv in (0, 4, 7):
            chords.notes.append(pretty_midi.Note(75, root + iv - 12, t, t + bar))
        bass.notes.append(pretty_midi.Note(90, root - 24, t, t + bar / 2))
        bass.notes.append(pretty_midi.Note(90, root - 24 + 7, t + bar / 2, t + bar))
        for b in range(8):
            s = t + b * beat / 2
            if rng.random() < 0.7:
                melody.notes.append(pretty_midi.Note(int(rng.integers(70, 110)), key + int(rng.choice(scale)),
                                                     s, s + beat / 2))
            drums.notes.append(pretty_midi.Note(80, 42, s, s + 0.1))
            if b % 4 == 0:
                drums.notes.append(pretty_midi.Note(100, 36, s, s + 0.1))
            if b % 4 == 2:
                drums.notes.append(pretty_midi.Note(95, 38, s, s + 0.1))
        t += bar
    pm.instruments.extend([chords, melody, bass, drums])
    return pm


# ------------------------------------------------------------------ datasheet
def _datasheet(out_dir, seed, size, tasks, items_by_split, seen, heldout, babble, noise, avail, dropped,
               fonts, rooms) -> dict:
    from ..config import NoiseConfig
    nc = NoiseConfig()
    counts: dict = {"split": {}, "task": {}, "source": {}, "voice": {}, "soundfont": {}, "room": {}}
    for split, rows in items_by_split.items():
        counts["split"][split] = len(rows)
        counts["task"][split] = dict(sorted(Counter(r["task"] for r in rows).items()))
        counts["source"][split] = dict(sorted(Counter(r["meta"]["source"] for r in rows).items()))
        counts["voice"][split] = dict(sorted(Counter(r["meta"]["voice"] for r in rows).items()))
        counts["soundfont"][split] = dict(sorted(Counter(r["meta"]["soundfont"] for r in rows
                                                         if "soundfont" in r["meta"]).items()))
        # rooms counted by pool (dry / training rooms / held-out rooms); each room's own count is in "rooms"
        counts["room"][split] = dict(sorted(Counter(_room_kind(r["meta"]["room"]) for r in rows).items()))
    durs = [r["meta"]["duration_s"] for rows in items_by_split.values() for r in rows]

    def vinfo(v: Voice, role: str) -> dict:
        return {"name": v.name, "engine": v.engine, "model": v.model or "human recording", "gender": v.gender,
                "rates": list(v.rates), **({"pitches": list(v.pitches), "timbres": list(v.timbres)}
                                           if v.engine == "espeak" else {}),
                "role": role, "package": v.package, "licence": v.licence}

    room_use = Counter(r["meta"]["room"] for rows in items_by_split.values() for r in rows)

    return {
        "name": "EchoDistill offline spoken-QA benchmark",
        "seed": seed,
        "size": size,
        "rebuild_command": f"echodistill data build --out {out_dir} --seed {seed} --size {size}",
        "clip_format": f"16 kHz mono 16-bit WAV, at most {MAX_CLIP_S} s (silence trimmed, sped up <= "
                       f"{MAX_SPEEDUP}x when longer, else dropped), peak level seeded in [0.35, 0.9]",
        "choices": "4 per item: the target plus 3 distractors drawn from the same task's labels; stored in a "
                   "seeded random order",
        "splits": "by group (task, label, phrase, voice for speech; one rendered clip for music): no clip and no "
                  "speed/pitch/timbre variant of the same voice saying the same words is in two splits. "
                  "test_heldout uses only held-out voices (speech), held-out instruments / chords and the held-out "
                  "soundfont (music), and held-out rooms: for generalisation only, never for training or tuning.",
        "tasks": [{"name": t.name, "kind": t.kind, "question": t.question, "labels": list(t.labels),
                   **({"inferred_from": INFERRED[t.name][0]} if t.name in INFERRED else {})} for t in tasks],
        "evidence": "every item's `evidence` field says what its clip contains, in words: speech, the phrase "
                    "spoken (\"x ray\", \"double you\", \"turn on the lights\"); music, the generator's "
                    "description: instrument, number of notes, and the melody's direction for melody_contour "
                    "(\"violin, three notes, falling then rising\"; held-out chords \"harp, a chord of three "
                    "notes\"). The reasoning format (data.response_format=reasoning) states it before the "
                    "answer; the evidence metrics score a model's stated evidence against it. Inferred tasks "
                    "(word_initial, number_plus_one) reuse their source task's clips and evidence with another "
                    "question, so the answer differs from what is heard.",
        "counts": counts,
        "duration_s": {"min": min(durs, default=0), "mean": round(float(np.mean(durs)), 3) if durs else 0,
                       "max": max(durs, default=0)},
        "dropped_clips": dict(sorted(dropped.items())),
        "voices": [vinfo(v, "train/val/test") for v in seen] + [vinfo(v, "test_heldout only") for v in heldout]
                  + [vinfo(v, "babble noise only") for v in babble],
        "music": {"instruments": {k: v[0] for k, v in INSTRUMENTS.items()},
                  "contour_count_instruments_seen": PITCHED_SEEN,
                  "contour_count_instruments_heldout": PITCHED_HELDOUT,
                  "heldout_instrument_items": "chords (2-3 simultaneous notes); training has single-line motifs",
                  "soundfonts": [{"name": f.name, "file": str(f.path), "package": f.package, "family": f.family,
                                  "licence": f.licence,
                                  "role": ("test_heldout only" if f.name in fonts["heldout"] else
                                           "train/val/test" if f.name in fonts["seen"] else
                                           "missing on this machine" if f.name not in avail.soundfonts else
                                           "unused (shares samples with the held-out soundfont)")}
                                 for f in S.SOUNDFONTS],
                  "performance": {"tempo": list(TEMPO_RANGE), "articulations": dict(ARTICULATIONS),
                                  "dynamics_velocity": list(DYNAMICS_RANGE), "velocity_spread": VELOCITY_SPREAD},
                  "mastering": {k: list(v) for k, v in A.MASTERING_RANGES.items()}},
        "rooms": {"share": A.ROOM_SHARE, "ranges": A.ROOM_RANGES, "tail_s": A.REVERB_TAIL_S,
                  "simulator": "pyroomacoustics ShoeBox (image source method), seeded",
                  "list": [dict(r.describe(), pool=r.pool, items=room_use.get(r.name, 0))
                           for pool in rooms.values() for r in pool]},
        "noise": {"folder": "noise/", "files": {k: len(v) for k, v in noise.items()},
                  "seconds": {k: round(sum(f["seconds"] for f in v), 1) for k, v in noise.items()},
                  "bank": noise,
                  "types_train": list(nc.train_types), "types_heldout": list(nc.heldout_types),
                  "generated_on_the_fly": ["white", "pink", "brown", "hum"]},
        "licences": {
            "asterisk-core-sounds-en-wav": S.ASTERISK_LICENCE,
            "asterisk-moh-opsound-wav": S.MOH_LICENCE,
            "flite": S.FLITE_LICENCE,
            "espeak-ng": S.ESPEAK_LICENCE,
            "fluidsynth + soundfonts": S.MIDI_LICENCE,
            "festival": S.FESTIVAL_LICENCE,
            "this build": "clips derived from Asterisk recordings and music-on-hold are CC-BY-SA-3.0 (share "
                          "alike, attribute Digium/Allison Smith and the opsound artists); do not commit them",
        },
        "missing_sources": list(avail.missing),
    }


def _room_kind(room: str) -> str:
    return "dry" if room == "dry" else room.rsplit("_room_", 1)[0] + " rooms"


def _table(rows: dict, cols: list[str]) -> str:
    keys = sorted({k for c in cols for k in rows.get(c, {})})
    lines = ["| | " + " | ".join(cols) + " | total |", "|---" * (len(cols) + 2) + "|"]
    for k in keys:
        vals = [rows.get(c, {}).get(k, 0) for c in cols]
        lines.append(f"| {k} | " + " | ".join(map(str, vals)) + f" | {sum(vals)} |")
    tot = [sum(rows.get(c, {}).values()) for c in cols]
    lines.append("| **total** | " + " | ".join(map(str, tot)) + f" | {sum(tot)} |")
    return "\n".join(lines)


def _datasheet_md(d: dict) -> str:
    cols = list(SPLITS)
    c = d["counts"]
    out = [f"# {d['name']}", "",
           f"Rebuild: `{d['rebuild_command']}` (seed {d['seed']}, size {d['size']}; same seed -> identical files).",
           "", f"Clips: {d['clip_format']}. Durations: min {d['duration_s']['min']} s, mean "
           f"{d['duration_s']['mean']} s, max {d['duration_s']['max']} s.", "",
           f"Choices: {d['choices']}.", "", f"Splits: {d['splits']}", "",
           "## Tasks", "", "| task | kind | question | labels |", "|---|---|---|---|"]
    for t in d["tasks"]:
        src = f" (inferred from {t['inferred_from']}'s clips)" if t.get("inferred_from") else ""
        out.append(f"| {t['name']} | {t['kind']}{src} | {t['question']} | {len(t['labels'])}: "
                   f"{', '.join(t['labels'][:6])}{', ...' if len(t['labels']) > 6 else ''} |")
    if d.get("evidence"):
        out += ["", f"Evidence: {d['evidence']}"]
    out += ["", "## Items per task and split", "", _table(c["task"], cols),
            "", "## Items per source and split", "", _table(c["source"], cols),
            "", "## Items per voice and split", "", _table(c["voice"], cols),
            "", "## Items per soundfont and split (music)", "", _table(c["soundfont"], cols),
            "", "## Items per room and split (dry, training rooms, held-out rooms)", "", _table(c["room"], cols),
            "", "## Voices", "", "| voice | engine | model | gender | role | package |", "|---|---|---|---|---|---|"]
    for v in d["voices"]:
        out.append(f"| {v['name']} | {v['engine']} | {v['model']} | {v['gender']} | {v['role']} | {v['package']} |")
    m = d["music"]
    out += ["", f"Music: instruments (GM programs) {m['instruments']}; contour/count instruments in training "
            f"{m['contour_count_instruments_seen']}, held out {m['contour_count_instruments_heldout']}; "
            f"held-out instrument items: {m['heldout_instrument_items']}.", "",
            "## Soundfonts", "", "| soundfont | family | role | package | licence |", "|---|---|---|---|---|"]
    out += [f"| {f['name']} | {f['family']} | {f['role']} | {f['package']} | {f['licence']} |" for f in m["soundfonts"]]
    p = m["performance"]
    out += ["", f"Each music clip: one soundfont drawn from the training ones; tempo x{p['tempo'][0]}-{p['tempo'][1]}, "
            f"articulation {', '.join(p['articulations'])}, clip level velocity {p['dynamics_velocity'][0]}-"
            f"{p['dynamics_velocity'][1]} (+-{p['velocity_spread']} per note), pitch anywhere in the instrument's "
            f"range; mild mastering (pedalboard: low/high shelf, compressor) {m['mastering']}.", "",
            "## Rooms", "", f"{d['rooms']['share']:.0%} of the clips of every split are heard in a room "
            f"({d['rooms']['simulator']}); training rooms serve train/val/test, held-out rooms only test_heldout. "
            f"Ranges: {d['rooms']['ranges']}.", "", "| room | pool | RT60 s | distance m | items |", "|---|---|---|---|---|"]
    out += [f"| {r['room']} | {r['pool']} | {r['rt60_s']} | {r['distance_m']} | {r['items']} |" for r in d["rooms"]["list"]]
    out += ["", "## Noise", ""]
    n = d["noise"]
    for k in ("babble", "music", "midi"):
        out.append(f"* `noise/{k}/`: {n['files'][k]} files, {n['seconds'][k]} s")
    out += [f"* generated on the fly by the noise bank: {', '.join(n['generated_on_the_fly'])}",
            f"* noise types used in training: {', '.join(n['types_train'])}; held out for evaluation: "
            f"{', '.join(n['types_heldout'])}", "", "## Licences", ""]
    out += [f"* {k}: {v}" for k, v in d["licences"].items()]
    if d["dropped_clips"]:
        out += ["", "## Dropped clips", ""] + [f"* {k}: {v}" for k, v in d["dropped_clips"].items()]
    if d["missing_sources"]:
        out += ["", "## Missing sources", ""] + [f"* {x}" for x in d["missing_sources"]]
    return "\n".join(out) + "\n"


__all__ = ["build_benchmark", "build_noise_bank", "TASKS", "SIZES", "BenchmarkError", "postprocess"]
