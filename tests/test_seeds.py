"""Seed-aware statistics (issue 14): coverage on synthetic data with a known truth, the t-test, power,
per-item scores, and the results store's round trip and pairing refusal."""

import numpy as np
import pytest

from echodistill.errors import UserError
from echodistill.eval import seeds as S
from echodistill.eval.store import paired_runs, read_store, write_run


def _simulate(rng, n_seeds, n_items, delta, seed_sd=0.03, item_sd=0.15, noise_sd=0.25):
    """D[s, i] = delta + seed effect + shared item effect + seed x item noise: what a paired method
    difference looks like (an item that favours one method does so in every seed, more or less)."""
    return (delta + rng.normal(0, seed_sd, (n_seeds, 1)) + rng.normal(0, item_sd, (1, n_items))
            + rng.normal(0, noise_sd, (n_seeds, n_items)))


@pytest.mark.parametrize("n_seeds,n_items", [(5, 60), (10, 40), (3, 100)])
def test_two_level_interval_covers_the_truth_about_95_percent(n_seeds, n_items):
    rng = np.random.default_rng(0)
    hits = 0
    trials = 200
    for k in range(trials):
        lo, hi = S.two_level_interval(_simulate(rng, n_seeds, n_items, delta=0.02), n_boot=200, seed=k)
        hits += lo <= 0.02 <= hi
    assert 0.90 <= hits / trials <= 0.995


def test_item_only_bootstrap_is_overconfident_when_seeds_vary():
    """Why the report resamples seeds too: with real seed-to-seed spread, resampling items alone
    (the runs treated as fixed) misses the truth far more often than 5 % of the time."""
    rng = np.random.default_rng(2)
    hits_two = hits_items = 0
    for k in range(200):
        D = _simulate(rng, 3, 100, delta=0.02, seed_sd=0.05)
        lo, hi = S.two_level_interval(D, n_boot=200, seed=k)
        hits_two += lo <= 0.02 <= hi
        boot = (rng.multinomial(100, np.full(100, 0.01), size=200) / 100) @ D.mean(0)
        hits_items += np.percentile(boot, 2.5) <= 0.02 <= np.percentile(boot, 97.5)
    assert hits_items / 200 < 0.85 < hits_two / 200


def test_t_test_detects_a_clear_difference_and_not_noise():
    rng = np.random.default_rng(1)
    big = S.seed_t_test(_simulate(rng, 8, 100, delta=0.1, seed_sd=0.01, item_sd=0.05))
    assert big["p"] < 0.001 and big["ci_low"] > 0 and len(big["per_seed"]) == 8
    assert S.seed_t_test(np.zeros((1, 5)))["p"] is None  # one seed: no seed-level interval


def test_seeds_needed_grows_as_the_effect_shrinks():
    n3 = S.seeds_needed(0.03, var_between_seeds=0.03 ** 2, var_items=0.1, n_items=350)
    n6 = S.seeds_needed(0.06, var_between_seeds=0.03 ** 2, var_items=0.1, n_items=350)
    assert n6 < n3
    # delta equal to one seed-SD: the classic answer for a paired t-test at 80 % power is 10 pairs
    assert S.seeds_needed(1.0, 1.0, 0.0, 100) == 10


def _rows(answers, snr=-5.0):
    """One item per entry: (clean answer, noisy answer); target 'a'."""
    rows = []
    for k, (c, n) in enumerate(answers):
        base = {"id": f"i{k}", "task": "t", "target": "a"}
        rows.append({**base, "condition": "clean", "noise_type": None, "snr": None, "answer": c,
                     "correct": c == "a", "invalid": c is None})
        rows.append({**base, "condition": "noisy", "noise_type": "white", "snr": snr, "answer": n,
                     "correct": n == "a", "invalid": n is None})
    return rows


def test_item_scores_per_metric():
    rows = _rows([("a", "a"), ("a", "b"), ("b", "a"), ("b", None)])
    assert S.item_scores(rows, "Acc") == {"i0": 1, "i1": 1, "i2": 0, "i3": 0}
    assert S.item_scores(rows, "Noisy") == {"i0": 1, "i1": 0, "i2": 1, "i3": 0}
    assert S.item_scores(rows, "GSR") == {"i0": 1, "i1": 0, "i2": 0, "i3": 0}
    assert S.item_scores(rows, "Consistency") == {"i0": 1, "i1": 0, "i2": 0, "i3": 0}
    assert S.item_scores(rows, "Invalid")["i3"] == 0.5
    assert S.item_scores(_rows([("a", "a")], snr=5.0), "StrongNoisy") == {}  # no strong cell


