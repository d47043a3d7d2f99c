"""Length-aware micro-batches (train.group_by_length, train/data.py): seeded, resumable, less padding."""

from __future__ import annotations

import numpy as np

from echodistill.audio.io import write_audio
from echodistill.audio.noise import seeded_rng
from echodistill.data.manifest import Item
from echodistill.train.data import ItemStream, group_by_length, prompt_length_proxy


def _items(n):
    return [Item(id=f"i{k}", audio="", question="q", choices=["a", "b"], target="a") for k in range(n)]


def _padding(stream, lengths, steps):
    """Share of the padded [B, max length] prompt tensors that is padding, over ``steps`` micro-batches."""
    pad = total = 0
    for k in range(steps):
        ls = [lengths[int(it.id[1:])] for it in stream.batch(k)]
        pad += max(ls) * len(ls) - sum(ls)
        total += max(ls) * len(ls)
    return pad / total


def test_off_is_the_plain_seeded_permutation():
    items = _items(10)
    s = ItemStream(items, 2, 1, 0, seed=4)
    perm = seeded_rng(4, "train-order", 0).permutation(10)
    assert [it.id for k in range(5) for it in s.batch(k)] == [f"i{j}" for j in perm]


def test_grouped_batches_are_seeded_resumable_disjoint_and_less_padded():
    n, B, W = 203, 4, 2
    rng = np.random.default_rng(0)
    lengths = list(rng.integers(60, 800, n))  # 30 s clips of any length: 25 tokens/s + text
    items = _items(n)
    ranks = [ItemStream(items, B, W, r, seed=1, lengths=lengths) for r in range(W)]
    steps_per_epoch = n // (B * W)
    # every item once per epoch (the windows straddling the epoch end aside), ranks disjoint
    seen = [it.id for k in range(steps_per_epoch) for s in ranks for it in s.batch(k)]
    assert len(seen) == len(set(seen)) == steps_per_epoch * B * W
    # a pure function of (seed, k): a fresh stream (a resumed run) gives the same batches
    fresh = ItemStream(items, B, W, 1, seed=1, lengths=lengths)
    assert [fresh.batch(k) for k in (7, 3, 40)] == [ranks[1].batch(k) for k in (7, 3, 40)]
    assert ItemStream(items, B, W, 1, seed=2, lengths=lengths).batch(0) != fresh.batch(0)
    plain = ItemStream(items, B, 1, 0, seed=1)
    grouped = ItemStream(items, B, 1, 0, seed=1, lengths=lengths)
    before, after = _padding(plain, lengths, 100), _padding(grouped, lengths, 100)
    assert after < 0.25 * before, (before, after)
    # the epoch still visits windows in random order, not longest first
    firsts = [max(lengths[int(it.id[1:])] for it in grouped.batch(k)) for k in range(40)]
    assert firsts != sorted(firsts, reverse=True)


def test_group_by_length_keeps_each_group_of_windows():
    order = np.arange(20)[::-1].copy()
    lengths = np.arange(20, dtype=float)
    out = group_by_length(order, lengths, window=2, group_windows=3, rng=np.random.default_rng(0))
    assert sorted(out.tolist()) == list(range(20))
    for g in range(0, 20, 6):  # the same items stay in their group of 3 windows
        assert set(out[g:g + 6].tolist()) == set(order[g:g + 6].tolist())
    for w in range(0, 20, 2):  # each window holds neighbours in length
        assert abs(int(out[w]) - int(out[w + 1])) == 1


def test_prompt_length_proxy_reads_meta_or_header(tmp_path):
    write_audio(tmp_path / "a.wav", np.zeros(8000, dtype=np.float32))  # 0.5 s
    a = Item(id="a", audio=str(tmp_path / "a.wav"), question="q?", choices=["x"], target="x")
    b = Item(id="b", audio="missing.wav", question="q?", choices=["x"], target="x", meta={"duration_s": 40.0})
    c = Item(id="c", audio="missing.wav", question="q?", choices=["x"], target="x")
    la, lb, lc = prompt_length_proxy([a, b, c], max_duration_s=30.0)
    text = (2 + 6) / 4
    assert la == 12.5 + text and lb == 750 + text and lc == 750 + text  # cropped to / unreadable = the window
