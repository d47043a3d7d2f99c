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
    # index of item.target in ``choices``; an open-ended question's target text; None: unlabeled
    target: Optional[int | str]
    clean: np.ndarray  # float32 [S]
    noisy: np.ndarray  # float32 [S]
    noise_type: str
    snr: float
    response_format: str = "answer"  # how its completions are read (data.response_format; the prompt asks for it)


class ItemStream:
    """Deterministic, rank-disjoint micro-batches over ``items``, epoch after epoch.

    Micro-batch ``k`` covers positions ``k*B*W .. (k+1)*B*W - 1`` of the infinite sequence made of
    one seeded permutation per epoch; rank ``r`` takes its ``B`` positions from that window.

    ``lengths`` (one per item, any unit; ``train.group_by_length``): within each run of
    ``GROUP_WINDOWS`` windows of the epoch's permutation the items are sorted by length and the
    windows then shuffled (seeded), so each micro-batch holds prompts of similar length (less left
    padding) while the epoch still visits the windows in random order. Still a pure function of
    (seed, epoch): resuming sees the same batches.
    """

    GROUP_WINDOWS = 50  # windows per sorting group (HF's LengthGroupedSampler: mega-batch of 50 batches)

    def __init__(self, items: Sequence[Item], batch_size: int, world_size: int, rank: int, seed: int,
                 lengths: Optional[Sequence[float]] = None):
        if not items:
            raise ValueError("no training items")
        if lengths is not None and len(lengths) != len(items):
            raise ValueError(f"{len(lengths)} lengths for {len(items)} items")
        self.items, self.batch_size, self.world, self.rank, self.seed = list(items), batch_size, world_size, rank, seed
        self.lengths = None if lengths is None else np.asarray(lengths, dtype=np.float64)
        self._orders: dict[int, np.ndarray] = {}

    def _order(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            order = seeded_rng(self.seed, "train-order", epoch).permutation(len(self.items))
            if self.lengths is not None:
                # windows are aligned to the run's positions: the epoch's first ``off`` items finish
                # the window the previous epoch started
                window = self.batch_size * self.world
                off = (-epoch * len(self.items)) % window
                order = np.concatenate([order[:off], group_by_length(
                    order[off:], self.lengths, window, self.GROUP_WINDOWS, seeded_rng(self.seed, "length-groups", epoch))])
            self._orders = {epoch: order}
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


def group_by_length(order: np.ndarray, lengths: np.ndarray, window: int, group_windows: int,
                    rng: np.random.Generator) -> np.ndarray:
    """Reorder a permutation so that each ``window`` of it holds items of similar length.

    ``order`` [n]: item indices; ``lengths`` [n_items]. Groups of ``window * group_windows``
    consecutive positions are sorted by length (longest first, ties in permutation order), cut into
    windows, and the windows of a group shuffled by ``rng``. Same items per epoch, same group.
    """
    out = []
    size = window * max(1, group_windows)
    for g in range(0, len(order), size):
        chunk = order[g:g + size]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        wins = [chunk[i:i + window] for i in range(0, len(chunk), window)]
        out += [wins[j] for j in rng.permutation(len(wins))]
    return np.concatenate(out) if out else order


def prompt_length_proxy(items: Sequence[Item], max_duration_s: float, tokens_per_s: float = 25.0) -> list[float]:
    """Approximate prompt tokens per item: audio tokens (clip seconds, cropped to the window) + text / 4.

    Only the order matters (``group_by_length``). 25 tokens/s is Qwen2-Audio's and the embedded
    model's rate. Seconds come from ``meta["duration_s"]`` when the manifest has it, else from the
    file header; an unreadable file counts as a full window (it is skipped later anyway).
    """
    import soundfile as sf

    out = []
    for it in items:
        sec = it.meta.get("duration_s") if it.meta else None
        if sec is None:
            try:
                info = sf.info(it.audio)
                sec = info.frames / info.samplerate
            except Exception:  # noqa: BLE001 -- any unreadable header: the loader reports it
                sec = max_duration_s
        text = len(it.question) + sum(len(c) + 5 for c in it.choices)
        out.append(tokens_per_s * min(float(sec), max_duration_s) + text / 4.0)
    return out


def load_clip(path: str, min_duration_s: float, max_duration_s: float, long_audio: str = "truncate") -> np.ndarray:
    """Clean clip, cropped to the model window (``long_audio=skip``: a longer clip is rejected), validated by
    the one shared check (``data/validate.py``, what `data check` reports); only the window is decoded."""
    from ..data.validate import Limits, read_clip
    return read_clip(path, Limits(float(min_duration_s), float(max_duration_s), str(long_audio))).wav


def make_example(item: Item, *, bank: NoiseBank, noise_types: Sequence[str], snr_range: tuple[float, float],
                 rng: np.random.Generator, choice_seed: int, min_duration_s: float,
                 max_duration_s: float, long_audio: str = "truncate", response_format: str = "answer") -> Example:
    """Load ``item``'s clean clip and draw its noisy version (raises AudioError for a bad clip).

    A pre-mixed ``noisy_audio`` is not used here: training draws online so every step sees new noise.
    """
    clean = load_clip(item.audio, min_duration_s, max_duration_s, long_audio)
    draw = draw_noisy(clean, bank, noise_types, rng, snr_range=snr_range)
    choices = ordered_choices(item, choice_seed)
    target = item.target  # open-ended: the reference text (the accuracy reward normalises it)
    if item.target is not None and choices:
        if item.target not in choices:
            raise AudioError(f"item {item.id}: target {item.target!r} is not one of its choices", "bad_item")
        target = choices.index(item.target)
    return Example(item, format_question(item.question, choices, response_format), choices, target,
                   clean, draw.noisy.astype(np.float32), draw.noise_type, float(draw.snr), response_format)


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
                max_duration_s=cfg.data.max_duration_s, long_audio=cfg.data.long_audio,
                response_format=cfg.data.response_format))
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
                                    min_duration_s=cfg.data.min_duration_s, max_duration_s=cfg.data.max_duration_s,
                                    response_format=cfg.data.response_format))
        except AudioError:
            continue  # the periodic eval is a monitor: a bad val clip is left out, not fatal
    return out


__all__ = ["Example", "ItemStream", "group_by_length", "prompt_length_proxy", "load_clip", "make_example",
           "load_examples", "eval_examples"]
