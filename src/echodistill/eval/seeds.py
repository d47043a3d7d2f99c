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
* **Three-level bootstrap** (warm-ups as a level, round 4): warm-ups, then seeds within each drawn
  warm-up, then items; ``compare_nested`` also gives each warm-up's own estimate. Bootstrap p-values
  and Holm's adjustment make the pre-registered decision (docs/preregistration-round4.md).
* **Power**: from pilot variances (between-seed variance of ``d_s``, within-seed item variance), the
  number of seeds for which a true difference ``delta`` is detected with probability ``power``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence

import numpy as np

from ..errors import UserError

METRICS = ("Acc", "Noisy", "StrongNoisy", "GSR", "StrongGSR", "Consistency", "NoAudio", "Invalid")
# The reasoning format's evidence figures per item (eval/evidence.py), for seed-aware comparisons.
EVIDENCE_METRICS = ("CleanEvidenceF1", "EvidenceF1", "StrongEvidenceF1", "RightWrongReason", "Hallucinated")


def item_scores(rows: Iterable[dict], metric: str, strong_snr_max: float = 0.0) -> dict[str, float]:
    """Per item, the metric's value over that item's conditions (item id -> value in [0, 1]).

    ``Acc``: clean correct. ``Noisy``/``StrongNoisy``: mean noisy correctness (all / SNR <= strong).
    ``GSR``/``StrongGSR``: mean over noisy cells of (noisy correct and clean correct).
    ``Consistency``: mean over noisy cells of (noisy answer == clean answer, both valid).
    ``NoAudio``: correct on silent audio (the text-prior control; items evaluated silent only).
    ``Invalid``: share of clean+noisy answers naming no choice.
    Reasoning format (``EVIDENCE_METRICS``): ``CleanEvidenceF1``, ``EvidenceF1`` / ``StrongEvidenceF1``
    (mean over the noisy cells), ``RightWrongReason`` (among the item's correct noisy answers, the share
    whose evidence is not exact), ``Hallucinated`` (silent audio).
    """
    if metric in EVIDENCE_METRICS:
        return _evidence_scores(rows, metric, strong_snr_max)
    clean: dict[str, dict] = {}
    noisy: dict[str, list[dict]] = defaultdict(list)
    silent: dict[str, dict] = {}
    for r in rows:
        if r["condition"] == "silent":
            silent[r["id"]] = r
        elif r["condition"] == "clean":
            clean[r["id"]] = r
        elif r["condition"] == "noisy":
            if metric.startswith("Strong") and float(r["snr"]) > strong_snr_max:
                continue
            noisy[r["id"]].append(r)
    if metric == "NoAudio":
        return {i: float(r["correct"]) for i, r in silent.items()}
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


def _evidence_scores(rows: Iterable[dict], metric: str, strong_snr_max: float) -> dict[str, float]:
    from .evidence import implied_answers, row_values

    rows = list(rows)
    implied = implied_answers(rows)
    name, cond = {"CleanEvidenceF1": ("EvidenceF1", "clean"), "EvidenceF1": ("EvidenceF1", "noisy"),
                  "StrongEvidenceF1": ("EvidenceF1", "noisy"), "RightWrongReason": ("RightWrongReason", "noisy"),
                  "Hallucinated": ("Hallucinated", "silent")}[metric]
    vals: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        if r["condition"] != cond or (metric.startswith("Strong") and float(r["snr"]) > strong_snr_max):
            continue
        v = row_values(r, implied)[name]
        if v is not None:
            vals[str(r["id"])].append(v)
    return {i: float(np.mean(v)) for i, v in vals.items()}


def score_matrix(row_sets: Sequence[Iterable[dict]], metric: str, strong_snr_max: float = 0.0,
                 items: Optional[Sequence[str]] = None) -> tuple[np.ndarray, list[str]]:
    """``S [seeds, items]`` over the items every run has (or ``items``), and the item ids."""
    per = [item_scores(rows, metric, strong_snr_max) for rows in row_sets]
    ids = sorted(set.intersection(*(set(p) for p in per))) if items is None else list(items)
    return np.array([[p[i] for i in ids] for p in per], dtype=np.float64), ids


