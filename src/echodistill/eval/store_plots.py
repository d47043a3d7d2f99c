"""Accuracy vs SNR from a results store, with the spread over training seeds (issue 14).

One figure per regime: for each method the accuracy at every SNR level as the mean over its seeds with
a min-max band over seeds (every seed's own curve lies inside it; with 2-10 seeds a standard deviation
says little more and reads like a confidence interval, which it is not), the warm-up it starts from as
a dashed line (one run, no band), and clean accuracy as a point at the right. The top panel averages the
noise types; one small panel per noise type below. Matplotlib's object API with the Agg canvas, as in
``report.py`` (no pyplot state, safe in threads and headless).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

BAND = "min–max over seeds"
ALL = "mean over noise types"


def run_curves(rows: Sequence[dict]) -> tuple[dict, Optional[float]]:
    """One run's accuracy per (noise type, SNR) and per SNR over all noise types, and its clean accuracy.

    Returns ``({(noise_type, snr): acc, (ALL, snr): acc}, clean_acc)``; silent cells are not audio
    accuracy and are left out. ``(ALL, snr)`` pools the cells, which is the mean over noise types when
    every type has the same items (as in every store written by ``scripts/experiment.py``).
    """
    cells: dict[tuple, list] = defaultdict(list)
    clean = []
    for r in rows:
        if r["condition"] == "clean":
            clean.append(r["correct"])
        elif r["condition"] == "noisy":
            snr = float(r["snr"])
            cells[(r["noise_type"], snr)].append(r["correct"])
            cells[(ALL, snr)].append(r["correct"])
    acc = {k: float(np.mean(v)) for k, v in cells.items()}
    return acc, (float(np.mean(clean)) if clean else None)


def _method_curves(runs: Sequence) -> tuple[dict, np.ndarray]:
    """Per curve key, the ``[seeds]`` accuracies of every run; and the ``[seeds]`` clean accuracies."""
    per = [run_curves(r.rows) for r in runs]
    keys = set.intersection(*(set(acc) for acc, _ in per))
    curves = {k: np.array([acc[k] for acc, _ in per]) for k in keys}
    clean = np.array([c for _, c in per if c is not None])
    return curves, clean


def _draw(ax, curves: dict, clean: np.ndarray, panel: str, x_clean: float, style: dict, label: Optional[str]) -> None:
    """One method on one panel: mean line, band when several seeds, clean point (at ``x_clean``) with its range."""
    snrs = sorted(s for (p, s) in curves if p == panel)
    if not snrs:
        return
    vals = np.array([curves[(panel, s)] for s in snrs]) * 100  # [snrs, seeds]
    ax.plot(snrs, vals.mean(1), label=label, **style)
    if vals.shape[1] > 1:
        ax.fill_between(snrs, vals.min(1), vals.max(1), color=style["color"], alpha=0.15, lw=0)
    if clean.size:
        c = clean * 100
        ax.errorbar([x_clean], [c.mean()], yerr=[[c.mean() - c.min()], [c.max() - c.mean()]],
                    marker="s", ms=5, color=style["color"], mfc="white" if style.get("ls") == "--" else style["color"],
                    capsize=3, lw=1.2, ls="none")


def snr_curves(methods: Mapping[str, Sequence], path: str | Path, *, warmup: Optional[str] = None,
               strong_snr_max: float = 0.0, title: str = "") -> Path:
    """Write the accuracy-vs-SNR figure of ``methods`` (name -> its stored runs) to ``path`` (PNG).

    ``warmup`` names the entry of ``methods`` drawn dashed (the regime's starting point).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    data = {m: _method_curves(rs) for m, rs in methods.items() if rs}
    snrs = sorted({s for curves, _ in data.values() for (_, s) in curves})
    types = sorted({p for curves, _ in data.values() for (p, _) in curves if p != ALL})
    step = float(np.min(np.diff(snrs))) if len(snrs) > 1 else 5.0
    x_clean = (snrs[-1] if snrs else 0.0) + 1.4 * step  # clean sits right of the noisiest-to-cleanest axis

    fig = Figure(figsize=(max(8.0, 2.6 * len(types)), 8.2), dpi=100)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2, max(1, len(types)), height_ratios=[1.7, 1.0])
    top = fig.add_subplot(grid[0, :])
    small = [fig.add_subplot(grid[1, j], sharey=top) for j in range(len(types))]
    colour = iter(f"C{i % 10}" for i in range(len(data)))
    # the clean points side by side rather than on top of each other
    nudge = {m: (i - (len(data) - 1) / 2) * 0.12 * step for i, m in enumerate(data)}
    for m, (curves, clean) in data.items():
        dashed = m == warmup
        style = {"color": "0.3" if dashed else next(colour), "ls": "--" if dashed else "-", "marker": "o",
                 "ms": 4 if not dashed else 3, "lw": 1.8 if not dashed else 1.3}
        n = len(methods[m])
        label = f"{m} (warm-up, 1 run)" if dashed else f"{m} ({n} seed{'s' if n != 1 else ''})"
        _draw(top, curves, clean, ALL, x_clean + nudge[m], style, label)
        for ax, t in zip(small, types):
            _draw(ax, curves, clean, t, x_clean + nudge[m], {**style, "ms": 2.5}, None)
    for ax, panel in [(top, ALL), *zip(small, types)]:
        _axes(ax, snrs, x_clean, strong_snr_max, panel, big=ax is top)
    top.set_ylabel("accuracy (%)")
    if small:
        small[0].set_ylabel("accuracy (%)")
    top.legend(fontsize=8, loc="lower right")
    fig.suptitle((title + ": " if title else "") + "accuracy vs SNR\n"
                 f"line: mean over seeds; band and bar: {BAND}; square: clean accuracy", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return Path(path)


def _axes(ax, snrs: list, x_clean: float, strong: float, panel: str, big: bool) -> None:
    """Ticks at the evaluated SNRs plus 'clean', the strong-noise region shaded, a light grid."""
    if snrs:
        if snrs[0] <= strong:
            ax.axvspan(snrs[0] - 1, strong, color="0.5", alpha=0.08, lw=0)
            if big:
                ax.text(snrs[0] - 0.8, 0.02, f"strong noise (SNR ≤ {strong:g} dB)",
                        transform=ax.get_xaxis_transform(), fontsize=8, color="0.35")
        ax.axvline((snrs[-1] + x_clean) / 2, color="0.6", lw=0.8, ls=":")
        ax.set_xticks([*snrs, x_clean])
        ax.set_xticklabels([f"{s:g}" for s in snrs] + ["clean"], fontsize=8 if big else 7)
        ax.set_xlim(snrs[0] - 1, x_clean + 0.5 * (x_clean - snrs[-1]))
    ax.set_title(panel, fontsize=9 if big else 8)
    ax.set_xlabel("SNR (dB)" + (" — lower is noisier" if big else ""), fontsize=9 if big else 8)
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(alpha=0.3)


__all__ = ["run_curves", "snr_curves", "BAND"]
