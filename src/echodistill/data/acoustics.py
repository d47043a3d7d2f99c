"""Recording conditions for the offline benchmark: simulated rooms (reverberation) and mild mastering.

Both are seeded, so a build is reproducible: a room is drawn once per (seed, pool, index) and its
impulse response computed by pyroomacoustics (image source method, shoebox room, no randomised
images); mastering is a fixed pedalboard chain (low shelf, high shelf, compressor) with per-item
settings drawn from ranges. Rooms of the ``heldout`` pool are never used outside test_heldout.

Reverberation is part of the item's *clean* clip (a recording condition, like a voice or a
soundfont), not part of the additive noise drawn at training time: what the model must learn to
ignore is then both additive and convolutive.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..audio.io import SAMPLE_RATE

# Share of items recorded in a room (every split); the rest stay dry.
ROOM_SHARE = 0.3
# Rooms per pool. Training rooms serve train/val/test; held-out rooms only test_heldout.
ROOMS_PER_POOL = {"seen": 24, "heldout": 8}
# Ranges the rooms are drawn from: (low, high) per pool. Held-out rooms are also somewhat larger and
# more reverberant, so test_heldout asks for transfer to rooms unlike the training ones.
ROOM_RANGES = {
    "seen": {"rt60_s": (0.2, 0.7), "size_m": (3.0, 8.0), "height_m": (2.4, 3.2), "distance_m": (0.5, 2.0)},
    "heldout": {"rt60_s": (0.4, 0.9), "size_m": (5.0, 12.0), "height_m": (2.8, 4.5), "distance_m": (1.0, 3.0)},
}
REVERB_TAIL_S = 0.25  # the reverberant clip keeps this much tail after the dry clip's end
# Image-source order cap: the full order for RT60 0.7 s is ~90 (2-3 s per room); 20 keeps the direct
# sound, the early reflections and the tail down to about -25 dB (0.2-0.3 s) in ~0.05 s per room.
MAX_IMAGE_ORDER = 20
# Mastering: gains in dB and compressor settings drawn per item, all mild.
MASTERING_RANGES = {"low_shelf_db": (-3.0, 3.0), "high_shelf_db": (-4.0, 3.0),
                    "threshold_db": (-20.0, -8.0), "ratio": (1.5, 3.0)}


@dataclass(frozen=True)
class Room:
    """One simulated shoebox room with a source and a microphone ``distance_m`` apart."""

    name: str
    pool: str  # seen | heldout
    dims: tuple  # (x, y, z) metres
    rt60_s: float
    source: tuple
    mic: tuple

    @property
    def distance_m(self) -> float:
        return float(np.linalg.norm(np.subtract(self.source, self.mic)))

    def describe(self) -> dict:
        return {"room": self.name, "rt60_s": round(self.rt60_s, 2), "distance_m": round(self.distance_m, 2),
                "room_dims_m": [round(d, 2) for d in self.dims]}


def make_rooms(rng: np.random.Generator, pool: str) -> list[Room]:
    """The pool's rooms, drawn from ``ROOM_RANGES[pool]`` with ``rng`` (same generator -> same rooms)."""
    r = ROOM_RANGES[pool]
    rooms = []
    for k in range(ROOMS_PER_POOL[pool]):
        dims = (float(rng.uniform(*r["size_m"])), float(rng.uniform(*r["size_m"])), float(rng.uniform(*r["height_m"])))
        rt60 = float(rng.uniform(*r["rt60_s"]))
        dist = float(rng.uniform(*r["distance_m"]))
        # Source somewhere at least 0.5 m from the walls; the microphone `dist` away in a random
        # horizontal direction, pulled back inside the room when the direction points at a wall.
        src = np.array([rng.uniform(0.5, d - 0.5) for d in dims[:2]] + [float(rng.uniform(1.2, 1.8))])
        ang = float(rng.uniform(0, 2 * np.pi))
        mic = src + dist * np.array([np.cos(ang), np.sin(ang), 0.0])
        mic[:2] = np.clip(mic[:2], 0.3, np.array(dims[:2]) - 0.3)
        rooms.append(Room(f"{pool}_room_{k:02d}", pool, dims, rt60, tuple(map(float, src)), tuple(map(float, mic))))
    return rooms


@lru_cache(maxsize=64)
def impulse_response(room: Room) -> np.ndarray:
    """The room's impulse response at 16 kHz, float32, normalised to a unit direct-path peak. The
    absorption is set for the room's nominal RT60 (Sabine); the image-source order is capped
    (``MAX_IMAGE_ORDER``), so the late tail below about -25 dB is cut short."""
    import pyroomacoustics as pra
    absorption, max_order = pra.inverse_sabine(room.rt60_s, list(room.dims))
    shoebox = pra.ShoeBox(list(room.dims), fs=SAMPLE_RATE, materials=pra.Material(absorption),
                          max_order=min(int(max_order), MAX_IMAGE_ORDER), use_rand_ism=False, air_absorption=False)
    shoebox.add_source(list(room.source))
    shoebox.add_microphone(list(room.mic))
    shoebox.compute_rir()
    rir = np.asarray(shoebox.rir[0][0], dtype=np.float64)
    return (rir / max(1e-9, float(np.max(np.abs(rir))))).astype(np.float32)


def reverberate(wav: np.ndarray, room: Room) -> np.ndarray:
    """``wav`` [T] as heard in ``room`` -> [T + tail]: the dry clip convolved with the room's impulse
    response, aligned on the direct path, with ``REVERB_TAIL_S`` of tail kept; peak level unchanged."""
    from scipy.signal import fftconvolve
    rir = impulse_response(room)
    onset = int(np.argmax(np.abs(rir)))  # drop the propagation delay before the direct sound
    wet = fftconvolve(wav.astype(np.float64), rir[onset:].astype(np.float64))
    wet = wet[: wav.size + int(REVERB_TAIL_S * SAMPLE_RATE)]
    peak = float(np.max(np.abs(wav)))
    return (wet * (peak / max(1e-9, float(np.max(np.abs(wet)))))).astype(np.float32)


def draw_mastering(rng: np.random.Generator) -> dict:
    """Per-item mastering settings, rounded so manifests stay readable."""
    return {k: round(float(rng.uniform(lo, hi)), 1) for k, (lo, hi) in MASTERING_RANGES.items()}


def master(wav: np.ndarray, settings: dict) -> np.ndarray:
    """Mild mastering with pedalboard: low shelf (200 Hz), high shelf (4 kHz), then a compressor.
    The clip is brought to a 0.9 peak first so the compressor threshold means the same for every clip."""
    import pedalboard as pb
    x = (wav / max(1e-9, float(np.max(np.abs(wav)))) * 0.9).astype(np.float32)
    chain = pb.Pedalboard([
        pb.LowShelfFilter(cutoff_frequency_hz=200.0, gain_db=settings["low_shelf_db"]),
        pb.HighShelfFilter(cutoff_frequency_hz=4000.0, gain_db=settings["high_shelf_db"]),
        pb.Compressor(threshold_db=settings["threshold_db"], ratio=settings["ratio"], attack_ms=5.0,
                      release_ms=80.0),
    ])
    return np.asarray(chain(x, SAMPLE_RATE), dtype=np.float32)