def test_store_round_trip_pairs_only_same_start(tmp_path):
    rows = _rows([("a", "a"), ("a", "b")])
    common = dict(split="val", rows=rows, final_sha256="f", eval_settings={"grid": 1})
    write_run(tmp_path, "grpo-s0", method="grpo", seed=0, start_sha256="w1", **common)
    write_run(tmp_path, "ed-s0", method="ed", seed=0, start_sha256="w1", **common)
    write_run(tmp_path, "ed-s1", method="ed", seed=1, start_sha256="w1", **common)
    runs = {r.name: r for r in read_store(tmp_path, "val")}
    assert set(runs) == {"grpo-s0", "ed-s0", "ed-s1"}
    back = runs["ed-s0"].rows
    assert [(r["id"], r["condition"], r["answer"], r["correct"]) for r in back] == \
        [(r["id"], r["condition"], r["answer"], r["correct"]) for r in rows]
    pairs = paired_runs([runs["ed-s0"], runs["ed-s1"]], [runs["grpo-s0"]])
    assert [(a.name, b.name) for a, b in pairs] == [("ed-s0", "grpo-s0")]  # seed 1 has no partner yet
    write_run(tmp_path, "other-s0", method="other", seed=0, start_sha256="w2", **common)
    other = [r for r in read_store(tmp_path) if r.name == "other-s0"]
    with pytest.raises(UserError, match="different weights"):
        paired_runs(other, [runs["grpo-s0"]])
    (tmp_path / "half").mkdir()  # an unfinished folder (no run.json) is not a run
    assert len(read_store(tmp_path)) == 4


def test_a_seedless_baseline_pairs_with_every_seed(tmp_path):
    rows = _rows([("a", "a")])
    common = dict(split="val", rows=rows, final_sha256="f", eval_settings={}, start_sha256="w1")
    write_run(tmp_path, "warmup", method="warmup", seed=None, **common)
    for s in (0, 1):
        write_run(tmp_path, f"grpo-s{s}", method="grpo", seed=s, **common)
    runs = read_store(tmp_path)
    pairs = paired_runs([r for r in runs if r.method == "grpo"], [r for r in runs if r.method == "warmup"])
    assert [(a.name, b.name) for a, b in pairs] == [("grpo-s0", "warmup"), ("grpo-s1", "warmup")]
    assert "Paired differences against `warmup`" in S.store_report(str(tmp_path), "val", baseline="warmup")


def test_a_seedless_method_pairs_on_the_items_both_evaluated(tmp_path):
    """An untrained front-end (one seedless run) evaluated on a subset of items, without the silent
    condition, pairs with every seed of the baseline on the common items; a different grid is refused."""
    grid = ["eval.snr_levels=[-5]", "eval.no_audio=true"]
    full = _rows([("a", "a"), ("a", "b"), ("b", "b"), ("a", "a")])
    write_run(tmp_path, "enhance", method="enhance", seed=None, split="val", rows=full[:4], final_sha256="w1",
              start_sha256="w1", eval_settings={"overrides": grid + ["eval.max_items=2", "eval.no_audio=false"]})
    for s in (0, 1):
        write_run(tmp_path, f"grpo-s{s}", method="grpo", seed=s, split="val", rows=full, final_sha256="f",
                  start_sha256="w1", eval_settings={"overrides": grid})
    runs = read_store(tmp_path)
    enhance, grpo = [r for r in runs if r.method == "enhance"], [r for r in runs if r.method == "grpo"]
    pairs = paired_runs(enhance, grpo)
    assert [(a.name, b.name) for a, b in pairs] == [("enhance", "grpo-s0"), ("enhance", "grpo-s1")]
    c = S.compare([p[0].rows for p in pairs], [p[1].rows for p in pairs], "Noisy", n_boot=50)
    assert c["diff"] == 0.0  # the same answers on the two items both runs have (i0, i1)
    write_run(tmp_path, "other", method="other", seed=None, split="val", rows=full, final_sha256="w1",
              start_sha256="w1", eval_settings={"overrides": ["eval.snr_levels=[0]", "eval.no_audio=true"]})
    with pytest.raises(UserError, match="different settings"):
        paired_runs([r for r in read_store(tmp_path) if r.method == "other"], grpo)


