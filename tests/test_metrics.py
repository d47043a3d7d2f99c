"""eval.metrics on a hand-built prediction set whose every figure is worked out by hand below."""

import random
import time

import numpy as np
import pytest

from echodistill.errors import UserError
from echodistill.eval.metrics import (GSR_DEFINITION, HEADLINE, combine_seeds, compute_metrics,
                                      paired_difference, paired_differences)


def row(iid, cond, answer, task="x", noise_type=None, snr=None, target="a"):
    invalid = answer is None
    return {"id": iid, "task": task, "condition": cond, "noise_type": noise_type, "snr": snr,
            "response": answer or "???", "answer": answer, "target": target,
            "correct": answer == target, "invalid": invalid}


CELLS = [("white", -5), ("white", 10), ("pink", -5)]


def hand_rows(prefix=""):
    """4 items (A, B task x; C, D task y), target 'a', 3 noise cells.

    clean:  A a (ok)  B a (ok)  C b (wrong)  D -- (invalid)
    silent: A a (ok)  B b       C b          D --
    noisy (white-5, white10, pink-5):
      A: b, a, a     B: a, a, --     C: b, a, c     D: --, a, b
    """
    P = prefix
    clean = {"A": "a", "B": "a", "C": "b", "D": None}
    silent = {"A": "a", "B": "b", "C": "b", "D": None}
    noisy = {"A": ["b", "a", "a"], "B": ["a", "a", None], "C": ["b", "a", "c"], "D": [None, "a", "b"]}
    task = {"A": "x", "B": "x", "C": "y", "D": "y"}
    rows = []
    for i in "ABCD":
        rows.append(row(P + i, "clean", clean[i], task[i]))
        rows.append(row(P + i, "silent", silent[i], task[i]))
        for (nt, snr), ans in zip(CELLS, noisy[i]):
            rows.append(row(P + i, "noisy", ans, task[i], nt, snr))
    return rows


def val(m, key):
    return m[key]["value"]


def test_every_metric_by_hand():
    m = compute_metrics(hand_rows(), strong_snr_max=0.0, n_boot=200, seed=0)
    # Acc: A, B right of 4 -> 0.5
    assert val(m, "Acc") == pytest.approx(0.5)
    # per cell: white-5 1/4 (B), white10 4/4, pink-5 1/4 (A); Noisy = mean(.25, 1, .25) = 0.5
    assert val(m, "Noisy") == pytest.approx(0.5)
    # strong cells (snr <= 0): white-5, pink-5 -> mean(.25, .25)
    assert val(m, "StrongNoisy") == pytest.approx(0.25)
    assert val(m["noisy_by_snr"], "-5") == pytest.approx(0.25)
    assert val(m["noisy_by_snr"], "10") == pytest.approx(1.0)
    assert val(m["noisy_by_noise_type"], "white") == pytest.approx(0.625)  # mean(.25, 1)
    assert val(m["noisy_by_noise_type"], "pink") == pytest.approx(0.25)
    # GSR: clean-correct items A, B; A right on white10 + pink-5, B on white-5 + white10 -> 4/12
    assert val(m, "GSR") == pytest.approx(4 / 12)
    # strong pairs: 8; A pink-5, B white-5 -> 2/8
    assert val(m, "StrongGSR") == pytest.approx(0.25)
    # GSR at -5 dB: same 2/8; at 10 dB: A, B of 4 -> 0.5
    assert val(m["gsr_by_snr"], "-5") == pytest.approx(0.25)
    assert val(m["gsr_by_snr"], "10") == pytest.approx(0.5)
    # Consistency (clean answers a, a, b, --): A 2 (a, a), B 2 (a, a; -- differs), C 1 (b), D 0
    # (clean invalid never matches) -> 5/12
    assert val(m, "Consistency") == pytest.approx(5 / 12)
    # strong: A pink-5, B white-5, C white-5 -> 3/8
    assert val(m, "StrongConsistency") == pytest.approx(3 / 8)
    assert val(m, "Retention") == pytest.approx(1.0)  # 0.5 / 0.5
    assert val(m, "NoAudio") == pytest.approx(0.25)  # only A right on silence
    # Invalid over clean + noisy: D clean, B pink-5, D white-5 -> 3/16
    assert val(m, "Invalid") == pytest.approx(3 / 16)
    inv = m["invalid_by_condition"]
    assert val(inv, "clean") == pytest.approx(0.25)
    assert val(inv, "noisy") == pytest.approx(2 / 12)
    assert val(inv, "silent") == pytest.approx(0.25)
    # task x = A, B: Acc 1; cells white-5 .5, white10 1, pink-5 .5 -> Noisy 2/3; GSR 4/6
    tx, ty = m["by_task"]["x"], m["by_task"]["y"]
    assert val(tx, "Acc") == pytest.approx(1.0)
    assert val(tx, "Noisy") == pytest.approx(2 / 3)
    assert val(tx, "GSR") == pytest.approx(4 / 6)
    assert val(ty, "Acc") == pytest.approx(0.0)
    assert val(ty, "GSR") == pytest.approx(0.0)
    # counts
    assert m["Acc"]["n"] == 4 and m["GSR"]["n_obs"] == 12 and m["StrongGSR"]["n_obs"] == 8
    assert m["counts"]["items"] == 4 and m["counts"]["rows"] == 20
    assert m["definitions"]["GSR"] == GSR_DEFINITION


