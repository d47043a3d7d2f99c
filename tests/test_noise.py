"""Noise bank and exact-SNR mixer: SNR accuracy for every source, seeding, lengths, clipping, spectra."""

import subprocess
import sys

import numpy as np
import pytest

from echodistill.audio.io import SAMPLE_RATE, AudioError, write_audio
from echodistill.audio.noise import (NoiseBank, NoiseDraw, NoiseError, NoiseTypeError, draw_noisy, mix_at_snr,
                                     seeded_rng)
from echodistill.errors import UserError

from train_helpers import tone as shared_tone

SNRS = [-10, -5, 0, 5, 10, 20, 30]
ALL_TYPES = ["white", "pink", "brown", "hum", "babble", "music", "midi", "file"]


def tone(seconds=1.0, f0=220.0, amp=0.3):
    """A harmonic tone [S] at 16 kHz (a stand-in for a clean clip): the shared maker, 4 partials, no noise."""
    return shared_tone(f0, seconds, SAMPLE_RATE, amp=amp, noise=0.0, harmonics=4)


def measured_snr(clean, noise, noisy):
    """Fit noisy = a*clean + b*noise by least squares; SNR of the two parts (valid after the guard too)."""
    (a, b), *_ = np.linalg.lstsq(np.stack([clean, noise], 1).astype(np.float64), noisy.astype(np.float64), rcond=None)
    return 10 * np.log10(np.mean((a * clean.astype(np.float64)) ** 2) / np.mean((b * noise.astype(np.float64)) ** 2))


@pytest.fixture(scope="module")
def noise_dir(tmp_path_factory):
    """Tiny fake bank: babble (speech-like AM tones), music (chords), midi (notes), one user file."""
    root = tmp_path_factory.mktemp("noise")
    rng = np.random.default_rng(0)
    t = np.arange(int(0.7 * SAMPLE_RATE)) / SAMPLE_RATE
    for i in range(4):  # utterances with pauses: exercises the silent-window retry
        utt = np.sin(2 * np.pi * (150 + 30 * i) * t) * (np.sin(2 * np.pi * 3 * t) > 0) * 0.2
        write_audio(root / "babble" / f"utt{i}.wav", utt + 0.002 * rng.standard_normal(t.size))
    write_audio(root / "music" / "track.wav", tone(2.5, 330.0, 0.2))
    write_audio(root / "midi" / "song.wav", tone(0.4, 440.0, 0.2))
    write_audio(root / "user" / "fan.wav", tone(0.3, 90.0, 0.1) + 0.01 * rng.standard_normal(int(0.3 * SAMPLE_RATE)))
    return root


@pytest.fixture(scope="module")
def bank(noise_dir):
    return NoiseBank(noise_dir, extra_paths=[noise_dir / "user"])


def test_types(bank, tmp_path):
    assert bank.types == ["white", "pink", "brown", "hum", "babble", "music", "midi", "file", "file:fan"]
    (tmp_path / "music").mkdir()  # an empty folder does not make a type available
    assert NoiseBank(tmp_path).types == ["white", "pink", "brown", "hum"]
    assert NoiseBank().types == ["white", "pink", "brown", "hum"]


@pytest.mark.parametrize("noise_type", ALL_TYPES)
def test_exact_snr_every_source(bank, noise_type):
    clean = tone(1.0, amp=0.01)  # quiet, so the clipping guard never acts and noisy - clean is the noise
    for snr in SNRS:
        noise = bank.sample(noise_type, clean.size, seeded_rng("t", noise_type, snr))
        assert noise.dtype == np.float32 and noise.shape == clean.shape
        noisy = mix_at_snr(clean, noise, snr)
        assert noisy.dtype == np.float32 and noisy.shape == clean.shape
        assert np.max(np.abs(noisy)) <= 0.99
        got = 10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean((noisy - clean.astype(np.float64)) ** 2))
        assert abs(got - snr) < 0.05, (noise_type, snr, got)


def test_clipping_guard_keeps_snr_and_peak():
    clean = tone(1.0, amp=0.9)
    noise = seeded_rng(1).standard_normal(clean.size).astype(np.float32)
    for snr in (-10, 0, 30):
        noisy = mix_at_snr(clean, noise, snr, peak=0.9)
        assert np.max(np.abs(noisy)) == pytest.approx(0.9, abs=1e-6)
        assert abs(measured_snr(clean, noise, noisy) - snr) < 0.05


@pytest.mark.parametrize("noise_type", ALL_TYPES)
def test_seeding(bank, noise_type):
    a = bank.sample(noise_type, 8000, seeded_rng(0, "item", noise_type, 5))
    b = bank.sample(noise_type, 8000, seeded_rng(0, "item", noise_type, 5.0))  # 5 and 5.0 are one key
    c = bank.sample(noise_type, 8000, seeded_rng(1, "item", noise_type, 5))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_seeded_rng_stable_across_processes():
    code = "from echodistill.audio.noise import seeded_rng; print(seeded_rng(3, 'x', 'pink', -5.0).integers(1 << 62))"
    runs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
            for _ in range(2)}
    assert runs == {f"{seeded_rng(3, 'x', 'pink', -5).integers(1 << 62)}\n"}


