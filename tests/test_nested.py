"""Warm-ups as a level (issue 27): the three-level bootstrap on synthetic data whose variance components
are known, each warm-up's own estimate, bootstrap p-values and Holm's adjustment."""

import numpy as np
import pytest

from echodistill.eval import seeds as S


def _nested(rng, n_warmups, n_seeds, n_items, delta=0.02, warmup_sd=0.0, seed_sd=0.02, item_sd=0.1,
            noise_sd=0.2, warmup_effects=None):
    """One [seeds, items] matrix of paired differences per warm-up:
    D[w, s, i] = delta + a_w + b_ws + c_i + e_wsi, with a ~ N(0, warmup_sd), b ~ N(0, seed_sd), the item
    effect c shared by every run, e the run x item noise (or ``warmup_effects`` as the a_w)."""
    a = rng.normal(0, warmup_sd, n_warmups) if warmup_effects is None else np.asarray(warmup_effects)
    c = rng.normal(0, item_sd, (1, n_items))
    return [delta + a[w] + rng.normal(0, seed_sd, (n_seeds, 1)) + c + rng.normal(0, noise_sd, (n_seeds, n_items))
            for w in range(n_warmups)]


def test_three_level_covers_the_truth_when_warmups_vary_and_two_level_does_not():
    """With a real warm-up-to-warm-up spread, pooling every seed as exchangeable (the two-level interval
    round 3 used over two warm-ups) misses the truth far more than 5 % of the time; resampling warm-ups
    first covers it about 95 % of the time."""
    rng = np.random.default_rng(0)
    hits3 = hits2 = 0
    trials = 200
    for k in range(trials):
        D = _nested(rng, 8, 3, 60, warmup_sd=0.05, item_sd=0.03, noise_sd=0.1)
        lo, hi = S.three_level_interval(D, n_boot=500, seed=k)
        hits3 += lo <= 0.02 <= hi
        lo2, hi2 = S.two_level_interval(np.concatenate(D), n_boot=500, seed=k)
        hits2 += lo2 <= 0.02 <= hi2
    assert hits2 / trials < 0.8  # 0.765 here
    assert 0.9 <= hits3 / trials <= 0.995  # 0.925 here (8 warm-ups; fewer understate: (W-1)/W)


def test_the_bootstrap_variance_matches_the_known_components():
    """Var of the nested mean = var_w / W + var_s / (W S) + var_c / I + var_e / (W S I); with many warm-ups
    the replicates' variance is that (the warm-up level dominating here), up to the bootstrap's
    (W-1)/W and its recounting of the lower levels."""
    rng = np.random.default_rng(1)
    W, Sd, I = 30, 3, 200
    comps = dict(warmup_sd=0.05, seed_sd=0.02, item_sd=0.05, noise_sd=0.1)
    truth = (comps["warmup_sd"] ** 2 / W + comps["seed_sd"] ** 2 / (W * Sd) + comps["item_sd"] ** 2 / I
             + comps["noise_sd"] ** 2 / (W * Sd * I))
    ratios = [S.three_level_bootstrap(_nested(rng, W, Sd, I, **comps), n_boot=2000, seed=k).var() / truth
              for k in range(20)]
    assert 0.8 <= float(np.mean(ratios)) <= 1.25


def test_each_warmup_gets_its_own_estimate_and_warmups_weigh_the_same():
    rng = np.random.default_rng(2)
    D = _nested(rng, 3, 4, 80, delta=0.0, seed_sd=0.001, item_sd=0.0, noise_sd=0.001,
                warmup_effects=[0.10, 0.0, -0.04])
    D[2] = np.concatenate([D[2], D[2]])  # more seeds in one warm-up do not give it more weight
    assert S.nested_mean(D) == pytest.approx(0.02, abs=1e-3)
    rows = lambda v: [{"id": f"i{i}", "task": "t", "target": "a", "condition": c, "noise_type": None,  # noqa: E731
                       "snr": -5.0 if c == "noisy" else None, "answer": "a" if ok else "b", "correct": ok,
                       "invalid": False} for i, ok in enumerate(v) for c in ("clean", "noisy")]
    # warm-up w0: a is right on 30 more items out of 60 in every seed; w1: the same as b; w2: 6 fewer
    wins = {"w0": 30, "w1": 0, "w2": -6}
    a = {w: {s: rows([i < 30 + max(d, 0) for i in range(60)]) for s in range(2)} for w, d in wins.items()}
    b = {w: {s: rows([i < 30 - min(d, 0) for i in range(60)]) for s in range(2)} for w, d in wins.items()}
    out = S.compare_nested(a, b, "Acc", n_boot=1000)
    assert [round(p["diff"], 3) for p in out["per_warmup"]] == [0.5, 0.0, -0.1]
    assert out["diff"] == pytest.approx(0.4 / 3) and out["n_warmups"] == 3 and out["n_pairs"] == 6
    # three warm-ups with very different effects: the interval spans them
    assert out["low"] <= 0.0 and out["high"] >= 0.3


def test_bootstrap_p_and_holm():
    assert S.bootstrap_p(np.array([1.0, 2.0, 3.0, -1.0])) == 0.5
    assert S.bootstrap_p(np.ones(1000)) == pytest.approx(1 / 1000)
    adj = S.holm({"P1": 0.01, "P2": 0.04, "P3": 0.03})
    assert adj == pytest.approx({"P1": 0.03, "P3": 0.06, "P2": 0.06})


def test_a_malformed_nested_input_is_refused():
    with pytest.raises(ValueError, match="same items"):
        S.three_level_bootstrap([np.zeros((2, 5)), np.zeros((2, 4))], n_boot=10)
