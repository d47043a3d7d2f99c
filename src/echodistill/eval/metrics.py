"""From prediction rows to the figures of METHOD.md section 3, each with a bootstrap 95 % interval.

Pure numpy. A prediction row is a dict ``{id, task, condition, noise_type, snr, response, answer,
target, correct, invalid}`` with ``condition`` one of ``clean | noisy | silent`` (``noise_type`` and
``snr`` are set for noisy rows only). One *item* is one question (``id``); one *noise condition* is
one ``(noise_type, snr)`` cell of the evaluation grid.

Figures (keys of :func:`compute_metrics`' result):

* ``Acc`` -- accuracy on clean audio.
* ``Noisy`` -- accuracy on noisy audio: the mean of the per-cell accuracies over the
  noise type x SNR grid (equal to the plain mean over noisy rows when every item is evaluated in
  every cell). ``StrongNoisy``: the same over the cells with ``snr <= strong_snr_max``.
  Breakdowns: ``noisy_by_snr`` (mean over noise types at one SNR), ``noisy_by_noise_type`` (mean
  over SNRs for one noise type), ``by_task``.
* ``GSR`` -- see :data:`GSR_DEFINITION`; ``StrongGSR`` restricted to strong-noise cells.
* ``Consistency`` -- see :data:`CONSISTENCY_DEFINITION`; ``StrongConsistency`` likewise.
* ``Retention`` -- Noisy / Acc (computed inside every bootstrap resample, so its interval is honest).
* ``NoAudio`` -- accuracy on silent audio (the text-prior control).
* ``Invalid`` -- share of answers to real audio (clean and noisy rows) that name no offered
  choice; ``invalid_by_condition`` splits it into clean / noisy / silent (silent answers are kept
  out of the headline figure: declining to answer a silent clip is not a defect).

Every figure is ``{"value", "ci_low", "ci_high", "n", "n_obs"}``: ``n`` items, ``n_obs`` rows (or
clean/noisy pairs) behind it, and a 95 % percentile interval from a *cluster* bootstrap over items:
a resampled item brings all its conditions (and all its seeds) along, so paired figures (GSR,
Consistency, Retention) stay paired. Values are fractions in [0, 1] (``None`` where undefined).
The bootstrap is one matrix product: resample counts ``W [R, I]`` times per-item numerators and
denominators ``[I, cells]``.

Unlabeled items (rows with ``correct`` None, ``target`` None) count in the label-free figures only:
``Consistency`` (also ``consistency_by_snr``) and ``Invalid``; the accuracies, GSR and Retention are over
the labeled items (``counts.labeled_items``), None when there are none.

Several seeds of one method: :func:`combine_seeds` tags each seed's rows; every function here then
pairs clean and noisy answers within a seed, averages each item over seeds and resamples items.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from ..errors import UserError

GSR_DEFINITION = ("share of (item, noise condition) pairs answered correctly on the noisy audio "
                  "and on the clean audio")
CONSISTENCY_DEFINITION = ("share of (item, noise condition) pairs whose noisy answer names the same "
                          "choice as the clean answer, right or wrong; a pair where either answer "
                          "names no choice counts as inconsistent")
NOISY_DEFINITION = ("accuracy on noisy audio, averaged over the noise type x SNR cells of the "
                    "evaluation grid")
RETENTION_DEFINITION = "Noisy / Acc"
NOAUDIO_DEFINITION = "accuracy with silent audio (the question alone): the text-prior control"
INVALID_DEFINITION = ("share of answers to clean and noisy audio that name none of the offered choices "
                      "(silent-audio answers are reported separately)")
DEFINITIONS = {
    "Acc": "accuracy on clean audio",
    "Noisy": NOISY_DEFINITION,
    "GSR": GSR_DEFINITION,
    "Consistency": CONSISTENCY_DEFINITION,
    "Retention": RETENTION_DEFINITION,
    "NoAudio": NOAUDIO_DEFINITION,
    "Invalid": INVALID_DEFINITION,
}

HEADLINE = ("Acc", "Noisy", "StrongNoisy", "GSR", "StrongGSR", "Consistency", "StrongConsistency",
            "Retention", "NoAudio", "Invalid")
PAIRED_METRICS = ("Acc", "Noisy", "StrongNoisy", "GSR", "StrongGSR", "Consistency",
                  "StrongConsistency", "Retention", "NoAudio", "Invalid")
CONDITIONS = ("clean", "noisy", "silent")
CI_LEVEL = 0.95


# ------------------------------------------------------------------ rows -> per-item arrays
@dataclass
class _Arrays:
    ids: list
    tasks: np.ndarray  # [I] object
    cells: list  # [(noise_type, snr)]
    cell_type: np.ndarray  # [C] object
    cell_snr: np.ndarray  # [C] float
    clean_num: np.ndarray  # [I]
    clean_den: np.ndarray
    silent_num: np.ndarray
    silent_den: np.ndarray
    noisy_num: np.ndarray  # [I, C]
    noisy_den: np.ndarray
    gsr_num: np.ndarray  # [I, C]
    gsr_den: np.ndarray  # clean/noisy pairs of labeled items
    cons_num: np.ndarray
    pair_den: np.ndarray  # clean/noisy pairs of every item (Consistency needs no label)
    inv_num: np.ndarray  # [I, 3] clean/noisy/silent
    inv_den: np.ndarray
    n_rows: int
    n_reps: int


def _bad(where: str, msg: str) -> UserError:
    return UserError(f"{where}: {msg}. Prediction rows come from `echodistill eval`; re-run it, or fix "
                     "the row so it has id, condition (clean|noisy|silent), correct (and noise_type, "
                     "snr for noisy rows).")


def _norm_answer(row: dict) -> Optional[str]:
    if _is_invalid(row):
        return None
    a = row.get("answer")
    if a is None:
        return None
    a = str(a).strip().casefold()
    return a or None


def _is_invalid(row: dict) -> bool:
    inv = row.get("invalid")
    if inv is None:
        return row.get("answer") in (None, "")
    return bool(inv)


def _check_row(row: Any, k: int) -> tuple:
    where = str(row.get("_where", f"prediction row {k}")) if isinstance(row, dict) else f"prediction row {k}"
    if not isinstance(row, dict):
        raise _bad(where, f"expected a JSON object, got {type(row).__name__}")
    if row.get("id") is None:
        raise _bad(where, "missing 'id'")
    cond = row.get("condition")
    if cond not in CONDITIONS:
        raise _bad(where, f"condition {cond!r} is not one of clean, noisy, silent")
    if "correct" not in row or (row["correct"] is None and row.get("target", "") is not None):
        raise _bad(where, "missing 'correct'")  # None only for an unlabeled item's row (target None)
    cell = None
    if cond == "noisy":
        nt, snr = row.get("noise_type"), row.get("snr")
        if nt is None or snr is None:
            raise _bad(where, "a noisy row needs noise_type and snr")
        try:
            snr = float(snr)
        except (TypeError, ValueError):
            raise _bad(where, f"snr {row.get('snr')!r} is not a number") from None
        cell = (str(nt), snr)
    return str(row["id"]), row.get("_rep", 0), cond, cell


def _build(rows: Iterable[dict], ids: Optional[Sequence[str]] = None,
           cells: Optional[Sequence[tuple]] = None) -> _Arrays:
    groups: dict = defaultdict(lambda: {"clean": [], "noisy": [], "silent": []})
    task_of: dict = {}
    n_rows = 0
    all_cells = set()
    for k, row in enumerate(rows):
        iid, rep, cond, cell = _check_row(row, k)
        groups[(iid, rep)][cond].append((row, cell))
        task_of.setdefault(iid, str(row.get("task") or "unknown"))
        if cell is not None:
            all_cells.add(cell)
        n_rows += 1
    if ids is None:
        ids = sorted(task_of)
    if cells is None:
        cells = sorted(all_cells)
    ids, cells = list(ids), list(cells)
    iidx = {i: n for n, i in enumerate(ids)}
    cidx = {c: n for n, c in enumerate(cells)}
    I, C = len(ids), len(cells)
    z1 = lambda: np.zeros(I)  # noqa: E731
    z2 = lambda: np.zeros((I, C))  # noqa: E731
    A = _Arrays(ids=ids, tasks=np.array([task_of.get(i, "unknown") for i in ids], dtype=object),
                cells=cells, cell_type=np.array([c[0] for c in cells], dtype=object),
                cell_snr=np.array([c[1] for c in cells], dtype=float),
                clean_num=z1(), clean_den=z1(), silent_num=z1(), silent_den=z1(),
                noisy_num=z2(), noisy_den=z2(), gsr_num=z2(), gsr_den=z2(), cons_num=z2(), pair_den=z2(),
                inv_num=np.zeros((I, 3)), inv_den=np.zeros((I, 3)), n_rows=n_rows,
                n_reps=len({rep for _, rep in groups}) if groups else 0)
    for (iid, _rep), g in groups.items():
        i = iidx.get(iid)
        if i is None:
            continue
        # unlabeled rows (correct None) count in Consistency and Invalid, never in an accuracy
        clean_ok = [bool(r["correct"]) and not _is_invalid(r) for r, _ in g["clean"] if r["correct"] is not None]
        clean_ans = [_norm_answer(r) for r, _ in g["clean"]]
        A.clean_num[i] += sum(clean_ok)
        A.clean_den[i] += len(clean_ok)
        silent_ok = [bool(r["correct"]) and not _is_invalid(r) for r, _ in g["silent"] if r["correct"] is not None]
        A.silent_num[i] += sum(silent_ok)
        A.silent_den[i] += len(silent_ok)
        clean_frac = float(np.mean(clean_ok)) if clean_ok else None
        for j, cond in enumerate(CONDITIONS):
            for r, cell in g[cond]:
                if cond == "noisy" and cell not in cidx:
                    continue
                A.inv_num[i, j] += _is_invalid(r)
                A.inv_den[i, j] += 1
        for r, cell in g["noisy"]:
            c = cidx.get(cell)
            if c is None:
                continue
            labeled = r["correct"] is not None
            ok = bool(r["correct"]) and not _is_invalid(r)
            A.noisy_num[i, c] += ok
            A.noisy_den[i, c] += labeled
            if labeled and clean_frac is not None:
                A.gsr_den[i, c] += 1
                A.gsr_num[i, c] += ok * clean_frac
            if clean_ans:
                a = _norm_answer(r)
                A.pair_den[i, c] += 1
                A.cons_num[i, c] += float(np.mean([a is not None and a == b for b in clean_ans]))
    return A


# ------------------------------------------------------------------ bootstrap machinery
def _weights(n_items: int, n_boot: int, seed: int) -> np.ndarray:
    """[1 + n_boot, I] resample counts; row 0 is all ones (the point estimate)."""
    ones = np.ones((1, n_items))
    if n_boot <= 0 or n_items == 0:
        return ones
    rng = np.random.default_rng(seed)
    W = rng.multinomial(n_items, np.full(n_items, 1.0 / n_items), size=n_boot).astype(float)
    return np.vstack([ones, W])


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.full(np.broadcast(a, b).shape, np.nan)
    np.divide(a, b, out=out, where=b > 0)
    return out


def _ratio(W, num, den) -> np.ndarray:
    return _div(W @ num, W @ den)


def _macro(W, num, den, cols) -> np.ndarray:
    cols = np.asarray(cols, bool) & (den.sum(0) > 0)
    if not cols.any():
        return np.full(W.shape[0], np.nan)
    r = _div(W @ num[:, cols], W @ den[:, cols])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(r, axis=1)


def _draws(A: _Arrays, W: np.ndarray, name: str, strong_snr_max: float,
           mask: Optional[np.ndarray] = None, cols: Optional[np.ndarray] = None) -> tuple:
    """Point estimate + bootstrap draws [1 + R] of one figure, its item count and observation count."""
    m = np.ones(len(A.ids)) if mask is None else mask.astype(float)
    m2 = m[:, None]
    allc = np.ones(len(A.cells), bool) if cols is None else cols
    strong = allc & (A.cell_snr <= strong_snr_max)

    def count(den):
        den = den * (m if den.ndim == 1 else m2)
        per_item = den if den.ndim == 1 else den.sum(1)
        return int((per_item > 0).sum()), int(round(per_item.sum()))

    if name == "Acc":
        return (_ratio(W, A.clean_num * m, A.clean_den * m),) + count(A.clean_den)
    if name == "NoAudio":
        return (_ratio(W, A.silent_num * m, A.silent_den * m),) + count(A.silent_den)
    if name in ("Noisy", "StrongNoisy"):
        cc = allc if name == "Noisy" else strong
        return (_macro(W, A.noisy_num * m2, A.noisy_den * m2, cc),) + count(A.noisy_den * cc)
    if name in ("GSR", "StrongGSR", "Consistency", "StrongConsistency"):
        cc = strong if name.startswith("Strong") else allc
        num, pairs = (A.gsr_num, A.gsr_den) if name.endswith("GSR") else (A.cons_num, A.pair_den)
        den = pairs * cc * m2
        return (_ratio(W, (num * cc * m2).sum(1), den.sum(1)),) + count(pairs * cc)
    if name == "Retention":
        noisy, n_noisy, _ = _draws(A, W, "Noisy", strong_snr_max, mask, cols)
        acc, _, _ = _draws(A, W, "Acc", strong_snr_max, mask, cols)
        both = (A.clean_den * m > 0) & ((A.noisy_den * allc * m2).sum(1) > 0)
        return _div(noisy, acc), int(both.sum()), int(both.sum())
    if name == "Invalid" or name.startswith("Invalid/"):
        j = [0, 1] if name == "Invalid" else [CONDITIONS.index(name.split("/", 1)[1])]
        return (_ratio(W, (A.inv_num[:, j] * m2).sum(1), (A.inv_den[:, j] * m2).sum(1)),
                ) + count(A.inv_den[:, j].sum(1))
    raise ValueError(f"unknown metric {name!r}; choose from {', '.join(PAIRED_METRICS)}")


def _clean_float(x) -> Optional[float]:
    x = float(x)
    return None if math.isnan(x) else x


def _figure(draws: np.ndarray, n: int, n_obs: int) -> dict:
    value = _clean_float(draws[0])
    lo = hi = None
    boot = draws[1:]
    boot = boot[~np.isnan(boot)]
    if value is not None and boot.size:
        alpha = (1 - CI_LEVEL) / 2 * 100
        lo, hi = (float(v) for v in np.percentile(boot, [alpha, 100 - alpha]))
    return {"value": value, "ci_low": lo, "ci_high": hi, "n": n, "n_obs": n_obs}


def snr_key(snr: float) -> str:
    """The JSON key of an SNR level: ``-5``, ``0``, ``2.5``."""
    return f"{float(snr):g}"


# ------------------------------------------------------------------ public API
def compute_metrics(rows: Iterable[dict], strong_snr_max: float = 0.0, n_boot: int = 1000,
                    seed: int = 0) -> dict:
    """All figures of METHOD.md section 3 with bootstrap 95 % intervals (see the module docstring).

    Returns ``{"Acc": fig, "Noisy": fig, "StrongNoisy": fig, "GSR": fig, "StrongGSR": fig,
    "Consistency": fig, "StrongConsistency": fig, "Retention": fig, "NoAudio": fig, "Invalid": fig,
    "invalid_by_condition": {cond: fig}, "noisy_by_snr": {"-5": fig, ...},
    "gsr_by_snr": {...}, "noisy_by_noise_type": {type: fig}, "by_task": {task: {name: fig}},
    "definitions": {...}, "settings": {...}, "counts": {...}}`` where ``fig = {"value", "ci_low",
    "ci_high", "n", "n_obs"}``; plus ``"evidence"`` (``eval/evidence.py``) when the rows carry the items'
    evidence (the reasoning format). Deterministic given ``seed``.
    """
    rows = list(rows)
    A = _build(rows)
    W = _weights(len(A.ids), n_boot, seed)
    fig = lambda name, **kw: _figure(*_draws(A, W, name, strong_snr_max, **kw))  # noqa: E731
    out: dict = {name: fig(name) for name in HEADLINE}
    out["invalid_by_condition"] = {c: fig(f"Invalid/{c}") for c in CONDITIONS}
    snrs = sorted(set(A.cell_snr.tolist()))
    types = sorted(set(A.cell_type.tolist()))
    out["noisy_by_snr"] = {snr_key(s): fig("Noisy", cols=A.cell_snr == s) for s in snrs}
    out["gsr_by_snr"] = {snr_key(s): fig("GSR", cols=A.cell_snr == s) for s in snrs}
    out["consistency_by_snr"] = {snr_key(s): fig("Consistency", cols=A.cell_snr == s) for s in snrs}  # label-free
    out["noisy_by_noise_type"] = {t: fig("Noisy", cols=A.cell_type == t) for t in types}
    out["by_task"] = {
        t: {name: fig(name, mask=A.tasks == t) for name in ("Acc", "Noisy", "StrongNoisy", "GSR",
                                                              "Consistency", "NoAudio", "Invalid")}
        for t in sorted(set(A.tasks.tolist()))}
    out["definitions"] = dict(DEFINITIONS)
    from .evidence import evidence_metrics, has_evidence  # imports this module's helpers
    if has_evidence(rows):  # the reasoning format: what the model says it hears (eval/evidence.py)
        out["evidence"] = evidence_metrics(rows, strong_snr_max, n_boot, seed)
    out["settings"] = {"strong_snr_max": float(strong_snr_max), "n_boot": int(n_boot), "seed": int(seed),
                       "ci_level": CI_LEVEL, "bootstrap": "percentile, items resampled with all their conditions"}
    out["counts"] = {"items": len(A.ids), "labeled_items": int((A.clean_den + A.noisy_den.sum(1) > 0).sum()),
                     "rows": A.n_rows, "noise_types": types,
                     "snr_levels": snrs, "cells": len(A.cells), "replicates": A.n_reps}
    return out


def paired_difference(rows_a: Iterable[dict], rows_b: Iterable[dict], metric: str,
                      strong_snr_max: float = 0.0, n_boot: int = 1000, seed: int = 0) -> dict:
    """``metric(a) - metric(b)`` with a paired bootstrap 95 % interval.

    Only the items (ids) and noise cells both runs share are used; each resample draws the same
    items for both runs. Returns ``{"metric", "diff", "ci_low", "ci_high", "n", "p_boot", "a", "b"}``:
    ``n`` shared items contributing to both, ``p_boot`` the two-sided bootstrap p-value
    ``min(1, 2 * min(P(d <= 0), P(d >= 0)))`` (``None`` without resamples), ``a``/``b`` the two
    figures on the shared items. Rows may be several seeds combined with :func:`combine_seeds`.
    """
    return paired_differences(rows_a, rows_b, (metric,), strong_snr_max, n_boot, seed)[metric]


def paired_differences(rows_a: Iterable[dict], rows_b: Iterable[dict],
                       metrics: Sequence[str] = PAIRED_METRICS, strong_snr_max: float = 0.0,
                       n_boot: int = 1000, seed: int = 0) -> dict:
    """:func:`paired_difference` for several metrics at once (same resamples): ``{metric: result}``."""
    for metric in metrics:
        if metric not in PAIRED_METRICS:
            raise ValueError(f"unknown metric {metric!r}; choose from {', '.join(PAIRED_METRICS)}")
    rows_a, rows_b = list(rows_a), list(rows_b)
    ids = sorted({str(r.get("id")) for r in rows_a} & {str(r.get("id")) for r in rows_b})

    def cells_of(rows):
        out = set()
        for r in rows:
            if r.get("condition") == "noisy" and r.get("snr") is not None:
                try:
                    out.add((str(r.get("noise_type")), float(r["snr"])))
                except (TypeError, ValueError):
                    pass  # _build reports the bad row
        return out

    cells = sorted(cells_of(rows_a) & cells_of(rows_b))
    A = _build(rows_a, ids=ids, cells=cells)
    B = _build(rows_b, ids=ids, cells=cells)
    W = _weights(len(ids), n_boot, seed)
    res = {}
    for metric in metrics:
        da, na, oa = _draws(A, W, metric, strong_snr_max)
        db, nb, ob = _draws(B, W, metric, strong_snr_max)
        d = da - db
        fig = _figure(d, min(na, nb), min(oa, ob))
        boot = d[1:][~np.isnan(d[1:])]
        p = None
        if fig["value"] is not None and boot.size:
            p = float(min(1.0, 2 * min(np.mean(boot <= 0), np.mean(boot >= 0))))
        res[metric] = {"metric": metric, "diff": fig["value"], "ci_low": fig["ci_low"],
                       "ci_high": fig["ci_high"], "n": fig["n"], "p_boot": p,
                       "a": _figure(da, na, oa), "b": _figure(db, nb, ob)}
    return res


def combine_seeds(row_sets: Sequence[Iterable[dict]]) -> list:
    """Concatenate the prediction rows of several seeds of one method, tagging each with its seed.

    Feed the result to :func:`compute_metrics` or :func:`paired_difference`: clean/noisy pairs are
    formed within a seed, each item is averaged over seeds (pooled), and items are resampled with all
    their seeds -- the between-seed variation of an item stays inside the interval.
    """
    out = []
    for k, rows in enumerate(row_sets):
        for r in rows:
            r2 = dict(r)
            r2["_rep"] = (k, r.get("_rep", 0))
            out.append(r2)
    return out
