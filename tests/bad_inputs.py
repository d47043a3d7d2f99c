"""Builds, in a temporary folder, a manifest that holds every problem ``data check`` knows, and a clean one.

``make_bad_corpus(dir)`` returns the manifest path and ``expected``: kind -> list of (line, item id or
None) where that kind must be reported. The stereo 48 kHz clip must pass unreported.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 16_000
MAX_DURATION_S = 2.0  # the check runs with this limit, so the 3 s clip is too_long


def tone(seconds: float = 0.5, freq: float = 440.0, sr: int = SR, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    x = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.stack([x, 0.5 * x], axis=1) if channels == 2 else x


def make_clips(d: Path) -> dict[str, Path]:
    """Good and bad audio files; names say what they are."""
    a = d / "audio"
    a.mkdir(parents=True, exist_ok=True)
    c = {}
    c["good"] = a / "good.wav"
    sf.write(c["good"], tone(0.5, 440), SR, subtype="PCM_16")
    c["good2"] = a / "good2.wav"
    sf.write(c["good2"], tone(0.5, 660), SR, subtype="PCM_16")
    c["noisy_good2"] = a / "noisy_good2.wav"
    sf.write(c["noisy_good2"], tone(0.5, 660) + 0.05 * np.random.default_rng(0).standard_normal(8000).astype(np.float32),
             SR, subtype="FLOAT")
    c["copy_of_good2"] = a / "copy_of_good2.flac"  # same samples, other name and codec: caught by content hash
    sf.write(c["copy_of_good2"], tone(0.5, 660), SR, subtype="PCM_16")
    c["stereo48k"] = a / "stereo48k.wav"
    sf.write(c["stereo48k"], tone(0.5, 330, sr=48_000, channels=2), 48_000, subtype="PCM_16")
    c["corrupt"] = a / "corrupt.wav"
    c["corrupt"].write_bytes(b"RIFF\x00\x00\x00\x00WAVEthis is not audio at all" * 3)
    c["empty"] = a / "empty.wav"
    sf.write(c["empty"], np.zeros(0, dtype=np.float32), SR, subtype="PCM_16")
    c["nan"] = a / "nan.wav"
    x = tone(0.5)
    x[100:200] = np.nan
    sf.write(c["nan"], x, SR, subtype="FLOAT")
    c["silent"] = a / "silent.wav"
    sf.write(c["silent"], np.zeros(SR // 2, dtype=np.float32), SR, subtype="PCM_16")
    c["long"] = a / "long.wav"
    sf.write(c["long"], tone(3.0), SR, subtype="PCM_16")
    c["short_noisy"] = a / "short_noisy.wav"  # 0.3 s: does not match the 0.5 s clean clip
    sf.write(c["short_noisy"], tone(0.3), SR, subtype="PCM_16")
    return c


def item(i: str, audio, question: str = None, choices=None, target=None, split: str = "train", **kw) -> dict:
    choices = choices if choices is not None else ["alpha", "beta", "gamma", "delta"]
    d = {"id": i, "audio": str(audio), "question": question or f"question {i}?", "choices": choices,
         "target": target if target is not None else choices[0], "task": "t", "split": split}
    d.update(kw)
    return d


def make_bad_corpus(d: Path) -> tuple[Path, dict[str, list[tuple[int, str | None]]]]:
    d = Path(d)
    c = make_clips(d)
    lines: list[bytes] = []
    expected: dict[str, list] = {}

    def add(row, kind=None, item_id=None):
        lines.append(row if isinstance(row, bytes) else json.dumps(row).encode("utf-8"))
        if kind:
            expected.setdefault(kind, []).append((len(lines), item_id))

    # 20 fine items with the target stored first -> position_bias (the release's habit).
    # Relative path on purpose: it resolves against the manifest's folder.
    for k in range(20):
        add(item(f"ok{k}", "audio/good.wav", question=f"fine question {k}?"))
    add(item("stereo", c["stereo48k"], question="stereo clip?"))  # must NOT be reported
    add(item("miss", d / "audio" / "nope.wav"), "missing_audio", "miss")
    add(item("corrupt", c["corrupt"]), "unreadable_audio", "corrupt")
    add(item("empty", c["empty"]), "empty_audio", "empty")
    add(item("nan", c["nan"]), "nonfinite_audio", "nan")
    add(item("silent", c["silent"]), "silent_audio", "silent")
    add(item("long", c["long"]), "too_long", "long")
    add(item("badtarget", c["good"], target="epsilon"), "target_not_in_choices", "badtarget")
    add(item("ok3", c["good"], question="dup id?"), "duplicate_id", "ok3")
    add(item("one", c["good"], choices=["only"], target="only"), "too_few_choices", "one")
    add(item("twice", c["good"], choices=["same", "Same", "other"], target="other"), "duplicate_choices", "twice")
    # Leakage: one question on good2 in train; the same file in val; a copy (other name/codec) in test.
    add(item("leak_a", c["good2"], question="What pitch?", split="train",
             noisy_audio=str(c["noisy_good2"]), noise_type="white", snr=5.0))
    add(item("leak_b", c["good2"], question="What pitch?", split="val"), "leakage", "leak_b")
    add(item("leak_c", c["copy_of_good2"], question="what  pitch?", split="test"), "leakage", "leak_c")
    add(b"{not json at all", "malformed_json", None)
    add({"id": "nofield", "audio": str(c["good"]), "question": "q?", "choices": ["a", "b"]}, "malformed_json", "nofield")
    add({"id": "wrongtype", "audio": str(c["good"]), "question": "q?", "choices": "a,b", "target": "a"},
        "malformed_json", "wrongtype")
    add(b'{"id": "latin1", "audio": "x.wav", "question": "caf\xe9?", "choices": ["a","b"], "target": "a"}',
        "non_utf8", None)
    add(item("noisymiss", c["good"], question="nm?", noisy_audio=str(d / "audio" / "gone.wav")),
        "missing_audio", "noisymiss")
    add(item("noisybad", c["good"], question="nb?", noisy_audio=str(c["corrupt"])), "unreadable_audio", "noisybad")
    add(item("noisylen", c["good"], question="nl?", noisy_audio=str(c["short_noisy"])),
        "noisy_length_mismatch", "noisylen")
    add(item("after", c["good"], question="still read after the bad lines?"))
    expected["position_bias"] = [(0, None)]
    m = d / "bad.jsonl"
    m.write_bytes(b"\n".join(lines) + b"\n")
    return m, expected


def make_clean_manifest(d: Path) -> Path:
    """A manifest that must pass: shuffled target positions, a stereo 48 kHz clip, a matching noisy clip."""
    d = Path(d)
    c = make_clips(d)
    rows = []
    for k in range(24):
        choices = ["alpha", "beta", "gamma", "delta"]
        rows.append(item(f"c{k}", c["good"], question=f"clean question {k}?", choices=choices,
                         target=choices[k % 4], split="train"))
    rows.append(item("s48", c["stereo48k"], question="stereo?", target="beta", split="val"))
    rows.append(item("nz", c["good2"], question="noisy ok?", target="gamma", split="val",
                     noisy_audio=str(c["noisy_good2"]), noise_type="white", snr=5))
    m = d / "clean.jsonl"
    m.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return m
