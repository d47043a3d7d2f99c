"""The report's plots (PNG, matplotlib Agg): difference to the baseline per SNR, accuracy per SNR, per noise type.

Colours are the Okabe-Ito palette (distinguishable with the common colour-vision deficiencies); the
baseline is black; untrained rows are grey and dashed and never set the axis range; partial
evaluations are drawn with hollow markers and no line, and say so in the legend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442")
BASELINE_COLOUR = "#000000"
UNTRAINED_COLOUR = "#999999"


def colours(names: Sequence[str], baseline: str, status: Sequence[dict]) -> dict:
    """name -> colour: black for the baseline, grey for untrained rows, Okabe-Ito for the others."""
    out, i = {}, 0
    for name, st in zip(names, status):
        if name == baseline:
            out[name] = BASELINE_COLOUR
        elif st.get("untrained"):
            out[name] = UNTRAINED_COLOUR
        else:
            out[name] = OKABE_ITO[i % len(OKABE_ITO)]
            i += 1
    return out


def _figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def _legend_name(name: str, st: dict) -> str:
    return name + (" (untrained)" if st.get("untrained") else "") + (" (partial)" if st.get("partial") else "")


def plot_differences(diffs: dict, baseline: str, status: dict, colour: dict, path: Path, strong: float) -> bool:
    """Each method's paired difference in noisy accuracy to the baseline per SNR, with its 95 % interval.

    ``diffs``: run -> {snr key: paired difference}. Returns False (no file) when there is nothing to plot."""
    series = {r: d for r, d in diffs.items() if any(v.get("diff") is not None for v in d.values())}
    if not series:
        return False
    fig, ax = _figure(7.5, 4.4)
    k = len(series)
    xs_all = []
    for j, (run, by) in enumerate(series.items()):
        st = status.get(run, {})
        keys = sorted((s for s in by if by[s].get("diff") is not None), key=float)
        off = (j - (k - 1) / 2) * 0.35  # side by side at each SNR: intervals never hide each other
        x = [float(s) + off for s in keys]
        xs_all += [float(s) for s in keys]
        y = [100 * by[s]["diff"] for s in keys]
        lo = [100 * (by[s]["diff"] - by[s]["ci_low"]) if by[s].get("ci_low") is not None else 0 for s in keys]
        hi = [100 * (by[s]["ci_high"] - by[s]["diff"]) if by[s].get("ci_high") is not None else 0 for s in keys]
        hollow = bool(st.get("partial"))
        ax.errorbar(x, y, yerr=[lo, hi], color=colour.get(run, "0.3"), marker="o", ms=5, capsize=3, lw=1.4,
                    ls="none" if hollow or len(x) < 2 else ("--" if st.get("untrained") else "-"),
                    mfc="white" if hollow else colour.get(run, "0.3"), label=_legend_name(run, st))
    ax.axhline(0, color=BASELINE_COLOUR, lw=1)
    if xs_all:
        lo_x, hi_x = min(xs_all), max(xs_all)
        if lo_x <= strong:
            ax.axvspan(lo_x - 2, strong, color="0.5", alpha=0.08, lw=0)
            ax.text(lo_x - 1.8, 0.02, f"strong noise (≤ {strong:g} dB)", transform=ax.get_xaxis_transform(),
                    fontsize=8, color="0.35")
        ax.set_xlim(lo_x - 2, hi_x + 2)
        ax.set_xticks(sorted(set(xs_all)))
    ax.set_xlabel("SNR (dB) — lower is noisier")
    ax.set_ylabel(f"noisy accuracy minus {baseline} (points)")
    ax.set_title(f"Difference to {baseline} per SNR (paired, bars: 95% CI; above 0 = better)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return True


def _snr_keys(by: dict) -> list:
    out = []
    for k, v in by.items():
        try:
            if isinstance(v, dict) and v.get("value") is not None:
                out.append(k)
        except (TypeError, ValueError):
            continue
    return sorted((k for k in out if _num(k) is not None), key=float)


def _num(k) -> Optional[float]:
    try:
        return float(k)
    except (TypeError, ValueError):
        return None


def plot_snr(entries: list, status: dict, colour: dict, path: Path, strong: float) -> None:
    """Accuracy on noisy audio per SNR (bands: 95 % CI), clean accuracy dashed; untrained rows grey and
    outside the y range they would flatten."""
    fig, ax = _figure(7.5, 4.6)
    xs_all, ys_trained = [], []
    below = []
    for e in entries:
        st = status.get(e.name, {})
        c = colour.get(e.name, "0.3")
        by = e.metrics.get("noisy_by_snr", {})
        keys = _snr_keys(by)
        if not keys:
            continue
        x = [float(k) for k in keys]
        y = [100 * by[k]["value"] for k in keys]
        xs_all += x
        if st.get("untrained"):
            ax.plot(x, y, color=c, lw=1.2, ls="--", marker="x", ms=4, label=_legend_name(e.name, st))
            below.append((e.name, max(y)))
            continue
        ys_trained += y
        hollow = bool(st.get("partial"))
        ax.plot(x, y, marker="o", ms=5, color=c, lw=0 if hollow or len(x) < 2 else 1.8,
                mfc="white" if hollow else c, label=_legend_name(e.name, st))
        if not hollow and all(by[k].get("ci_low") is not None for k in keys):
            ax.fill_between(x, [100 * by[k]["ci_low"] for k in keys], [100 * by[k]["ci_high"] for k in keys],
                            color=c, alpha=0.10, lw=0)
        acc = (e.metrics.get("Acc") or {}).get("value")
        if acc is not None and not hollow:
            ax.axhline(100 * acc, color=c, ls=":", lw=1.1, alpha=0.9)
            ys_trained.append(100 * acc)
    if ys_trained:  # the trained rows set the range: an untrained 0 % row must not flatten them
        lo, hi = min(ys_trained), max(ys_trained)
        pad = max(3.0, 0.1 * (hi - lo))
        ax.set_ylim(max(0.0, lo - pad), min(100.0, hi + pad))
        for name, top in below:
            if top < lo - pad:
                ax.text(0.99, 0.02, f"{name} (untrained): ≤ {top:.0f} %, below this range", ha="right",
                        transform=ax.transAxes, fontsize=8, color=UNTRAINED_COLOUR)
    if xs_all:
        lo_x = min(xs_all)
        if lo_x <= strong:
            ax.axvspan(lo_x - 1, strong, color="0.5", alpha=0.08, lw=0)
        ax.set_xlim(lo_x - 1, max(xs_all) + 1)
        ax.set_xticks(sorted(set(xs_all)))
    ax.plot([], [], color="0.3", ls=":", lw=1.1, label="clean Acc (dotted, run's colour)")
    ax.set_xlabel("SNR (dB) — lower is noisier")
    ax.set_ylabel("accuracy on noisy audio (%)")
    ax.set_title("Accuracy vs SNR (mean over noise types; bands: bootstrap 95% CI)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def plot_types(entries: list, status: dict, colour: dict, path: Path) -> None:
    """Accuracy per noise type (bars: 95 % CI); untrained rows grey, partial rows hatched."""
    types = []
    for e in entries:
        types += [t for t in e.metrics.get("noisy_by_noise_type", {}) if t not in types]
    fig, ax = _figure(max(6.0, 1.2 * len(types) + 2.5), 4.4)
    k = max(1, len(entries))
    width = 0.8 / k
    for j, e in enumerate(entries):
        st = status.get(e.name, {})
        by = e.metrics.get("noisy_by_noise_type", {})
        xs, ys, err_lo, err_hi = [], [], [], []
        for i, t in enumerate(types):
            f = by.get(t)
            if not isinstance(f, dict) or f.get("value") is None:
                continue
            xs.append(i - 0.4 + width * (j + 0.5))
            ys.append(100 * f["value"])
            lo, hi = f.get("ci_low"), f.get("ci_high")
            err_lo.append(100 * (f["value"] - lo) if lo is not None else 0.0)
            err_hi.append(100 * (hi - f["value"]) if hi is not None else 0.0)
        ax.bar(xs, ys, width=width * 0.95, color=colour.get(e.name, "0.3"), label=_legend_name(e.name, st),
               hatch="//" if st.get("partial") else None, edgecolor="white" if st.get("partial") else None,
               alpha=0.6 if st.get("untrained") else 1.0, yerr=[err_lo, err_hi], capsize=2, error_kw={"lw": 0.8})
    ax.set_xticks(range(len(types)))
    ax.set_xticklabels(types)
    ax.set_ylabel("accuracy on noisy audio (%)")
    ax.set_title("Accuracy per noise type (mean over SNR levels; bars: 95% CI)", fontsize=10)
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper right", ncol=min(k, 3))
    fig.tight_layout()
    fig.savefig(path, dpi=100)


__all__ = ["OKABE_ITO", "colours", "plot_differences", "plot_snr", "plot_types"]