def two_level_bootstrap(D: np.ndarray, n_boot: int = 2000, seed: int = 0) -> np.ndarray:
    """Replicates of the mean of ``D [seeds, items]``, resampling seeds then items (returns ``[n_boot]``)."""
    return _two_level_means([D], n_boot, seed)[0]


def _two_level_means(Ds: Sequence[np.ndarray], n_boot: int, seed: int) -> list[np.ndarray]:
    """Replicate means of several ``[seeds, items]`` matrices under the *same* seed and item draws, so a
    statistic of several of them (a ratio) is resampled with its parts' correlation kept."""
    S, I = Ds[0].shape
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, S, size=(n_boot, S))
    # drawing I items with replacement = multinomial counts per item: weights [n_boot, I]
    item_w = rng.multinomial(I, np.full(I, 1.0 / I), size=n_boot) / I
    # item_w @ D.T: [n_boot, S], each seed's mean over the drawn items
    return [np.take_along_axis(item_w @ D.T, seeds, axis=1).mean(1) for D in Ds]


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
            n_boot: int = 2000, seed: int = 0) -> Optional[dict]:
    """Paired difference a - b (runs given seed by seed, same order) with both kinds of interval; None
    when no item has the metric (e.g. NoAudio on an evaluation without the silent condition). On the
    items every run of both has (one side may have evaluated a subset)."""
    a, b = list(a), list(b)
    X, ids = score_matrix([*a, *b], metric, strong_snr_max)  # one pass, on the items all runs have
    if not ids:
        return None
    D = X[:len(a)] - X[len(a):]
    low, high = two_level_interval(D, n_boot, seed)
    return {"metric": metric, "diff": float(D.mean()), "boot_low": low, "boot_high": high,
            "t": seed_t_test(D), "n_items": len(ids),
            "var_between_seeds": float(D.mean(1).var(ddof=1)) if D.shape[0] > 1 else None,
            "var_items": float(D.var(1, ddof=1).mean()) if D.shape[1] > 1 else None}