@pytest.mark.parametrize("seconds", [0.1, 1.0, 5.0])  # shorter and longer than every noise file
def test_lengths_follow_clean(bank, seconds):
    clean = tone(seconds)
    for t in ALL_TYPES:
        draw = draw_noisy(clean, bank, [t], seeded_rng(t, seconds), snr_levels=[0])
        assert draw.noisy.shape == clean.shape and draw.noise_type == t and draw.snr == 0


def test_draw_noisy_range_and_levels(bank):
    clean = tone(0.5, amp=0.01)
    rng = seeded_rng("draw")
    draws = [draw_noisy(clean, bank, ["white", "hum"], rng, snr_range=(-5, 5)) for _ in range(40)]
    assert all(isinstance(d, NoiseDraw) and -5 <= d.snr <= 5 for d in draws)
    assert {d.noise_type for d in draws} == {"white", "hum"}
    levels = {draw_noisy(clean, bank, ["pink"], rng, snr_levels=[-10, 20]).snr for _ in range(20)}
    assert levels == {-10.0, 20.0}
    with pytest.raises(ValueError):
        draw_noisy(clean, bank, ["white"], rng)


def _slope_db_per_octave(x):
    """Least-squares slope of the power spectrum (dB) against log2 frequency over 100-4000 Hz."""
    freqs = np.fft.rfftfreq(x.size, 1 / SAMPLE_RATE)
    power = np.abs(np.fft.rfft(x)) ** 2
    band = (freqs >= 100) & (freqs <= 4000)
    return np.polyfit(np.log2(freqs[band]), 10 * np.log10(power[band]), 1)[0]


@pytest.mark.parametrize("noise_type,slope", [("white", 0.0), ("pink", -3.01), ("brown", -6.02)])
def test_color_slopes(bank, noise_type, slope):
    x = bank.sample(noise_type, 4 * SAMPLE_RATE, seeded_rng("slope", noise_type))
    assert abs(_slope_db_per_octave(x) - slope) < 0.5


def test_hum_is_mains():
    bank = NoiseBank()
    x = bank.sample("hum", 4 * SAMPLE_RATE, seeded_rng("hum"))
    freqs = np.fft.rfftfreq(x.size, 1 / SAMPLE_RATE)
    peak = freqs[np.argmax(np.abs(np.fft.rfft(x)))]
    assert any(abs(peak - k * f) < 2 for f in (50, 60) for k in (1, 3))


def test_errors(bank, tmp_path):
    with pytest.raises(NoiseTypeError, match="'traffic'.*available: white, pink") as e:
        bank.sample("traffic", 100, seeded_rng(0))
    assert isinstance(e.value, UserError)
    with pytest.raises(NoiseTypeError, match="babble.*no audio files"):
        NoiseBank().sample("babble", 100, seeded_rng(0))
    with pytest.raises(NoiseError, match="silent"):
        mix_at_snr(tone(0.1), np.zeros(1600, np.float32), 0)
    with pytest.raises(ValueError, match="equal length"):
        mix_at_snr(tone(0.1), np.ones(1000, np.float32), 0)
    with pytest.raises(NoiseError, match="not found"):
        NoiseBank(extra_paths=[tmp_path / "nope.wav"])
    write_audio(tmp_path / "silent.wav", np.zeros(1600, np.float32))
    with pytest.raises(NoiseError, match="silent"):
        NoiseBank(extra_paths=[tmp_path / "silent.wav"]).sample("file", 100, seeded_rng(0))


def test_cache_is_bounded(noise_dir):
    bank = NoiseBank(noise_dir, cache_mb=0.1)  # the 2.5 s music track alone is 0.15 MiB
    for t in ("music", "midi", "babble", "music"):
        bank.sample(t, 1000, seeded_rng(t))
    assert bank._cache_bytes <= 0.1 * 2 ** 20 or len(bank._cache) == 1


def test_check_decodes_every_noise_file_up_front(tmp_path):
    """A partly bad bank fails before anything is drawn, naming each bad file as a noise problem."""
    good = tmp_path / "good.wav"
    write_audio(good, (0.1 * np.random.default_rng(0).standard_normal(8000)).astype(np.float32))
    nan = tmp_path / "nan.wav"
    x = np.ones(8000, np.float32) * 0.1
    x[10] = np.nan
    import soundfile as sf
    sf.write(nan, x, SAMPLE_RATE, subtype="FLOAT")
    silent = tmp_path / "silent.wav"
    write_audio(silent, np.zeros(8000, np.float32))
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF0000WAVEnot audio")
    bank = NoiseBank(extra_paths=[good, nan, silent, corrupt])
    with pytest.raises(NoiseError) as e:
        bank.check(["white"])
    msg = str(e.value)
    assert "3 of 4 noise file(s)" in msg and "NaN" in msg and "silent" in msg and "cannot be decoded" in msg
    assert not isinstance(e.value, AudioError)  # never taken for an item's bad audio
    NoiseBank(extra_paths=[good]).check(["file", "white"])
