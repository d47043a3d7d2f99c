"""What a report says first: one sentence per comparison, the difference per SNR, and which rows to trust.

* ``entry_status``: a row is *untrained* (a raw model: its checkpoint has no run beside it) or *partial*
  (fewer items, SNR levels or noise types than the fullest evaluation in the report); both are greyed
  and marked in the tables and plots, so a 0 % base model or a 28-item front-end evaluation does not
  read like a full result.
* ``snr_differences``: per SNR, the paired difference in noisy accuracy against the baseline with its
  bootstrap interval (the same paired bootstrap as the table, on the rows of that SNR only).
* ``verdict``: "`X` beats / is behind / is not distinguishable from `B` under strong noise: strong GSR
  +3.1 points [+0.4, +5.9] ..." -- the primary metric (strong-noise GSR), then noisy accuracy, and
  the SNR where the difference is largest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from .formatting import pct
from .metrics import paired_differences

PRIMARY = "StrongGSR"  # the declared primary metric of every comparison (docs/results.md)


def is_untrained(method: Optional[str], checkpoint: Optional[str]) -> bool:
    """A model evaluated as built, not trained: no run config beside its checkpoint (run_config.py)."""
    if method not in (None, "model") or not checkpoint:
        return False
    from ..run_config import saved_run_config

    ck = Path(checkpoint)
    return ck.is_dir() and saved_run_config(ck) is None


def coverage(metrics: dict, meta: Optional[dict] = None) -> dict:
    """Items, SNR levels and noise types an evaluation covers."""
    n = int(((metrics or {}).get("Acc") or {}).get("n") or 0)
    snrs = {float(k) for k in (metrics or {}).get("noisy_by_snr", {}) if _is_num(k)}
    types = set((metrics or {}).get("noisy_by_noise_type", {}))
    return {"n": n, "snrs": snrs, "types": types}


def entry_status(covs: Sequence[dict], untrained: Sequence[bool]) -> list[dict]:
    """Per entry ``{"untrained": bool, "partial": str | None}``; partial says what is missing."""
    full_n = max((c["n"] for c in covs), default=0)
    all_snrs = set().union(*(c["snrs"] for c in covs)) if covs else set()
    all_types = set().union(*(c["types"] for c in covs)) if covs else set()
    out = []
    for c, u in zip(covs, untrained):
        missing = []
        if c["n"] < full_n:
            missing.append(f"{c['n']} of {full_n} items")
        if c["snrs"] and c["snrs"] < all_snrs:
            missing.append("SNR " + ", ".join(f"{s:g}" for s in sorted(c["snrs"])) + " dB only")
        if c["types"] and c["types"] < all_types:
            missing.append(", ".join(sorted(c["types"])) + " only")
        out.append({"untrained": bool(u), "partial": "; ".join(missing) or None})
    return out


def status_label(status: dict) -> str:
    """`` (untrained)`` / `` (partial: 28 of 70 items; SNR 0 dB only)`` / ``""``."""
    parts = (["untrained"] if status.get("untrained") else []) + \
        ([f"partial: {status['partial']}"] if status.get("partial") else [])
    return f" ({'; '.join(parts)})" if parts else ""


def snr_differences(rows_a: list, rows_b: list, snrs: Sequence[str], n_boot: int, seed: int) -> dict:
    """``{snr key: paired Noisy difference}`` (a minus b) at each SNR both evaluated."""
    out = {}
    for k in snrs:
        s = float(k)
        keep = lambda r: r.get("condition") == "clean" or (  # noqa: E731
            r.get("condition") == "noisy" and r.get("snr") is not None and float(r["snr"]) == s)
        a = [r for r in rows_a if keep(r)]
        b = [r for r in rows_b if keep(r)]
        if any(r.get("condition") == "noisy" for r in a) and any(r.get("condition") == "noisy" for r in b):
            out[k] = paired_differences(a, b, ["Noisy"], 0.0, n_boot, seed)["Noisy"]
    return out


def _ci(d: dict) -> str:
    return f"{pct(d['diff'], True)} points [95 % CI {pct(d['ci_low'], True)}, {pct(d['ci_high'], True)}]" \
        if d.get("ci_low") is not None else f"{pct(d['diff'], True)} points (no interval)"


def _direction(d: dict) -> str:
    if d.get("diff") is None:
        return "cannot be compared with"
    if d.get("ci_low") is not None and d["ci_low"] > 0:
        return "beats"
    if d.get("ci_high") is not None and d["ci_high"] < 0:
        return "is behind"
    return "is not distinguishable from"


def verdict(run: str, baseline: str, paired: dict, by_snr: dict, strong: float, status: Optional[dict] = None) -> str:
    """One sentence: the primary metric decides the verb; noisy accuracy and the SNR with the largest
    difference follow, each with its interval."""
    prim = paired.get(PRIMARY) or {}
    noisy = paired.get("Noisy") or {}
    s = (f"`{_name(run)}`{status_label(status or {})} {_direction(prim)} `{_name(baseline)}` under strong noise "
         f"(SNR ≤ {strong:g} dB): strong GSR {_ci(prim)}")
    if noisy.get("diff") is not None:
        s += f"; noisy accuracy over all SNRs {_ci(noisy)}"
    best = [(k, d) for k, d in by_snr.items() if d.get("diff") is not None]
    if len(best) > 1 and any(d["diff"] != 0 for _, d in best):
        k, d = max(best, key=lambda kd: abs(kd[1]["diff"]))
        s += f"; largest at {float(k):g} dB ({_ci(d)})"
    n = prim.get("n") or noisy.get("n")
    return s + (f", on {n} shared items." if n else ".")


def _name(x: str) -> str:
    """A run name inside a `code span`: one line, no backtick that could end the span early."""
    return " ".join(str(x).split()).replace("`", "'")


def _is_num(s: str) -> bool:
    try:
        float(s)
        return True
    except (TypeError, ValueError):
        return False


__all__ = ["PRIMARY", "is_untrained", "coverage", "entry_status", "status_label", "snr_differences", "verdict"]