def gain_recovered(M: np.ndarray, B: np.ndarray, W: np.ndarray, n_boot: int = 2000, seed: int = 0,
                   level: float = 0.95) -> dict:
    """Share of the baseline's gain over the warm-up that a method recovers: ``(M - W) / (B - W)``.

    ``M``, ``B``: ``[seeds, items]`` of the method and the baseline, seed-paired rows; ``W``: the warm-up's
    ``[items]`` (one run). The share is the ratio of the mean gains, not the mean of per-seed ratios: a
    seed whose baseline gain is small would blow its ratio up. Its interval is the two-level bootstrap
    (paired seeds, then items, the same draws for numerator and denominator) of that ratio, except when
    the baseline's own gain is not above zero at that level (more than ``(1 - level) / 2`` of the
    replicates <= 0): a ratio whose denominator may be zero has no finite interval, so ``low``/``high``
    are None and ``unbounded`` is True. ``den_nonpositive``: that share of replicates.
    """
    num, den = M - W[None, :], B - W[None, :]
    nb, db = _two_level_means([num, den], n_boot, seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = nb / db
        per_seed = num.mean(1) / den.mean(1)
    g_m, g_b = float(num.mean()), float(den.mean())
    den_nonpositive = float(np.mean(db <= 0))
    unbounded = den_nonpositive > (1 - level) / 2
    low = high = None
    if not unbounded:
        low, high = (float(np.percentile(ratio, q)) for q in (50 - 50 * level, 50 + 50 * level))
    return {"share": g_m / g_b if g_b else None, "low": low, "high": high, "unbounded": unbounded, "gain": g_m,
            "base_gain": g_b, "per_seed": [float(x) for x in per_seed], "n_seeds": M.shape[0],
            "n_items": M.shape[1], "den_nonpositive": den_nonpositive}


def _blocks(D: Sequence[np.ndarray]) -> list[np.ndarray]:
    blocks = [np.asarray(b, dtype=np.float64) for b in D]
    if not blocks or any(b.ndim != 2 or b.shape[0] < 1 for b in blocks):
        raise ValueError("three-level data: one [seeds, items] matrix (>= 1 seed) per warm-up")
    if len({b.shape[1] for b in blocks}) != 1:
        raise ValueError("three-level data: every warm-up's matrix must cover the same items")
    return blocks


def nested_mean(D: Sequence[np.ndarray]) -> float:
    """The estimate the three-level bootstrap resamples: the mean over warm-ups of each warm-up's mean
    over its seeds and the items (each warm-up weighs the same, however many seeds it has)."""
    return float(np.mean([b.mean() for b in _blocks(D)]))


def three_level_bootstrap(D: Sequence[np.ndarray], n_boot: int = 10_000, seed: int = 0) -> np.ndarray:
    """Replicates ``[n_boot]`` of ``nested_mean(D)``, resampling warm-ups, then seeds within each drawn
    warm-up, then items.

    ``D``: one ``[seeds_w, items]`` matrix of paired differences per warm-up (seeds nested in their
    warm-up; items shared by all). Each replicate draws W warm-ups with replacement; every drawn slot
    draws its own seeds with replacement from that warm-up (a warm-up drawn twice gets two independent
    seed draws); the items are drawn once per replicate, the same for every run (items are shared), as
    multinomial weights. With few warm-ups the outer level is understated (variance x (W-1)/W: 2/3 at
    W = 3), which is why the report shows each warm-up's own estimate beside the pooled one.
    """
    blocks = _blocks(D)
    W, I = len(blocks), blocks[0].shape[1]
    rng = np.random.default_rng(seed)
    item_w = rng.multinomial(I, np.full(I, 1.0 / I), size=n_boot) / I  # [n_boot, I]
    picks = rng.integers(0, W, size=(n_boot, W))  # the warm-up drawn into each slot
    slot_means = np.empty((n_boot, W))
    for w, b in enumerate(blocks):
        per_seed = item_w @ b.T  # [n_boot, S_w]: each seed's mean over the drawn items
        S = b.shape[0]
        # a seed draw for every slot, used where this warm-up was drawn into that slot
        draws = rng.integers(0, S, size=(n_boot, W, S))
        means = np.take_along_axis(per_seed[:, None, :].repeat(W, 1), draws, axis=2).mean(2)  # [n_boot, W]
        slot_means = np.where(picks == w, means, slot_means)
    return slot_means.mean(1)


def three_level_interval(D: Sequence[np.ndarray], n_boot: int = 10_000, seed: int = 0,
                         level: float = 0.95) -> tuple[float, float]:
    """The three-level bootstrap percentile interval of ``nested_mean(D)``."""
    boot = three_level_bootstrap(D, n_boot, seed)
    return float(np.percentile(boot, 50 - 50 * level)), float(np.percentile(boot, 50 + 50 * level))


def bootstrap_p(boot: np.ndarray) -> float:
    """Two-sided bootstrap p-value of "the mean is 0": ``2 min(P(b <= 0), P(b >= 0))``, at least 1/n."""
    b = np.asarray(boot)
    return float(min(1.0, max(2 * min(np.mean(b <= 0), np.mean(b >= 0)), 1.0 / len(b))))


def holm(pvalues: Mapping[str, float]) -> dict[str, float]:
    """Holm-adjusted p-values (family-wise error control over the tests given), by name."""
    order = sorted(pvalues, key=lambda k: pvalues[k])
    out, running, m = {}, 0.0, len(order)
    for rank, k in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[k]))
        out[k] = running
    return out