# ------------------------------------------------------------------ regimes, shares recovered, figures
TYPES = ("white", "pink", "babble", "music")


def _graded_rows(n_items, k_strong):
    """Every item clean-correct, right in ``k_strong`` of the four noise types at -5 dB and in all at +5 dB:
    each item scores the same, so every bootstrap replicate has the same mean and the answer is exact."""
    rows = []
    for i in range(n_items):
        base = {"id": f"i{i}", "task": "t", "target": "a"}
        rows.append({**base, "condition": "clean", "noise_type": None, "snr": None, "answer": "a"})
        for j, t in enumerate(TYPES):
            strong = "a" if j < k_strong else "b"
            rows.append({**base, "condition": "noisy", "noise_type": t, "snr": -5.0, "answer": strong})
            rows.append({**base, "condition": "noisy", "noise_type": t, "snr": 5.0, "answer": "a"})
    return rows


# strong-noise accuracy per method: warm-up 25 %, GRPO with labels 75 %, distill 50 %, TTRL 25 %
LABEL_FREE = {"lf-grpo-labels": 3, "lf-distill": 2, "lf-ttrl": 1}
REGIMES = [S.Regime("labeled", "grpo", ("grpo", "ed"), "warmup-full"),
           S.Regime("label-free", "lf-grpo-labels", tuple(LABEL_FREE), "warmup-frac30", ("StrongGSR", "StrongNoisy"),
                    (("lf-distill", "lf-ttrl"),))]


def _store(path, label_free=True, n_items=6):
    """Two regimes from two warm-ups (different sha256), seeds 0 and 1."""
    common = dict(split="test", final_sha256="f", eval_settings={"grid": 1})
    write_run(path, "warmup-full", method="warmup-full", seed=None, start_sha256="wf",
              rows=_graded_rows(n_items, 2), **common)
    for s in (0, 1):
        for m, k in (("grpo", 2), ("ed", 3)):
            write_run(path, f"{m}-s{s}", method=m, seed=s, start_sha256="wf", rows=_graded_rows(n_items, k), **common)
    if label_free:
        write_run(path, "warmup-frac30", method="warmup-frac30", seed=None, start_sha256="w30",
                  rows=_graded_rows(n_items, 1), **common)
        for s in (0, 1):
            for m, k in LABEL_FREE.items():
                write_run(path, f"{m}-s{s}", method=m, seed=s, start_sha256="w30", rows=_graded_rows(n_items, k),
                          **common)


def test_gain_recovered_is_the_ratio_of_mean_gains_with_an_interval():
    W = np.full(50, 0.25)
    share = S.gain_recovered(np.full((3, 50), 0.5), np.full((3, 50), 0.75), W, n_boot=200)
    assert share["share"] == pytest.approx(0.5) and share["low"] == pytest.approx(0.5) == share["high"]
    rng = np.random.default_rng(0)
    noisy = S.gain_recovered(W + 0.1 + rng.normal(0, 0.1, (5, 50)), W + 0.2 + rng.normal(0, 0.1, (5, 50)), W)
    assert noisy["low"] < 0.5 < noisy["high"] and not noisy["unbounded"]
    # the baseline gains nothing: a ratio over a denominator that may be zero has no finite interval
    flat = S.gain_recovered(W + 0.1 + rng.normal(0, 0.1, (5, 50)), W + rng.normal(0, 0.1, (5, 50)), W)
    assert flat["unbounded"] and flat["low"] is None


