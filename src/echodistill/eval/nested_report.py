"""The round-4 report (issue 27): the store checked against the plan, then per response format and
regime every method's metrics and the pre-registered contrasts with three-level intervals (warm-ups,
seeds, items), each warm-up's own estimate, and the primary decision (Holm over the primary contrasts
of both formats; docs/preregistration-round4.md section 5).

Spec section read here::

    contrasts:
      P1: {a: echodistill-rescue, b: grpo, predicted: ">0", role: primary}
      S2: {a: sft-noisy, b: grpo, predicted: none, role: secondary}
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Mapping, Optional, Sequence

from .plan import frozen_commit, grid_edges, point_label, read_chosen
from .seeds import compare_nested, holm, score_matrix

PREREGISTRATION = "docs/preregistration-round4.md"  # a spec's `preregistration:` names its own
PAPER_MARGIN = 0.045  # the paper's strong-GSR margin over its GRPO-only ablation (+4.53, METHOD.md)


def _pct(x: Optional[float], signed: bool = True) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    return f"{100 * x:+.1f}" if signed else f"{100 * x:.1f}"


def nested_runs(runs) -> dict:
    """{(format, method): {warm-up seed: {seed: rows}}} from stored round-4 runs."""
    out: dict = defaultdict(lambda: defaultdict(dict))
    for r in runs:
        if r.meta.get("format") is None:
            continue
        out[(r.meta["format"], r.method)][r.meta.get("warmup_seed")][r.seed] = r.rows
    return out


def verdict(c: dict, adj_p: float, predicted: str) -> str:
    """The pre-registered words for a primary contrast."""
    side = 1 if predicted.strip() == ">0" else -1 if predicted.strip() == "<0" else 0
    if adj_p < 0.05 and side and c["diff"] * side > 0:
        return "shown better" if side > 0 else "shown as predicted"
    if adj_p < 0.05:
        return "shown worse" if side > 0 else "shown (no direction predicted)" if not side else "shown against"
    note = " (excludes the paper's margin)" if side > 0 and c["high"] < PAPER_MARGIN else ""
    return "not shown" + note


def _scores(rows, metric: str, strong: float):
    try:
        return score_matrix(rows, metric, strong)
    except ValueError:  # a metric this code does not define yet (the evidence metrics before issue 22)
        return None, []


def _method_table(fmt: str, methods: Sequence[str], by: Mapping, metrics: Sequence[str], strong: float) -> list[str]:
    lines = ["| method | units | " + " | ".join(metrics) + " |", "|---|---|" + "---|" * len(metrics)]
    for m in methods:
        cell = by.get((fmt, m))
        if not cell:
            lines.append(f"| {m} | 0 | " + " | ".join("-" for _ in metrics) + " |")
            continue
        rows = [rs for w in cell.values() for rs in w.values()]
        vals = []
        for metric in metrics:
            X, ids = _scores(rows, metric, strong)
            vals.append(_pct(float(X.mean()), False) if ids else "-")
        lines.append(f"| {m} | {len(rows)} | " + " | ".join(vals) + " |")
    return lines


def nested_report(spec: Mapping, runs, check_lines: Sequence[str], metrics: Sequence[str] = (
        "StrongGSR", "Acc", "Noisy", "Consistency"), n_boot: int = 10_000, strong_snr_max: float = 0.0,
        complete: bool = False, commit_diff: Sequence[str] = ()) -> str:
    """The Markdown report. ``runs``: the stored runs of the spec's split; ``check_lines``: the plan check;
    ``complete``: every planned unit is stored (otherwise no verdict is stated, only estimates);
    ``commit_diff``: ``git diff --stat`` of the code between the formats' frozen commits, when they differ."""
    by = nested_runs(runs)
    contrasts = dict(spec.get("contrasts") or {})
    extra = spec.get("format_metrics") or {}  # e.g. {reasoning: [StrongEvidenceF1]}
    lines = [f"# {spec.get('title', 'Round 4')}", "", f"Split `{spec['split']}`; store `{spec['store']}`. "
             "Percent; paired a - b on (warm-up seed, training seed, item); 95 %: three-level percentile bootstrap "
             f"({n_boot} replicates: warm-ups, then seeds within each, then items); per warm-up: its own estimate "
             f"and two-level interval. Pre-registration: {spec.get('preregistration', PREREGISTRATION)}.", "",
             "Frozen commit: " + "; ".join(f"{fmt} `{frozen_commit(spec, fmt) or 'not set'}`" for fmt in spec["formats"])
             + ".", ""]
    if commit_diff:  # pre-registration section 10: only logged changes may separate them
        lines += ["The code between the frozen commits (every change is logged in the pre-registration's "
                  "section 10):", "", "```", *commit_diff, "```", ""]
    lines += ["## The store against the plan", "", *check_lines, ""]
    if not complete:
        lines += ["**Incomplete**: not every planned unit is stored, so no verdict is stated below "
                  "(pre-registration, section 5).", ""]
    primary: dict[str, tuple] = {}
    sections = []
    for fmt in spec["formats"]:
        fmt_metrics = [*metrics, *extra.get(fmt, [])]
        for regime, w in spec["warmups"].items():
            methods = [m for m, c in spec["methods"].items() if c["warmup"] == regime]
            # the regime's warm-up first: where every method of the regime starts
            sec = [f"## {fmt} format, regime `{regime}`", "", *_method_table(fmt, [f"warmup-{regime}", *methods], by,
                                                                                fmt_metrics, strong_snr_max), ""]
            rows = []
            for cid, c in contrasts.items():
                if c["a"] not in methods or c["b"] not in methods:
                    continue
                a, b = by.get((fmt, c["a"])), by.get((fmt, c["b"]))
                if not (a and b):  # one row, not one per metric
                    rows.append((cid, c, "every metric", None))
                    continue
                for metric in fmt_metrics:
                    try:
                        res = compare_nested(a, b, metric, strong_snr_max, n_boot)
                    except ValueError:  # not defined in this code yet
                        res = None
                    if res is None:
                        rows.append((cid, c, metric, None))
                        continue
                    rows.append((cid, c, metric, res))
                    if c.get("role") == "primary" and metric == metrics[0]:
                        primary[f"{cid}/{fmt}"] = (res, str(c.get("predicted", "none")))
            if rows:
                sec += ["| id | contrast | metric | diff | 95 % | p | per warm-up: diff [two-level 95 %] | pairs |",
                        "|---|---|---|---|---|---|---|---|"]
                for cid, c, metric, res in rows:
                    name = f"`{c['a']}` - `{c['b']}`"
                    if res is None:
                        sec.append(f"| {cid} | {name} | {metric} | - | no paired runs yet | | | 0 |")
                        continue
                    per = "; ".join(f"w{p['warmup']}: {_pct(p['diff'])} [{_pct(p['low'])}, {_pct(p['high'])}]"
                                    for p in res["per_warmup"])
                    sec.append(f"| {cid} | {name} | {metric} | {_pct(res['diff'])} | [{_pct(res['low'])}, "
                               f"{_pct(res['high'])}] | {res['p']:.4f} | {per} | {res['n_pairs']} |")
                sec.append("")
            sections += sec
    lines += ["## Primary decision", ""]
    if primary:
        adj = holm({k: v[0]["p"] for k, v in primary.items()})
        lines += [f"Holm over the {len(primary)} primary tests stored so far (strong GSR; the pre-registration "
                  "adjusts over all of them in both formats).", "",
                  "| test | diff | 95 % | p | Holm p | verdict |", "|---|---|---|---|---|---|"]
        for k, (res, pred) in sorted(primary.items()):
            word = verdict(res, adj[k], pred) if complete else "(incomplete: no verdict)"
            lines.append(f"| {k} | {_pct(res['diff'])} | [{_pct(res['low'])}, {_pct(res['high'])}] | "
                         f"{res['p']:.4f} | {adj[k]:.4f} | {word} |")
    else:
        lines.append("No primary contrast has paired runs yet.")
    return "\n".join(lines + [""] + sections + _chosen_points(spec)) + "\n"


def _chosen_points(spec: Mapping) -> list[str]:
    """Each method's chosen point (the spec's ``chosen:`` file), flagged where it sits at an end of its
    grid: a method chosen at its highest learning rate may be under-tuned against one chosen inside."""
    chosen = read_chosen(spec.get("chosen"))
    if not chosen:
        return []
    lines = [f"## The chosen points (`{spec.get('chosen')}`, tuned on val)", "",
             "| format | method | point | at an end of its grid |", "|---|---|---|---|"]
    for fmt, methods in chosen.items():
        for method, point in methods.items():
            edges = ", ".join(grid_edges(point, spec.get("grids") or {})) or "no"
            lines.append(f"| {fmt} | {method} | {point_label(point)} | {edges} |")
    return lines + [""]


__all__ = ["nested_runs", "verdict", "nested_report"]