def compare_nested(a: Mapping, b: Mapping, metric: str, strong_snr_max: float = 0.0, n_boot: int = 10_000,
                   seed: int = 0) -> Optional[dict]:
    """Paired a - b with warm-ups as a level. ``a``, ``b``: warm-up -> {seed: rows}; only the (warm-up,
    seed) pairs both have count, on the items every run of both has. Returns the nested mean, the
    three-level 95 % interval and p, each warm-up's own estimate (two-level interval over its seeds and
    items) and the counts; None when nothing pairs."""
    keys = [(w, s) for w in sorted(set(a) & set(b), key=str) for s in sorted(set(a[w]) & set(b[w]), key=str)]
    if not keys:
        return None
    X, ids = score_matrix([*(a[w][s] for w, s in keys), *(b[w][s] for w, s in keys)], metric, strong_snr_max)
    if not ids:
        return None
    D = X[:len(keys)] - X[len(keys):]
    warmups = list(dict.fromkeys(w for w, _ in keys))
    blocks = [D[[k for k, (w2, _) in enumerate(keys) if w2 == w]] for w in warmups]
    boot = three_level_bootstrap(blocks, n_boot, seed)
    lo, hi = (float(np.percentile(boot, q)) for q in (2.5, 97.5))
    per_warmup = []
    for w, blk in zip(warmups, blocks):
        wlo, whi = two_level_interval(blk, min(n_boot, 2000), seed)
        per_warmup.append({"warmup": w, "diff": float(blk.mean()), "low": wlo, "high": whi, "n_seeds": len(blk),
                           "per_seed": [float(x) for x in blk.mean(1)]})
    return {"metric": metric, "diff": nested_mean(blocks), "low": lo, "high": hi, "p": bootstrap_p(boot),
            "n_warmups": len(blocks), "n_pairs": len(keys), "n_items": len(ids), "n_boot": n_boot,
            "per_warmup": per_warmup}


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
@dataclass(frozen=True)
class Regime:
    """Methods compared with each other: they start from one warm-up and are paired against ``baseline``.

    ``methods``: the regime's trained methods (the baseline among them), in the order to list them;
    ``warmup``: the warm-up's method name in the store (``warmup-<key>``), drawn and listed with them;
    ``recovered``: metrics on which each method's share of the baseline's gain over the warm-up is
    reported; ``contrasts``: further paired differences ``(a, b)``, read as a - b.
    """
    name: str
    baseline: str
    methods: tuple[str, ...]
    warmup: Optional[str] = None
    recovered: tuple[str, ...] = ()
    contrasts: tuple[tuple[str, str], ...] = ()


def regimes_from_spec(spec: Mapping) -> list[Regime]:
    """The regimes of an experiment spec (``configs/experiments/*.yaml``).

    Its ``regimes:`` section maps a name to ``{warmup: <warm-up key>, baseline: <method>, recovered:
    [metrics], contrasts: [[a, b], ...]}``; a regime's methods are the spec's methods with that warm-up.
    Without the section: one regime per warm-up, named after it and paired against its first method.
    """
    methods = spec["methods"]
    sections = spec.get("regimes") or {w: {"warmup": w} for w in spec["warmups"]}
    out = []
    for name, r in sections.items():
        own = tuple(m for m, cfg in methods.items() if cfg["warmup"] == r["warmup"])
        base = r.get("baseline") or (own[0] if own else None)
        if base is None:
            continue
        named = [base, *(m for c in r.get("contrasts") or () for m in c)]
        if any(m not in own for m in named):
            raise UserError(f"regime {name!r}: {', '.join(m for m in named if m not in own)} not among its methods "
                            f"(the spec's methods with warm-up {r['warmup']!r}: {', '.join(own) or 'none'})")
        out.append(Regime(str(name), base, own, f"warmup-{r['warmup']}", tuple(r.get("recovered") or ()),
                          tuple(tuple(c) for c in r.get("contrasts") or ())))
    return out


def _pct(x: Optional[float], signed: bool = False) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    return f"{100 * x:+.1f}" if signed else f"{100 * x:.1f}"


def _share(x: Optional[float]) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{100 * x:.0f} %"


def _share_interval(g: dict, baseline: str) -> str:
    if g["unbounded"]:
        return f"unbounded: `{baseline}`'s own gain is not above 0 at 95 %"
    return f"[{_share(g['low'])}, {_share(g['high'])}]"


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _head(cells: Sequence[str]) -> list[str]:
    return [_row(cells), "|" + "---|" * len(cells)]


def _by_method(runs) -> dict[str, list]:
    out: dict[str, list] = defaultdict(list)
    for r in runs:
        out[r.method].append(r)
    return out


def _mean_sd(rs, metric: str, strong_snr_max: float) -> str:
    """Mean over seeds of the item mean, with the seeds' standard deviation when there are several."""
    S, ids = score_matrix([r.rows for r in rs], metric, strong_snr_max)
    if not ids:  # e.g. NoAudio without the silent condition
        return "-"
    per_seed = S.mean(1)
    spread = f" ±{100 * per_seed.std(ddof=1):.1f}" if len(per_seed) > 1 else ""
    return _pct(float(per_seed.mean())) + spread


