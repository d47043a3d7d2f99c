"""Comparisons that include seed variance: per-seed values, a two-level bootstrap, a seed-level t-test,
and the power analysis that sizes an experiment. Pure numpy (+ scipy's t distribution).

A *score matrix* ``S [seeds, items]`` holds one method's per-item value of a metric for each training
seed (e.g. Noisy: the item's accuracy over the noisy cells). Two methods are compared on the same
items and, seed by seed, from the same warm-up: ``D = S_a - S_b``.

* **Two-level bootstrap** (paired): each replicate draws seeds with replacement, then items with
  replacement (the same items for every seed drawn: items are shared), and averages ``D`` over the
  draw. Its spread covers both sources of variation -- the training run and the test items -- where
  an item-only bootstrap treats the runs as fixed and is too narrow. The 95 % percentile interval;
  on synthetic data with a known truth (seed effects, shared item effects, seed x item noise) it
  covers 93-99 % with 3-10 seeds (it counts the seed x item noise twice, which offsets the few-seed
  shrinkage); the tests check it.
* **Seed-level paired t-test**: the per-seed mean differences ``d_s = mean_items D[s]`` with a t
  interval on ``S - 1`` degrees of freedom. It treats the items as fixed (the question: would other
  training seeds on *these* items agree?), so it is narrower than the bootstrap when items differ.
* **Power**: from pilot variances (between-seed variance of ``d_s``, within-seed item variance), the
  number of seeds for which a true difference ``delta`` is detected with probability ``power``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Iterable, Optional, Sequence

import numpy as np

METRICS = ("Acc", "Noisy", "StrongNoisy", "GSR", "StrongGSR", "Consistency", "Invalid")


def item_scores(rows: Iterable[dict], metric: str, strong_snr_max: float = 0.0) -> dict[str, float]:
    """Per item, the metric's value over that item's conditions (item id -> value in [0, 1]).

    ``Acc``: clean correct. ``Noisy``/``StrongNoisy``: mean noisy correctness (all / SNR <= strong).
    ``GSR``/``StrongGSR``: mean over noisy cells of (noisy correct and clean correct).
    ``Consistency``: mean over noisy cells of (noisy answer == clean answer, both valid).
    ``Invalid``: share of clean+noisy answers naming no choice.
    """
    clean: dict[str, dict] = {}
    noisy: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if r["condition"] == "clean":
            clean[r["id"]] = r
        elif r["condition"] == "noisy":
            if metric.startswith("Strong") and float(r["snr"]) > strong_snr_max:
                continue
            noisy[r["id"]].append(r)
    out = {}
    for i, c in clean.items():
        cells = noisy.get(i, [])
        if metric == "Acc":
            out[i] = float(c["correct"])
        elif metric == "Invalid":
            out[i] = float(np.mean([c["invalid"]] + [n["invalid"] for n in cells]))
        elif not cells:
            continue
        elif metric in ("Noisy", "StrongNoisy"):
            out[i] = float(np.mean([n["correct"] for n in cells]))
        elif metric in ("GSR", "StrongGSR"):
            out[i] = float(np.mean([n["correct"] and c["correct"] for n in cells]))
        elif metric == "Consistency":
            out[i] = float(np.mean([(not n["invalid"]) and (not c["invalid"]) and n["answer"] == c["answer"]
                                    for n in cells]))
        else:
            raise ValueError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
    return out


def score_matrix(row_sets: Sequence[Iterable[dict]], metric: str, strong_snr_max: float = 0.0,
                 items: Optional[Sequence[str]] = None) -> tuple[np.ndarray, list[str]]:
    """``S [seeds, items]`` over the items every run has (or ``items``), and the item ids."""
    per = [item_scores(rows, metric, strong_snr_max) for rows in row_sets]
    ids = sorted(set.intersection(*(set(p) for p in per))) if items is None else list(items)
    return np.array([[p[i] for i in ids] for p in per], dtype=np.float64), ids


def two_level_bootstrap(D: np.ndarray, n_boot: int = 2000, seed: int = 0) -> np.ndarray:
    """Replicates of the mean of ``D [seeds, items]``, resampling seeds then items (returns ``[n_boot]``)."""
    S, I = D.shape
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, S, size=(n_boot, S))
    # drawing I items with replacement = multinomial counts per item: weights [n_boot, I]
    item_w = rng.multinomial(I, np.full(I, 1.0 / I), size=n_boot) / I
    per_seed = item_w @ D.T  # [n_boot, S]: each seed's mean over the drawn items
    return np.take_along_axis(per_seed, seeds, axis=1).mean(1)


def two_level_interval(D: np.ndarray, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """The two-level bootstrap percentile interval of the mean of ``D [seeds, items]``."""
    boot = two_level_bootstrap(D, n_boot, seed)
    return float(np.percentile(boot, 50 - 50 * level)), float(np.percentile(boot, 50 + 50 * level))


def seed_t_test(D: np.ndarray) -> dict:
    """Seed-level paired t statistics from ``D [seeds, items]``: mean, 95 % t interval, p (two-sided)."""
    from scipy import stats

    d = D.mean(1)
    S = len(d)
    out = {"mean": float(d.mean()), "per_seed": [float(x) for x in d], "n_seeds": S}
    if S < 2:
        return {**out, "ci_low": None, "ci_high": None, "p": None}
    se = d.std(ddof=1) / math.sqrt(S)
    q = stats.t.ppf(0.975, S - 1)
    t = d.mean() / se if se > 0 else math.copysign(math.inf, d.mean()) if d.mean() else 0.0
    p = float(2 * stats.t.sf(abs(t), S - 1)) if math.isfinite(t) else 0.0
    return {**out, "ci_low": float(d.mean() - q * se), "ci_high": float(d.mean() + q * se), "p": p}


def compare(a: Sequence[Iterable[dict]], b: Sequence[Iterable[dict]], metric: str, strong_snr_max: float = 0.0,
            n_boot: int = 2000, seed: int = 0) -> dict:
    """Paired difference a - b (runs given seed by seed, same order) with both kinds of interval."""
    A, ids = score_matrix(a, metric, strong_snr_max)
    B, _ = score_matrix(b, metric, strong_snr_max, ids)
    D = A - B
    low, high = two_level_interval(D, n_boot, seed)
    return {"metric": metric, "diff": float(D.mean()), "boot_low": low, "boot_high": high,
            "t": seed_t_test(D), "n_items": len(ids),
            "var_between_seeds": float(D.mean(1).var(ddof=1)) if D.shape[0] > 1 else None,
            "var_items": float(D.var(1, ddof=1).mean()) if D.shape[1] > 1 else None}


def seeds_needed(delta: float, var_between_seeds: float, var_items: float, n_items: int, power: float = 0.8,
                 alpha: float = 0.05, max_seeds: int = 200) -> Optional[int]:
    """Smallest number of paired seeds for which a seed-level two-sided t-test detects ``delta``.

    The variance of one seed's mean difference is ``var_between_seeds`` (which already contains the
    item noise of the pilot's ``n_items``); ``var_items`` is kept for scaling to another item count.
    Power uses the noncentral t distribution.
    """
    from scipy import stats

    v = max(var_between_seeds, 1e-12)
    for S in range(2, max_seeds + 1):
        df = S - 1
        nc = delta / math.sqrt(v / S)
        q = stats.t.ppf(1 - alpha / 2, df)
        if stats.nct.sf(q, df, nc) + stats.nct.cdf(-q, df, nc) >= power:
            return S
    return None


# ------------------------------------------------------------------ Markdown from a results store
def _pct(x: Optional[float], signed: bool = False) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    return f"{100 * x:+.1f}" if signed else f"{100 * x:.1f}"


def store_report(store: str, split: str, baseline: str = "grpo", strong_snr_max: float = 0.0,
                 title: str = "", metrics: Sequence[str] = ("Acc", "Noisy", "StrongNoisy", "GSR", "StrongGSR"),
                 n_boot: int = 2000) -> str:
    """The seed-aware comparison of every method in ``store`` against ``baseline`` (Markdown)."""
    from .store import paired_runs, read_store, train_log

    runs = read_store(store, split)
    by_method: dict[str, list] = defaultdict(list)
    for r in runs:
        by_method[r.method].append(r)
    lines = [f"# {title or store}", "", f"Split `{split}`; {len(runs)} runs from `{store}`. Values in %, mean over "
             f"seeds of the mean over items; strong noise = SNR <= {strong_snr_max:g} dB.", ""]
    head = ["method", "seeds"] + list(metrics) + ["all-wrong groups", "teacher share", "teacher acc"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, rs in sorted(by_method.items()):
        cells = [method, ",".join(str(r.seed) for r in rs if r.seed is not None) or "-"]
        for m in metrics:
            S, _ = score_matrix([r.rows for r in rs], m, strong_snr_max)
            per_seed = S.mean(1)
            spread = f" ±{100 * per_seed.std(ddof=1):.1f}" if len(per_seed) > 1 else ""
            cells.append(_pct(float(per_seed.mean())) + spread)
        logs = [train_log(store, r.name) for r in rs]
        for key in ("frac_groups_all_wrong", "teacher_adv_share", "teacher_clean_acc"):
            vals = [row[key] for lg in logs for row in lg if key in row and row[key] is not None]
            vals = [v for v in vals if isinstance(v, (int, float)) and math.isfinite(v)]
            cells.append(_pct(float(np.mean(vals))) if vals else "-")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "(± = standard deviation over seeds.)", ""]
    base = by_method.get(baseline)
    if base:
        lines += [f"## Paired differences against `{baseline}`", "",
                  "Same seeds, same warm-up (checked by its sha256), same items. `boot`: two-level bootstrap "
                  "95 % interval (seeds, then items); `t`: seed-level paired t interval; per-seed values after.", ""]
        head = ["method", "metric", "diff", "boot 95 %", "t 95 %", "p", "per seed"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for method, rs in sorted(by_method.items()):
            if method == baseline:
                continue
            try:
                pairs = paired_runs(rs, base)
            except Exception as e:  # different warm-ups: say so instead of pairing
                lines.append(f"| {method} | - | not paired: {e} | | | | |")
                continue
            if not pairs:
                continue
            for m in metrics:
                c = compare([p[0].rows for p in pairs], [p[1].rows for p in pairs], m, strong_snr_max, n_boot)
                t = c["t"]
                p = "-" if t["p"] is None else f"{t['p']:.2f}"
                lines.append(f"| {method} | {m} | {_pct(c['diff'], True)} | [{_pct(c['boot_low'], True)}, "
                             f"{_pct(c['boot_high'], True)}] | [{_pct(t['ci_low'], True)}, {_pct(t['ci_high'], True)}] "
                             f"| {p} | " + ", ".join(_pct(x, True) for x in t["per_seed"]) + " |")
    return "\n".join(lines) + "\n"


__all__ = ["METRICS", "item_scores", "score_matrix", "two_level_bootstrap", "two_level_interval", "seed_t_test",
           "compare",
           "seeds_needed", "store_report"]
