"""The val tuning at a glance (round 4, issue 27): strong GSR against the learning rate, per method.

One panel per (format, method) with at least one stored seed, sorted: every training seed as a dot, the
mean over seeds as a line per KL weight (``beta``; the supervised and distillation family has none), the
chosen point ringed; one y scale for all panels. Points still missing a seed show their seeds' dots
without a mean. Matplotlib's
object API with the Agg canvas (headless, no pyplot state), as in ``store_plots.py``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Mapping, Optional

PER_ROW = 4


def _key(point: Mapping, name: str) -> Optional[str]:
    return next((k for k in point if k.rsplit(".", 1)[-1] == name), None)


def tuning_figure(table: Mapping[tuple, list], chosen: Mapping[tuple, Optional[dict]], path: str | Path,
                  title: str = "") -> Optional[Path]:
    """Write the figure of ``table`` ({(format, method): [points]}, ``plan.tuning_table``) to ``path`` (PNG);
    ``chosen[(format, method)]`` is the point ``plan.choose`` picked (None while incomplete). None when
    no point has a stored seed yet (nothing to draw)."""
    panels = sorted(k for k, points in table.items() if any(p["values"] for p in points))
    if not panels:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    values = [100 * v for k in panels for p in table[k] for v in p["values"]]
    pad = max(1.0, 0.08 * (max(values) - min(values)))
    rows = math.ceil(len(panels) / PER_ROW)
    height = 2.7 * rows + 0.6
    fig = Figure(figsize=(max(6.0, 3.2 * min(PER_ROW, len(panels))), height), dpi=100)
    FigureCanvasAgg(fig)
    for i, (fmt, method) in enumerate(panels):
        ax = fig.add_subplot(rows, min(PER_ROW, len(panels)), i + 1)
        lines: dict = defaultdict(list)  # beta -> [(lr, mean)]
        grid_lrs = sorted({float(p["point"][k]) for p in table[(fmt, method)]
                           for k in [_key(p["point"], "learning_rate")] if k})
        for p in table[(fmt, method)]:
            lr_key, beta_key = _key(p["point"], "learning_rate"), _key(p["point"], "beta")
            if lr_key is None:
                continue
            lr, beta = float(p["point"][lr_key]), (float(p["point"][beta_key]) if beta_key else None)
            colour = "C1" if beta else "C0"
            ax.scatter([lr] * len(p["values"]), [100 * v for v in p["values"]], s=12, color=colour, alpha=0.6)
            if p["mean"] is not None:
                lines[beta].append((lr, 100 * p["mean"]))
            if p is chosen.get((fmt, method)):
                ax.scatter([lr], [100 * p["mean"]], s=110, facecolors="none", edgecolors="k", lw=1.4, zorder=3)
        for beta, pts in sorted(lines.items(), key=lambda kv: (kv[0] is not None, kv[0] or 0.0)):
            pts.sort()
            ax.plot([x for x, _ in pts], [y for _, y in pts], "-s", ms=4, color="C1" if beta else "C0", lw=1.4,
                    label="mean" if beta is None else f"mean, beta {beta:g}")
        if grid_lrs:  # the whole grid on the axis, also before its first seed is stored
            ax.set_xscale("log")
            ax.set_xlim(grid_lrs[0] / 1.6, grid_lrs[-1] * 1.6)
            ax.set_xticks(grid_lrs, [f"{x:g}" for x in grid_lrs])
            ax.minorticks_off()
        ax.set_ylim(min(values) - pad, max(values) + pad)
        ax.set_title(f"{method} ({fmt})", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if i % PER_ROW == 0:
            ax.set_ylabel("strong GSR (%)", fontsize=8)
        ax.set_xlabel("learning rate", fontsize=8)
        if lines:
            ax.legend(fontsize=6, loc="best")
    fig.suptitle((title + "\n" if title else "") + "dots: one seed each; line: mean over seeds (complete points "
                 "only); ring: the chosen point", fontsize=9)
    fig.tight_layout()  # leaves room for the suptitle (matplotlib counts it)
    fig.savefig(path, dpi=100)
    return Path(path)


__all__ = ["tuning_figure"]