def _paired(a, b, metric: str, strong_snr_max: float, n_boot: int) -> Optional[dict]:
    """``compare`` of two methods' runs over their seed pairs (None: no common seed; UserError: not pairable)."""
    from .store import paired_runs

    pairs = paired_runs(a, b)
    if not pairs:
        return None
    return compare([p[0].rows for p in pairs], [p[1].rows for p in pairs], metric, strong_snr_max, n_boot)


def _diff_lines(label: str, a, b, metrics: Sequence[str], strong_snr_max: float, n_boot: int) -> list[str]:
    """Rows of a paired-differences table for ``a - b``, one per metric (a note row when not pairable)."""
    lines = []
    for m in metrics:
        try:
            c = _paired(a, b, m, strong_snr_max, n_boot)
        except UserError as e:  # different warm-ups: say so instead of pairing
            return [f"| {label} | - | not paired: {e} | | | | |"]
        if c is None:  # no common seed, or no item with this metric
            continue
        t = c["t"]
        p = "-" if t["p"] is None else f"{t['p']:.2f}"
        lines.append(f"| {label} | {m} | {_pct(c['diff'], True)} | [{_pct(c['boot_low'], True)}, "
                     f"{_pct(c['boot_high'], True)}] | [{_pct(t['ci_low'], True)}, {_pct(t['ci_high'], True)}] "
                     f"| {p} | " + ", ".join(_pct(x, True) for x in t["per_seed"]) + " |")
    return lines


PAIRED_HEAD = ("method", "metric", "diff", "boot 95 %", "t 95 %", "p", "per seed")
PAIRED_NOTE = ("Same seeds, same warm-up (checked by its sha256), same items. `boot`: two-level bootstrap 95 % "
               "interval (seeds, then items); `t`: seed-level paired t interval; per-seed values after.")
RECOVERED_NOTE = ("(method - warm-up) / (baseline - warm-up) from the means over paired seeds and items: a ratio "
                  "of means, since a per-seed ratio divides by one seed's small, noisy baseline gain; 95 %: the "
                  "two-level bootstrap (paired seeds, then items, the same draws above and below the line) of "
                  "that ratio. Gains in points.")


def recovered_share(reg: Regime, by_method: Mapping[str, list], method: str, metric: str,
                    strong_snr_max: float = 0.0, n_boot: int = 2000) -> Optional[dict]:
    """``gain_recovered`` of ``method`` in ``reg`` on ``metric`` (None when a part has no run yet).

    Raises ``UserError`` when the method, its baseline and the warm-up did not all start from the same weights.
    """
    from .store import paired_runs

    warm, base, own = by_method.get(reg.warmup), by_method.get(reg.baseline), by_method.get(method)
    if not (warm and base and own):
        return None
    paired_runs(own, warm)  # the method starts from this warm-up (raises otherwise)
    pairs = paired_runs(own, base)
    if not pairs:
        return None
    n = len(pairs)
    # one score matrix over all three, so every part is scored on the same items
    X, _ = score_matrix([*(a.rows for a, _ in pairs), *(b.rows for _, b in pairs), warm[0].rows], metric,
                        strong_snr_max)
    return gain_recovered(X[:n], X[n:2 * n], X[2 * n], n_boot)


def _recovered_lines(reg: Regime, by_method: Mapping[str, list], strong_snr_max: float, n_boot: int) -> list[str]:
    rows = []
    for m in reg.methods:
        if m == reg.baseline or not by_method.get(m):
            continue
        for metric in reg.recovered:
            try:
                g = recovered_share(reg, by_method, m, metric, strong_snr_max, n_boot)
            except UserError as e:
                rows.append(_row([m, metric, f"not paired: {e}", "", "", "", "", ""]))
                break
            if g is None:
                continue
            rows.append(_row([m, metric, str(g["n_seeds"]), _pct(g["gain"], True), _pct(g["base_gain"], True),
                              _share(g["share"]), _share_interval(g, reg.baseline),
                              ", ".join(_share(x) for x in g["per_seed"])]))
    if not rows:
        return []
    return [f"### Share of `{reg.baseline}`'s gain over `{reg.warmup}` recovered", "", RECOVERED_NOTE, "",
            *_head(["method", "metric", "seeds", "gain", f"`{reg.baseline}` gain", "share", "95 %", "per seed"]),
            *rows, ""]


