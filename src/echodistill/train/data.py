"""The training item stream: which items each rank takes at each micro-batch, and their audio.

Everything here is a pure function of (seed, position): the epoch order is a seeded permutation,
micro-batch ``k`` of the run is a fixed slice of it, rank ``r`` takes a disjoint part of that slice,
and every noise draw is seeded by (seed, item id, position). So a resumed run sees exactly the data
an uninterrupted run would have seen, on any rank, without storing more than the position.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from ..audio.io import SAMPLE_RATE, AudioError, load_audio
from ..audio.noise import NoiseBank, draw_noisy, seeded_rng
from ..data.manifest import Item
from ..data.prompts import format_question, ordered_choices


@dataclass
class Example:
    """One usable training item: prompt, choices in shown order, clean and noisy clip (same length)."""

    item: Item
    prompt: str
    choices: list[str]
    target: int  # index of item.target in ``choices``
    clean: np.ndarray  # float32 [S]
    noisy: np.ndarray  # float32 [S]
    noise_type: str
    snr: float


class ItemStream:
    """Deterministic, rank-disjoint micro-batches over ``items``, epoch after epoch.

    Micro-batch ``k`` covers positions ``k*B*W .. (k+1)*B*W - 1`` of the infinite sequence made of
    one seeded permutation per epoch; rank ``r`` takes its ``B`` positions from that window.
    """

    def __init__(self, items: Sequence[Item], batch_size: int, world_size: int, rank: int, seed: int):
        if not items:
            raise ValueError("no training items")
        self.items, self.batch_size, self.world, self.rank, self.seed = list(items), batch_size, world_size, rank, seed
        self._orders: dict[int, np.ndarray] = {}

    def _order(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            self._orders = {epoch: seeded_rng(self.seed, "train-order", epoch).permutation(len(self.items))}
        return self._orders[epoch]

    def batch(self, k: int) -> list[Item]:
        """The items rank ``rank`` trains on at micro-batch ``k`` (B of them)."""
        start = (k * self.world + self.rank) * self.batch_size
        out = []
        for pos in range(start, start + self.batch_size):
            epoch, i = divmod(pos, len(self.items))
            out.append(self.items[int(self._order(epoch)[i])])
        return out

    def epoch_of(self, k: int) -> float:
        return (k + 1) * self.world * self.batch_size / len(self.items)


def load_clip(path: str, min_duration_s: float, max_duration_s: float) -> np.ndarray:
    """Clean clip, cropped to the model window (longer clips are cropped, not rejected)."""
    wav = load_audio(path, min_duration_s=min_duration_s)
    return wav[: int(round(max_duration_s * SAMPLE_RATE))]


def make_example(item: Item, *, bank: NoiseBank, noise_types: Sequence[str], snr_range: tuple[float, float],
                 rng: np.random.Generator, choice_seed: int, min_duration_s: float,
                 max_duration_s: float) -> Example:
    """Load ``item``'s clean clip and draw its noisy version (raises AudioError for a bad clip).

    A pre-mixed ``noisy_audio`` is not used here: training draws online so every step sees new noise.
    """
    clean = load_clip(item.audio, min_duration_s, max_duration_s)
    draw = draw_noisy(clean, bank, noise_types, rng, snr_range=snr_range)
    choices = ordered_choices(item, choice_seed)
    if item.target not in choices:
        raise AudioError(f"item {item.id}: target {item.target!r} is not one of its choices", "bad_item")
    return Example(item, format_question(item.question, choices), choices, choices.index(item.target),
                   clean, draw.noisy.astype(np.float32), draw.noise_type, float(draw.snr))


def load_examples(items: Sequence[Item], cfg, bank: NoiseBank, position: int) -> tuple[list[Example], list[str]]:
    """Examples for one micro-batch; bad items are returned as messages (the caller agrees on skips)."""
    examples, bad = [], []
    for item in items:
        rng = seeded_rng(cfg.run.seed, "train-noise", item.id, position)
        try:
            examples.append(make_example(
                item, bank=bank, noise_types=list(cfg.noise.train_types),
                snr_range=(cfg.noise.train_snr_min, cfg.noise.train_snr_max), rng=rng,
                choice_seed=cfg.data.choice_seed, min_duration_s=cfg.data.min_duration_s,
                max_duration_s=cfg.data.max_duration_s))
        except AudioError as e:
            bad.append(f"{item.id}: {e}")
    return examples, bad


def eval_examples(items: Sequence[Item], cfg, bank: NoiseBank, noise_seed: int,
                  snr_range: Optional[tuple[float, float]] = None) -> list[Example]:
    """Fixed val examples: the same noise for every evaluation of the run (seeded by noise_seed, id)."""
    lo, hi = snr_range or (cfg.noise.train_snr_min, cfg.noise.train_snr_max)
    out = []
    for item in items:
        try:
            out.append(make_example(item, bank=bank, noise_types=list(cfg.noise.train_types), snr_range=(lo, hi),
                                    rng=seeded_rng(noise_seed, "val-noise", item.id), choice_seed=cfg.data.choice_seed,
                                    min_duration_s=cfg.data.min_duration_s, max_duration_s=cfg.data.max_duration_s))
        except AudioError:
            continue  # the periodic eval is a monitor: a bad val clip is left out, not fatal
    return out


__all__ = ["Example", "ItemStream", "load_clip", "make_example", "load_examples", "eval_examples"]
