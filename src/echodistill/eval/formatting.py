"""Report numbers as text: fractions as percentages, figures as ``value [low, high]``.

Shared by ``report.md`` (eval/report.py) and ``report.html`` (eval/html_report.py), so that the page
and the Markdown show the same strings for the same figure.
"""

from __future__ import annotations

from typing import Optional


def pct(v: Optional[float], signed: bool = False) -> str:
    """A fraction as a percentage with one decimal (``"–"`` when undefined); ``signed`` for differences."""
    if v is None:
        return "–"
    return f"{100 * v:+.1f}" if signed else f"{100 * v:.1f}"


def cell(fig: Optional[dict]) -> str:
    """A figure (``{"value", "ci_low", "ci_high", ...}`` from eval/metrics.py) as ``value [low, high]``."""
    if not isinstance(fig, dict) or fig.get("value") is None:
        return "–"
    s = pct(fig["value"])
    if fig.get("ci_low") is not None and fig.get("ci_high") is not None:
        s += f" [{pct(fig['ci_low'])}, {pct(fig['ci_high'])}]"
    return s