def _figure_lines(reg: Regime, by_method: Mapping[str, list], present: Sequence[str], plot_dir: Path,
                  strong_snr_max: float) -> list[str]:
    from .store_plots import BAND, snr_curves

    shown = ([reg.warmup] if by_method.get(reg.warmup) else []) + list(present)
    name = f"snr_curves_{reg.name}.png"
    snr_curves({m: by_method[m] for m in shown}, Path(plot_dir) / name, warmup=reg.warmup,
               strong_snr_max=strong_snr_max, title=f"{reg.name} regime")
    return [f"![accuracy vs SNR, {reg.name} regime]({name})", "",
            f"Accuracy vs SNR (`{name}`): line = mean over seeds, band = {BAND}, dashed = the warm-up (one run), "
            "square at the right = clean accuracy; top: mean over noise types, below: one panel per type.", ""]


def _regime_lines(reg: Regime, by_method: Mapping[str, list], metrics: Sequence[str], strong_snr_max: float,
                  n_boot: int, plot_dir: Optional[Path]) -> list[str]:
    """One regime's section: its figure, paired differences against its baseline, shares, contrasts."""
    present = [m for m in reg.methods if by_method.get(m)]
    lines = [f"## Regime `{reg.name}`" + (f" (from `{reg.warmup}`)" if reg.warmup else ""), ""]
    if not present:
        return lines + [f"No runs of {', '.join(f'`{m}`' for m in reg.methods)} in the store yet: figure and "
                        "comparisons skipped.", ""]
    if plot_dir is not None:
        lines += _figure_lines(reg, by_method, present, plot_dir, strong_snr_max)
    base = by_method.get(reg.baseline)
    if not base:
        lines += [f"No `{reg.baseline}` run yet: no paired differences.", ""]
    else:
        lines += [f"### Paired differences against `{reg.baseline}`", "", PAIRED_NOTE, "", *_head(PAIRED_HEAD)]
        for m in present:
            if m != reg.baseline:
                lines += _diff_lines(m, by_method[m], base, metrics, strong_snr_max, n_boot)
        lines += [""]
        lines += _recovered_lines(reg, by_method, strong_snr_max, n_boot)
    for a, b in reg.contrasts:
        if by_method.get(a) and by_method.get(b):
            lines += [f"### `{a}` - `{b}`, paired", "", *_head(PAIRED_HEAD),
                      *_diff_lines(a, by_method[a], by_method[b], metrics, strong_snr_max, n_boot), ""]
    return lines


def store_report(store: str, split: str, baseline: str = "grpo", strong_snr_max: float = 0.0,
                 title: str = "", metrics: Sequence[str] = ("Acc", "Noisy", "StrongNoisy", "GSR", "StrongGSR",
                                                             "Consistency", "NoAudio"),
                 n_boot: int = 2000, regimes: Optional[Sequence[Regime]] = None,
                 plot_dir: Optional[str | Path] = None) -> str:
    """The seed-aware comparison of the methods in ``store`` (Markdown).

    A table of every method, then per regime its paired differences against the regime's baseline, the
    shares of the baseline's gain recovered, its contrasts, and (with ``plot_dir``) its accuracy-vs-SNR
    figure written there and linked. Without ``regimes``: every method against ``baseline``.
    """
    from .store import read_store, train_log

    runs = read_store(store, split)
    by_method = _by_method(runs)
    if regimes is None:
        regimes = [Regime("all", baseline, tuple(sorted(by_method)))]
    lines = [f"# {title or store}", "", f"Split `{split}`; {len(runs)} runs from `{store}`. Values in %, mean over "
             f"seeds of the mean over items; strong noise = SNR <= {strong_snr_max:g} dB.", ""]
    lines += _head(["method", "seeds"] + list(metrics) + ["all-wrong groups", "teacher share", "teacher acc"])
    for method, rs in sorted(by_method.items()):
        cells = [method, ",".join(str(r.seed) for r in rs if r.seed is not None) or "-"]
        cells += [_mean_sd(rs, m, strong_snr_max) for m in metrics]
        logs = [train_log(store, r.name) for r in rs]
        for key in ("frac_groups_all_wrong", "teacher_adv_share", "teacher_clean_acc"):
            vals = [row[key] for lg in logs for row in lg if key in row and row[key] is not None]
            vals = [v for v in vals if isinstance(v, (int, float)) and math.isfinite(v)]
            cells.append(_pct(float(np.mean(vals))) if vals else "-")
        lines.append(_row(cells))
    lines += ["", "(± = standard deviation over seeds.)", ""]
    for reg in regimes:
        lines += _regime_lines(reg, by_method, metrics, strong_snr_max, n_boot, plot_dir)
    return "\n".join(lines) + "\n"