def test_label_free_methods_pair_against_grpo_with_labels_and_report_the_share(tmp_path):
    _store(tmp_path)
    by = S._by_method(read_store(tmp_path))
    g = S.recovered_share(REGIMES[1], by, "lf-distill", "StrongGSR", n_boot=100)
    assert g["share"] == pytest.approx(0.5) and g["gain"] == pytest.approx(0.25) and g["n_seeds"] == 2
    assert S.recovered_share(REGIMES[1], by, "lf-ttrl", "StrongNoisy", n_boot=100)["share"] == pytest.approx(0.0)
    text = S.store_report(str(tmp_path), "test", regimes=REGIMES, n_boot=100)
    assert "not paired" not in text  # nothing is paired across warm-ups
    labeled, label_free = text.split("## Regime `label-free`")
    assert "Paired differences against `grpo`" in labeled and "| ed | StrongGSR | +25.0 |" in labeled
    assert "Paired differences against `lf-grpo-labels`" in label_free
    assert "| lf-distill | StrongGSR | -25.0 |" in label_free and "| lf-ttrl | StrongGSR | -50.0 |" in label_free
    assert "| lf-distill | StrongGSR | 2 | +25.0 | +50.0 | 50 % | [50 %, 50 %] |" in label_free
    contrast = label_free.split("### `lf-distill` - `lf-ttrl`, paired")[1]
    assert "| lf-distill | StrongGSR | +25.0 |" in contrast
    table = S.readme_table(str(tmp_path), "test", REGIMES, n_boot=100)
    assert ("| lf-distill | 2 | 100.0 ±0.0 | 75.0 ±0.0 | 50.0 ±0.0 | +0.0 [+0.0, +0.0] | -12.5 [-12.5, -12.5] | "
            "-25.0 [-25.0, -25.0] |") in table
    assert "`lf-distill` recovers 50 % of `lf-grpo-labels`'s Strong GSR gain" in table


def test_the_snr_figure_is_written_and_an_empty_regime_is_skipped_with_a_note(tmp_path):
    store, figs = tmp_path / "store", tmp_path / "figs"
    figs.mkdir()
    _store(store, label_free=False, n_items=3)
    text = S.store_report(str(store), "test", regimes=REGIMES, n_boot=50, plot_dir=figs)
    png = figs / "snr_curves_labeled.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert "](snr_curves_labeled.png)" in text and "min–max over seeds" in text
    assert not (figs / "snr_curves_label-free.png").exists()
    assert "No runs of `lf-grpo-labels`, `lf-distill`, `lf-ttrl` in the store yet" in text
    assert "label-free: no runs yet." in S.readme_table(str(store), "test", REGIMES, n_boot=50)


def test_regimes_from_spec():
    spec = {"warmups": {"full": {}, "frac30": {}},
            "methods": {"grpo": {"warmup": "full"}, "ed": {"warmup": "full"}, "lf-a": {"warmup": "frac30"},
                        "lf-b": {"warmup": "frac30"}}}
    default = S.regimes_from_spec(spec)  # one per warm-up, against its first method
    assert [(r.name, r.baseline, r.methods, r.warmup) for r in default] == \
        [("full", "grpo", ("grpo", "ed"), "warmup-full"), ("frac30", "lf-a", ("lf-a", "lf-b"), "warmup-frac30")]
    spec["regimes"] = {"lf": {"warmup": "frac30", "baseline": "lf-b", "recovered": ["StrongGSR"],
                              "contrasts": [["lf-a", "lf-b"]]}}
    (lf,) = S.regimes_from_spec(spec)
    assert lf.baseline == "lf-b" and lf.recovered == ("StrongGSR",) and lf.contrasts == (("lf-a", "lf-b"),)
    spec["regimes"]["lf"]["baseline"] = "grpo"  # another warm-up's method cannot be this regime's baseline
    with pytest.raises(UserError, match="grpo not among its methods"):
        S.regimes_from_spec(spec)


def test_noaudio_is_accuracy_on_silent_audio_and_absent_without_it():
    from echodistill.eval.seeds import compare, item_scores

    def rows(silent_right):
        out = []
        for i, ok in enumerate(silent_right):
            out.append({"id": f"i{i}", "condition": "clean", "correct": True, "invalid": False, "answer": "a"})
            out.append({"id": f"i{i}", "condition": "silent", "correct": ok, "invalid": False, "answer": "a"})
        return out

    assert item_scores(rows([True, False, False]), "NoAudio") == {"i0": 1.0, "i1": 0.0, "i2": 0.0}
    c = compare([rows([True, False, False])] * 2, [rows([False, False, False])] * 2, "NoAudio", n_boot=50)
    assert abs(c["diff"] - 1 / 3) < 1e-9
    no_silent = [[r for r in rows([True]) if r["condition"] == "clean"]] * 2
    assert compare(no_silent, no_silent, "NoAudio", n_boot=50) is None