def test_row_order_does_not_matter():
    rows = hand_rows()
    shuffled = rows[:]
    random.Random(3).shuffle(shuffled)
    assert compute_metrics(rows, n_boot=100, seed=1) == compute_metrics(shuffled, n_boot=100, seed=1)


def test_unbalanced_grid_averages_cells():
    # item A seen in two cells, B in one: per-cell accuracies 1.0 (white) and 0.0 (pink)
    rows = [row("A", "clean", "a"), row("A", "noisy", "a", noise_type="white", snr=0),
            row("A", "noisy", "b", noise_type="pink", snr=0), row("B", "clean", "a"),
            row("B", "noisy", "a", noise_type="white", snr=0), ]
    m = compute_metrics(rows, n_boot=0)
    assert val(m, "Noisy") == pytest.approx(0.5)  # mean of cells (1 + 0) / 2, not 2/3 of rows
    assert val(m, "GSR") == pytest.approx(2 / 3)  # share of pairs
    assert m["Noisy"]["ci_low"] is None  # no resamples, no interval


def test_intervals_contain_estimate_and_shrink():
    small = sum((hand_rows(f"r{k}-") for k in range(5)), [])
    large = sum((hand_rows(f"r{k}-") for k in range(60)), [])
    ms = compute_metrics(small, n_boot=500, seed=0)
    ml = compute_metrics(large, n_boot=500, seed=0)
    for m in (ms, ml):
        for k in HEADLINE:
            f = m[k]
            assert f["ci_low"] <= f["value"] + 1e-12 and f["value"] <= f["ci_high"] + 1e-12, k
    for k in ("Acc", "Noisy", "GSR", "Consistency", "Retention"):
        w_small = ms[k]["ci_high"] - ms[k]["ci_low"]
        w_large = ml[k]["ci_high"] - ml[k]["ci_low"]
        assert w_large < 0.6 * w_small, k
    assert val(ml, "GSR") == pytest.approx(4 / 12)  # replication keeps the point estimate
    assert ml["Acc"]["n"] == 240


def test_deterministic_given_seed():
    rows = sum((hand_rows(f"r{k}-") for k in range(10)), [])
    a = compute_metrics(rows, n_boot=300, seed=5)
    assert a == compute_metrics(rows, n_boot=300, seed=5)
    b = compute_metrics(rows, n_boot=300, seed=6)
    assert a["Acc"]["value"] == b["Acc"]["value"]
    assert any((a[k]["ci_low"], a[k]["ci_high"]) != (b[k]["ci_low"], b[k]["ci_high"]) for k in HEADLINE)