README_METRICS = ("Acc", "Noisy", "StrongGSR")


def _readme_diffs(rs, base, metrics: Sequence[str], strong_snr_max: float, n_boot: int) -> list[str]:
    cells = []
    for m in metrics:
        try:
            c = _paired(rs, base, m, strong_snr_max, n_boot)
        except UserError:
            return ["not paired"] * len(metrics)
        cells.append("-" if c is None else
                     f"{_pct(c['diff'], True)} [{_pct(c['boot_low'], True)}, {_pct(c['boot_high'], True)}]")
    return cells


def readme_table(store: str, split: str, regimes: Sequence[Regime], strong_snr_max: float = 0.0,
                 metrics: Sequence[str] = README_METRICS, n_boot: int = 2000) -> str:
    """The Markdown table README's Results section pastes, straight from the store.

    Per regime: its warm-up, its baseline and its other methods, each with mean ± SD over seeds and
    (not the baseline) the paired difference against the baseline with its two-level 95 % interval;
    then one line per method and recovered metric with the share of the baseline's gain recovered.
    """
    from .store import read_store

    by_method = _by_method(read_store(store, split))
    names = {"Acc": "Acc (clean)", "StrongGSR": "Strong GSR", "StrongNoisy": "Strong noisy"}
    lines = _head(["Method", "Seeds", *(names.get(m, m) for m in metrics),
                   *(f"Δ {names.get(m, m)} [95 %]" for m in metrics)])
    notes = []
    for reg in regimes:
        present = [m for m in reg.methods if by_method.get(m)]
        if not present:
            notes.append(f"{reg.name}: no runs yet.")
            continue
        base = by_method.get(reg.baseline)
        lines.append(_row([f"*{reg.name}, Δ against {reg.baseline}*"] + [""] * (1 + 2 * len(metrics))))
        order = [reg.warmup] * bool(by_method.get(reg.warmup)) + [reg.baseline] * bool(base) + \
            [m for m in present if m != reg.baseline]
        for m in order:
            rs = by_method[m]
            seeds = sum(r.seed is not None for r in rs)
            diffs = (["(baseline)" if m == reg.baseline else "-"] * len(metrics) if m in (reg.baseline, reg.warmup)
                     or not base else _readme_diffs(rs, base, metrics, strong_snr_max, n_boot))
            lines.append(_row([m, str(seeds) if seeds else "-", *(_mean_sd(rs, x, strong_snr_max) for x in metrics),
                               *diffs]))
        for m in present:
            for metric in reg.recovered if m != reg.baseline else ():
                try:
                    g = recovered_share(reg, by_method, m, metric, strong_snr_max, n_boot)
                except UserError:
                    g = None
                if g is not None:
                    notes.append(f"{reg.name}: `{m}` recovers {_share(g['share'])} of `{reg.baseline}`'s "
                                 f"{names.get(metric, metric)} gain over `{reg.warmup}` (95 % "
                                 f"{_share_interval(g, reg.baseline)}; {g['n_seeds']} paired seeds).")
    lines += ["", f"Percent, mean over seeds ± SD over seeds; strong = SNR <= {strong_snr_max:g} dB. Δ: paired "
              "difference against the regime's baseline over the seeds both have (same warm-up), 95 % two-level "
              "bootstrap interval (seeds, then items)."]
    return "\n".join(lines + [""] + notes) + "\n"


__all__ = ["METRICS", "EVIDENCE_METRICS", "item_scores", "score_matrix", "two_level_bootstrap", "two_level_interval",
           "seed_t_test", "compare", "gain_recovered", "seeds_needed", "nested_mean", "three_level_bootstrap",
           "three_level_interval",
           "bootstrap_p", "holm", "compare_nested", "Regime", "regimes_from_spec", "recovered_share", "store_report",
           "readme_table"]
