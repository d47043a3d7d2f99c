"""`data mix` end to end on a 3-item manifest: layout, lengths, exact SNR, reproducibility, resume."""

import json

import numpy as np
import pytest
import soundfile as sf

from echodistill.audio.io import SAMPLE_RATE, load_audio, write_audio
from echodistill.audio.noise import NoiseTypeError
from echodistill.cli import main
from echodistill.data.manifest import read_manifest
from echodistill.data.mix import mix_manifest, mixed_path

TYPES = ["white", "pink", "babble"]
SNRS = [-5.0, 0.0, 10.0]


@pytest.fixture
def bench(tmp_path):
    """manifest.jsonl with 3 items of different lengths (relative paths) and noise/babble next to it."""
    root = tmp_path / "bench"
    rows = []
    for i, seconds in enumerate((0.3, 1.0, 1.7)):
        t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
        write_audio(root / "audio" / f"q{i}.wav", 0.05 * np.sin(2 * np.pi * (200 + 100 * i) * t))
        rows.append({"id": f"set/q{i}" if i == 2 else f"q{i}", "audio": f"audio/q{i}.wav", "question": "which?",
                     "choices": ["a", "b"], "target": "a", "task": "t", "split": "test"})
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    t = np.arange(int(0.5 * SAMPLE_RATE)) / SAMPLE_RATE
    for k in range(3):
        write_audio(root / "noise" / "babble" / f"u{k}.wav", 0.1 * np.sin(2 * np.pi * (120 + 40 * k) * t))
    return root


def test_mix_layout_snr_and_reproducible(bench, tmp_path):
    out = mix_manifest(bench / "manifest.jsonl", tmp_path / "a", TYPES, SNRS, seed=7)
    items = read_manifest(out)
    assert len(items) == 3 * len(TYPES) * len(SNRS)
    assert (tmp_path / "a" / "pink" / "-5dB" / "q0.wav").is_file()
    assert (tmp_path / "a" / "babble" / "10dB").is_dir()
    assert {it.meta["clean_id"] for it in items} == {"q0", "q1", "set/q2"}
    assert items[0].id == "q0@white@-5dB"
    for it in items:
        clean, noisy = load_audio(it.audio), load_audio(it.noisy_audio)
        assert noisy.shape == clean.shape  # same length as the clean clip, always
        assert it.noisy_audio == str(mixed_path(tmp_path / "a", it.meta["clean_id"], it.noise_type, it.snr).resolve())
        # 16-bit PCM rounding limits precision; loud enough clips keep it well inside 0.1 dB
        snr = 10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean((noisy - clean.astype(np.float64)) ** 2))
        assert abs(snr - it.snr) < 0.1, (it.id, it.noise_type, it.snr, snr)
    assert {(it.noise_type, it.snr) for it in items} == {(t, s) for t in TYPES for s in SNRS}

    # Same seed in another folder: identical bytes; another seed: different noise.
    mix_manifest(bench / "manifest.jsonl", tmp_path / "b", TYPES, SNRS, seed=7)
    mix_manifest(bench / "manifest.jsonl", tmp_path / "c", TYPES, SNRS, seed=8)
    for it in items:
        rel = mixed_path(tmp_path / "a", it.meta["clean_id"], it.noise_type, it.snr).relative_to(tmp_path / "a")
        a, b, c = (sf.read(str(tmp_path / d / rel))[0] for d in "abc")
        assert np.array_equal(a, b) and not np.array_equal(a, c)

    # Per-item seeding: mixing a subset of conditions gives the same clips.
    mix_manifest(bench / "manifest.jsonl", tmp_path / "d", ["babble"], [0.0], seed=7)
    rel = mixed_path(tmp_path / "a", "q1", "babble", 0.0).relative_to(tmp_path / "a")
    assert np.array_equal(sf.read(str(tmp_path / "a" / rel))[0], sf.read(str(tmp_path / "d" / rel))[0])


def test_mix_resumes(bench, tmp_path, capsys):
    mix_manifest(bench / "manifest.jsonl", tmp_path / "m", ["white"], [0], seed=1)
    victim = mixed_path(tmp_path / "m", "q1", "white", 0)
    victim.unlink()
    mtime = mixed_path(tmp_path / "m", "q0", "white", 0).stat().st_mtime_ns
    mix_manifest(bench / "manifest.jsonl", tmp_path / "m", ["white"], [0], seed=1)
    assert "1 written, 2 already there" in capsys.readouterr().out
    assert victim.is_file() and mixed_path(tmp_path / "m", "q0", "white", 0).stat().st_mtime_ns == mtime


def test_mix_never_keeps_a_clip_made_from_other_inputs(bench, tmp_path, capsys):
    out = tmp_path / "m"
    mix_manifest(bench / "manifest.jsonl", out, ["white"], [0], seed=1)
    first = load_audio(mixed_path(out, "q0", "white", 0), require_signal=False)
    mix_manifest(bench / "manifest.jsonl", out, ["white"], [0], seed=2)  # another seed: every clip is redone
    assert "3 written, 0 already there" in capsys.readouterr().out
    assert not np.array_equal(first, load_audio(mixed_path(out, "q0", "white", 0), require_signal=False))
    t = np.arange(int(0.3 * SAMPLE_RATE)) / SAMPLE_RATE  # a replaced clean clip (same path): its clips are redone
    write_audio(bench / "audio" / "q0.wav", 0.05 * np.sin(2 * np.pi * 777 * t) + 0.01)
    mix_manifest(bench / "manifest.jsonl", out, ["white"], [0], seed=2)
    assert "1 written, 2 already there" in capsys.readouterr().out


def test_mix_unknown_type_fails_first(bench, tmp_path):
    with pytest.raises(NoiseTypeError, match="music.*available: white, pink, brown, hum, babble"):
        mix_manifest(bench / "manifest.jsonl", tmp_path / "x", ["white", "music"], [0], seed=0)
    assert not (tmp_path / "x").exists()


def test_cli_data_mix(bench, tmp_path):
    rc = main(["data", "mix", str(bench / "manifest.jsonl"), "--out", str(tmp_path / "cli"),
               "--noise-types", "hum", "brown", "--snr", "0", "20", "--seed", "3"])
    assert rc == 0
    assert len(read_manifest(tmp_path / "cli" / "noisy.jsonl")) == 3 * 2 * 2
    assert (tmp_path / "cli" / "hum" / "20dB" / "q0.wav").is_file()