def test_paired_difference_of_run_with_itself_is_zero():
    rows = sum((hand_rows(f"r{k}-") for k in range(10)), [])
    for metric in ("Acc", "Noisy", "StrongNoisy", "GSR", "StrongGSR", "Consistency"):
        d = paired_difference(rows, rows, metric, n_boot=200)
        assert d["diff"] == 0 and d["ci_low"] == 0 and d["ci_high"] == 0, metric
        assert d["n"] == 40 and d["p_boot"] == 1.0


def test_paired_difference_known_values_and_shared_items():
    a = hand_rows()
    perfect = [dict(r, answer="a", correct=True, invalid=False) for r in a]
    d = paired_difference(a, perfect, "Acc", n_boot=300)
    assert d["diff"] == pytest.approx(-0.5)
    assert d["ci_low"] <= -0.5 <= d["ci_high"]
    assert d["a"]["value"] == pytest.approx(0.5) and d["b"]["value"] == pytest.approx(1.0)
    g = paired_difference(perfect, a, "GSR", n_boot=300)
    assert g["diff"] == pytest.approx(1 - 4 / 12)
    # only items A and B in the second run: differences use the shared items
    only_ab = [r for r in perfect if r["id"] in ("A", "B")]
    d2 = paired_difference(a, only_ab, "Acc", n_boot=100)
    assert d2["n"] == 2 and d2["diff"] == pytest.approx(0.0)  # A, B are right in both
    many = paired_differences(a, perfect, ("Acc", "Noisy"), n_boot=100)
    assert set(many) == {"Acc", "Noisy"} and many["Noisy"]["diff"] == pytest.approx(-0.5)
    with pytest.raises(ValueError):
        paired_difference(a, a, "Nonsense")


def test_combine_seeds_pairs_within_seed_and_averages_items():
    a = hand_rows()
    perfect = [dict(r, answer="a", correct=True, invalid=False) for r in a]
    m = compute_metrics(combine_seeds([a, perfect]), n_boot=100)
    assert val(m, "Acc") == pytest.approx(0.75)  # (0.5 + 1) / 2
    assert val(m, "GSR") == pytest.approx((4 + 12) / 24)  # pairs formed within each seed
    assert m["Acc"]["n"] == 4 and m["counts"]["replicates"] == 2
    d = paired_difference(combine_seeds([a, perfect]), a, "Acc", n_boot=100)
    assert d["diff"] == pytest.approx(0.25)


def test_bad_rows_raise_user_error():
    with pytest.raises(UserError, match="condition"):
        compute_metrics([{"id": "A", "condition": "loud", "correct": True}])
    with pytest.raises(UserError, match="noise_type and snr"):
        compute_metrics([{"id": "A", "condition": "noisy", "correct": True}])
    with pytest.raises(UserError, match="correct"):
        compute_metrics([{"id": "A", "condition": "clean"}])


def test_fast_enough_for_a_full_grid():
    rng = np.random.default_rng(0)
    rows = []
    for i in range(400):
        rows.append(row(f"i{i}", "clean", "a" if rng.random() < 0.8 else "b"))
        rows.append(row(f"i{i}", "silent", "b"))
        for nt in ("white", "pink", "babble", "music"):
            for snr in (-10, -5, 0, 5, 10, 20, 30):
                rows.append(row(f"i{i}", "noisy", "a" if rng.random() < 0.6 else "b", noise_type=nt, snr=snr))
    t = time.perf_counter()
    m = compute_metrics(rows, n_boot=1000, seed=0)
    assert time.perf_counter() - t < 5.0  # ~0.3 s on an idle core
    assert m["Noisy"]["n_obs"] == 400 * 28
