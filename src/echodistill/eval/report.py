"""Compare evaluated runs: a Markdown report, paired bootstrap differences, PNG plots, report.json.

Input: folders written by ``echodistill eval`` -- each holds ``predictions.jsonl`` (one row per item x
condition) and ``metrics.json`` (``{"name", "split", "method", "metrics": compute_metrics(...), ...}``).
A folder with only ``predictions.jsonl`` is fine (metrics are computed here); a folder with only
``metrics.json`` gets its table rows but no paired differences.

Seeds: runs named ``<base>-s<k>`` / ``<base>-seed<k>`` (same split and method) are grouped into one
entry ``<base>``: its figures pool the seeds (each item averaged over seeds, items resampled with all
their seeds), and a seed table gives each seed's value with the mean and standard deviation over
seeds.
"""

from __future__ import annotations

import html
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from ..errors import UserError
from .formatting import cell, pct
from .evidence import evidence_markdown
from .metrics import (CONSISTENCY_DEFINITION, DEFINITIONS, GSR_DEFINITION, HEADLINE, combine_seeds,
                      compute_metrics, paired_differences)
from .predictions import read_predictions  # also re-exported: callers may import it from here
from .report_plots import colours, plot_differences, plot_snr, plot_types
from .verdict import coverage, entry_status, is_untrained, snr_differences, status_label, verdict

REPORT_PAIRED = ("Acc", "Noisy", "StrongNoisy", "GSR", "StrongGSR", "Consistency")
_SEED_RE = re.compile(r"^(?P<base>.+)[-_](?:s|seed)(?P<seed>\d+)$")
_REQUIRED = set(HEADLINE) | {"noisy_by_snr", "noisy_by_noise_type"}
DIFF_PLOT = "difference_vs_snr.png"


@dataclass
class _Run:
    name: str
    dir: Path
    split: Optional[str] = None
    method: Optional[str] = None
    metrics: Optional[dict] = None
    rows: Optional[list] = None
    checkpoint: Optional[str] = None
    provenance: Optional[dict] = None  # metrics.json's: code version, weights sha256 (provenance.py)


@dataclass
class _Entry:
    name: str
    runs: list
    metrics: Optional[dict] = None
    rows: Optional[list] = None
    seeds: list = field(default_factory=list)


# ------------------------------------------------------------------ loading
def _load_run(d: Path, n_boot: int, seed: int, strong: Optional[float]) -> _Run:
    d = Path(d)
    if not d.is_dir():
        raise UserError(f"{d}: no such folder; pass the folders written by `echodistill eval --out DIR`")
    mpath, ppath = d / "metrics.json", d / "predictions.jsonl"
    if not mpath.is_file() and not ppath.is_file():
        raise UserError(f"{d}: neither metrics.json nor predictions.jsonl found; evaluate it first with "
                        f"`echodistill eval --out {d}`, or pass the folder that eval wrote")
    meta: dict = {}
    if mpath.is_file():
        try:
            meta = json.loads(mpath.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UserError(f"{mpath}: not valid JSON ({e}); delete it to recompute from "
                            "predictions.jsonl, or re-run `echodistill eval`") from None
        if not isinstance(meta, dict):
            raise UserError(f"{mpath}: expected a JSON object; delete it or re-run `echodistill eval`")
    run = _Run(name=str(meta.get("name") or d.name), dir=d, split=meta.get("split"),
               method=meta.get("method"), checkpoint=meta.get("checkpoint"), provenance=meta.get("provenance"))
    if ppath.is_file():
        run.rows = read_predictions(ppath)
    m = meta.get("metrics")
    settings = (m or {}).get("settings", {}) if isinstance(m, dict) else {}
    usable = isinstance(m, dict) and _REQUIRED <= set(m) and (
        strong is None or settings.get("strong_snr_max", strong) == strong)
    if usable:
        run.metrics = m
    elif run.rows is not None:
        run.metrics = compute_metrics(run.rows, 0.0 if strong is None else strong, n_boot, seed)
    else:
        raise UserError(f"{mpath}: has no usable 'metrics' (expected the output of compute_metrics) and "
                        f"{ppath.name} is missing; re-run `echodistill eval --out {d}`")
    return run


def _group(runs: list, n_boot: int, seed: int, strong: float) -> list:
    """Entries in first-seen order; runs '<base>-s<k>' sharing base, split and method are pooled."""
    keys = []
    for r in runs:
        m = _SEED_RE.match(r.name)
        keys.append((m.group("base"), r.split, r.method) if m else None)
    count = {k: keys.count(k) for k in keys if k is not None}
    entries, by_key = [], {}
    for r, k in zip(runs, keys):
        if k is not None and count[k] >= 2:
            if k not in by_key:
                by_key[k] = _Entry(name=k[0], runs=[])
                entries.append(by_key[k])
            by_key[k].runs.append(r)
            by_key[k].seeds.append(int(_SEED_RE.match(r.name).group("seed")))
        else:
            entries.append(_Entry(name=r.name, runs=[r], metrics=r.metrics, rows=r.rows))
    for e in entries:
        if len(e.runs) > 1:
            if all(r.rows is not None for r in e.runs):
                e.rows = combine_seeds([r.rows for r in e.runs])
                e.metrics = compute_metrics(e.rows, strong, n_boot, seed)
            else:  # no predictions for some seed: fall back to the seeds' mean without interval
                e.metrics = _mean_metrics([r.metrics for r in e.runs])
    seen: dict = {}
    for e in entries:  # unique names
        if e.name in seen:
            seen[e.name] += 1
            e.name = f"{e.name} ({seen[e.name]})"
        else:
            seen[e.name] = 1
    return entries


def _val(fig) -> Optional[float]:
    return fig.get("value") if isinstance(fig, dict) else None


def _mean_metrics(ms: list) -> dict:
    out: dict = {}
    for name in HEADLINE:
        vals = [_val(m.get(name)) for m in ms]
        vals = [v for v in vals if v is not None]
        out[name] = {"value": sum(vals) / len(vals) if vals else None, "ci_low": None, "ci_high": None,
                     "n": max((m.get(name, {}).get("n") or 0) for m in ms), "n_obs": None}
    for key in ("noisy_by_snr", "noisy_by_noise_type"):
        sub: dict = {}
        for k in ms[0].get(key, {}):
            vals = [_val(m.get(key, {}).get(k)) for m in ms]
            vals = [v for v in vals if v is not None]
            sub[k] = {"value": sum(vals) / len(vals) if vals else None, "ci_low": None, "ci_high": None,
                      "n": None, "n_obs": None}
        out[key] = sub
    return out


def _seed_spread(e: _Entry) -> dict:
    out = {}
    for name in HEADLINE:
        vals = [_val(r.metrics.get(name)) for r in e.runs]
        ok = [v for v in vals if v is not None]
        mean = sum(ok) / len(ok) if ok else None
        sd = (math.sqrt(sum((v - mean) ** 2 for v in ok) / (len(ok) - 1)) if len(ok) > 1 else None)
        out[name] = {"per_seed": vals, "mean": mean, "sd": sd}
    return out


# ------------------------------------------------------------------ formatting
def _diff_cell(d: dict) -> str:
    if d.get("diff") is None:
        return "–"
    s = pct(d["diff"], signed=True)
    if d.get("ci_low") is not None:
        s += f" [{pct(d['ci_low'], True)}, {pct(d['ci_high'], True)}]"
        if d["ci_low"] > 0 or d["ci_high"] < 0:
            s = f"**{s}**"
    if d.get("p_boot") is not None:
        p = d["p_boot"]
        s += " p<0.001" if p < 0.001 else f" p={p:.3f}"
    return s


def _md(x: Any) -> str:
    """Text from run/task/noise names or notes, safe in Markdown: HTML markup escaped, one line (a name
    like ``<img onerror=...>`` must show as text in any Markdown viewer, as it does in report.html)."""
    return html.escape(" ".join(str(x).split()), quote=False)


def _md_outside_code(text: str) -> str:
    """A sentence with `code spans` (names, already free of backticks): markup escaped outside them."""
    return "`".join(p if i % 2 else _md(p) for i, p in enumerate(str(text).split("`")))


def _code(x: Any) -> str:
    """A name inside a `code span`: no backtick can end the span early."""
    return " ".join(str(x).split()).replace("`", "'")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    esc = lambda x: _md(x).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(esc(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _snr_sort(keys) -> list:
    def f(k):
        try:
            return (0, float(k))
        except ValueError:
            return (1, 0.0)
    return sorted(keys, key=f)


# ------------------------------------------------------------------ the report
def make_report(run_dirs: Sequence[Path], out_dir: Path, baseline: Optional[str] = None, *,
                n_boot: int = 1000, seed: int = 0, strong_snr_max: Optional[float] = None) -> dict:
    """Write ``out_dir/report.md``, ``report.json``, ``report.html`` (eval/html_report.py), ``accuracy_vs_snr.png``,
    ``accuracy_by_noise_type.png``; return the report.json content.

    ``baseline``: name of the run (or seed group) the others are compared against; default the first.
    ``strong_snr_max``: strong noise threshold; default that of the runs' metrics.json, else 0 dB.
    """
    run_dirs = [Path(d) for d in run_dirs]
    if not run_dirs:
        raise UserError("report: no run folders given; pass the folders written by `echodistill eval --out`")
    runs = [_load_run(d, n_boot, seed, strong_snr_max) for d in run_dirs]
    if strong_snr_max is None:
        strong_snr_max = float(runs[0].metrics.get("settings", {}).get("strong_snr_max", 0.0))
        # recompute runs whose metrics.json used another threshold, so the columns are comparable
        for r in runs:
            if r.metrics.get("settings", {}).get("strong_snr_max", strong_snr_max) != strong_snr_max \
                    and r.rows is not None:
                r.metrics = compute_metrics(r.rows, strong_snr_max, n_boot, seed)
    entries = _group(runs, n_boot, seed, strong_snr_max)

    names = [e.name for e in entries]
    if baseline is None:
        base = entries[0]
    else:
        matches = [e for e in entries if e.name == baseline or any(r.name == baseline for r in e.runs)]
        if not matches:
            raise UserError(f"report: --baseline {baseline!r} is not one of the runs: {', '.join(names)}")
        base = matches[0]

    notes = []
    paired = []
    for e in entries:
        if e is base:
            continue
        if e.rows is None or base.rows is None:
            notes.append(f"No paired differences for `{e.name}` vs `{base.name}`: predictions.jsonl is "
                         "missing in one of them.")
            continue
        res = paired_differences(e.rows, base.rows, REPORT_PAIRED, strong_snr_max, n_boot, seed)
        n_items = max((_val_n(e.metrics), _val_n(base.metrics)))
        n_shared = max((d["n"] for d in res.values()), default=0)
        if n_shared < n_items:
            notes.append(f"`{e.name}` and `{base.name}` share only {n_shared} of {n_items} items; the "
                         "paired differences use the shared items only.")
        paired.append({"run": e.name, "baseline": base.name, "metrics": res})
    status_list = entry_status([coverage(e.metrics) for e in entries],
                               [len(e.runs) == 1 and is_untrained(e.runs[0].method, e.runs[0].checkpoint)
                                for e in entries])
    status = {e.name: st for e, st in zip(entries, status_list)}
    snr_keys = _snr_sort({k for e in entries for k in e.metrics.get("noisy_by_snr", {})})
    for p in paired:
        e = next(x for x in entries if x.name == p["run"])
        p["by_snr"] = snr_differences(e.rows, base.rows, snr_keys, n_boot, seed)
        p["status"] = status[e.name]
        p["verdict"] = verdict(p["run"], base.name, p["metrics"], p["by_snr"], strong_snr_max, status[e.name])
    splits = {r.split for r in runs if r.split}
    if len(splits) > 1:
        notes.append(f"The runs were evaluated on different splits ({', '.join(sorted(splits))}); "
                     "compare their absolute numbers with care.")

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    colour = colours([e.name for e in entries], base.name, status_list)
    has_diff_plot = plot_differences({p["run"]: p["by_snr"] for p in paired}, base.name, status, colour,
                                     out_dir / DIFF_PLOT, strong_snr_max)
    plot_snr(entries, status, colour, out_dir / "accuracy_vs_snr.png", strong_snr_max)
    plot_types(entries, status, colour, out_dir / "accuracy_by_noise_type.png")

    report = {
        "baseline": base.name,
        "runs": [{"name": e.name, "dirs": [str(r.dir) for r in e.runs], "run_names": [r.name for r in e.runs],
                  "split": e.runs[0].split, "method": e.runs[0].method, "seeds": e.seeds or None,
                  "metrics": e.metrics, "seed_spread": _seed_spread(e) if len(e.runs) > 1 else None,
                  "status": status[e.name], "colour": colour[e.name],
                  "provenance": [r.provenance for r in e.runs]}
                 for e in entries],
        "verdicts": [p["verdict"] for p in paired],
        "paired": paired,
        "definitions": dict(DEFINITIONS),
        "settings": {"n_boot": n_boot, "seed": seed, "strong_snr_max": strong_snr_max, "ci_level": 0.95},
        "notes": notes,
        "files": ["report.md", "report.json", "report.html", "accuracy_vs_snr.png", "accuracy_by_noise_type.png"]
        + ([DIFF_PLOT] if has_diff_plot else []),
    }
    (out_dir / "report.json").write_text(json.dumps(report, indent=1, default=str), encoding="utf-8")
    (out_dir / "report.md").write_text(_markdown(entries, base, paired, notes, strong_snr_max, n_boot, status,
                                                 has_diff_plot),
                                       encoding="utf-8")
    from .html_report import write_html_report  # here: it loads the audio stack (soundfile, soxr)
    write_html_report(report, out_dir)  # the same tables and plots as one page, with clips to listen to
    return report


def _val_n(m: dict) -> int:
    return int((m.get("Acc") or {}).get("n") or 0)


def _markdown(entries, base, paired, notes, strong, n_boot, status, has_diff_plot) -> str:
    s = f"{strong:g}"
    md = ["# EchoDistill evaluation report", ""]
    if paired:
        md += ["## Verdict", "", f"Against `{_code(base.name)}`, primary metric strong-noise GSR (SNR ≤ {s} dB); "
               "\"beats\" / \"is behind\" only when the 95 % interval excludes 0.", ""]
        md += [f"* {_md_outside_code(p['verdict'])}" for p in paired] + [""]
        if has_diff_plot:
            md += [f"![difference to the baseline per SNR]({DIFF_PLOT})", ""]
    md += ["Each model answers multiple-choice questions about short audio clips, once on the clean clip, "
           "once per noise condition (noise type x signal-to-noise ratio, SNR, in dB; lower SNR = louder "
           "noise) and once with silence instead of audio. All numbers are percentages. "
           "`value [low, high]` is the estimate with its 95 % bootstrap interval: questions (items) are "
           f"resampled {n_boot} times with all their conditions, so the interval shows how much the number "
           "would move on another set of questions of the same kind. It does not include the variation "
           "between training runs unless several seeds are pooled (see below).", ""]
    md += ["## What the columns mean", "",
           "* **Acc**: accuracy on clean audio.",
           "* **Noisy**: accuracy on noisy audio, averaged over all noise types and SNR levels.",
           f"* **Strong noisy**: the same over the conditions with SNR ≤ {s} dB (noise as loud as the "
           "speech or louder).",
           f"* **GSR** (grounded success rate): {GSR_DEFINITION}. It counts only successes that survive "
           f"the noise; **Strong GSR** restricts it to SNR ≤ {s} dB. This is EchoDistill's definition "
           "(the paper's text available to us does not define GSR).",
           f"* **Consistency**: {CONSISTENCY_DEFINITION}.",
           "* **Retention**: Noisy / Acc — the share of clean accuracy kept under noise.",
           "* **NoAudio**: accuracy with silent audio. Far above chance (1 / number of choices) means the "
           "questions can be answered without listening, and all other numbers are inflated by that.",
           "* **Invalid**: share of answers to clean and noisy audio that name none of the offered choices "
           "(empty or made up); counted as wrong everywhere. Silent-audio answers are listed separately "
           "below.",
           "* **n**: number of items (questions) behind Acc; **pairs**: (item, noise condition) pairs "
           "behind GSR.", ""]
    if any(len(e.runs) > 1 for e in entries):
        md += ["Runs named `<name>-s<k>` are seeds of one method and are pooled under `<name>`: every "
               "item is averaged over the seeds, then items are resampled with all their seeds.", ""]

    md += ["## Summary", ""]
    cols = [("Acc", "Acc"), ("Noisy", "Noisy"), ("StrongNoisy", f"Strong noisy (≤{s} dB)"), ("GSR", "GSR"),
            ("StrongGSR", f"Strong GSR (≤{s} dB)"), ("Consistency", "Consistency"),
            ("Retention", "Retention"), ("NoAudio", "NoAudio"), ("Invalid", "Invalid")]
    rows = []
    for e in entries:
        label = e.name + (" (baseline)" if e is base else "") + status_label(status[e.name])
        if len(e.runs) > 1:
            label += f" — {len(e.runs)} seeds"
        m = e.metrics
        rows.append([label] + [cell(m.get(k)) for k, _ in cols]
                    + [str((m.get("Acc") or {}).get("n", "–")), str((m.get("GSR") or {}).get("n_obs", "–"))])
    md += [_table(["Run"] + [h for _, h in cols] + ["n", "pairs"], rows), ""]
    if any(st.get("untrained") or st.get("partial") for st in status.values()):
        md += ["*(untrained)*: a model evaluated as built, before any training (a floor, not a method); "
               "*(partial)*: evaluated on fewer items, SNR levels or noise types than the others, so its "
               "averages are over another grid. Both are grey in the plots.", ""]

    groups = [e for e in entries if len(e.runs) > 1]
    if groups:
        md += ["## Seeds", "", "Each seed's own value, and the mean ± standard deviation over seeds "
               "(the training-run spread the pooled interval above does not fully show).", ""]
        for e in groups:
            spread = _seed_spread(e)
            hdr = ["Metric"] + [r.name for r in e.runs] + ["mean ± sd"]
            rows = []
            for k, h in cols:
                sp = spread[k]
                ms = pct(sp["mean"]) + (f" ± {100 * sp['sd']:.1f}" if sp["sd"] is not None else "")
                rows.append([h] + [pct(v) for v in sp["per_seed"]] + [ms])
            md += [f"### {_md(e.name)}", "", _table(hdr, rows), ""]

    if paired:
        md += [f"## Differences vs {_md(base.name)}", "",
               f"Run minus `{_code(base.name)}`, in percentage points, on the items both runs share; the same "
               "resampled items are used for both runs (paired bootstrap). **Bold**: the 95 % interval "
               "excludes 0. `p` is the two-sided bootstrap p-value. With several comparisons, expect "
               "about one in twenty intervals to exclude 0 by chance.", ""]
        hdr = ["Run"] + [dict(cols).get(k, k) for k in REPORT_PAIRED] + ["shared items"]
        rows = [[p["run"] + status_label(p["status"])] + [_diff_cell(p["metrics"][k]) for k in REPORT_PAIRED]
                + [str(max(d["n"] for d in p["metrics"].values()))] for p in paired]
        md += [_table(hdr, rows), ""]

    snr_keys = _snr_sort({k for e in entries for k in e.metrics.get("noisy_by_snr", {})})
    if snr_keys:
        md += ["## Accuracy per SNR", "",
               "Accuracy on noisy audio at each SNR (mean over noise types); the first row is clean audio.",
               "", "![accuracy vs SNR](accuracy_vs_snr.png)", ""]
        rows = [["clean"] + [cell(e.metrics.get("Acc")) for e in entries]]
        rows += [[f"{k} dB"] + [cell(e.metrics.get("noisy_by_snr", {}).get(k)) for e in entries]
                 for k in snr_keys]
        md += [_table(["SNR"] + [e.name for e in entries], rows), ""]
    md += evidence_markdown([(e.name, e.metrics) for e in entries], cell, strong)  # the reasoning format
    types = []
    for e in entries:
        types += [t for t in e.metrics.get("noisy_by_noise_type", {}) if t not in types]
    if types:
        md += ["## Accuracy per noise type", "", "Mean over SNR levels.", "",
               "![accuracy per noise type](accuracy_by_noise_type.png)", ""]
        rows = [[t] + [cell(e.metrics.get("noisy_by_noise_type", {}).get(t)) for e in entries] for t in types]
        md += [_table(["Noise type"] + [e.name for e in entries], rows), ""]
    tasks = []
    for e in entries:
        tasks += [t for t in (e.metrics.get("by_task") or {}) if t not in tasks]
    if tasks:
        md += ["## Per task", "", "Acc / Noisy per task.", ""]
        hdr = ["Task"] + [f"{e.name} {k}" for e in entries for k in ("Acc", "Noisy")]
        rows = [[t] + [cell((e.metrics.get("by_task") or {}).get(t, {}).get(k))
                       for e in entries for k in ("Acc", "Noisy")] for t in tasks]
        md += [_table(hdr, rows), ""]
    inv = [e for e in entries if e.metrics.get("invalid_by_condition")]
    if inv:
        md += ["## Invalid answers per condition", ""]
        rows = [[c] + [cell(e.metrics["invalid_by_condition"].get(c)) for e in inv]
                for c in ("clean", "noisy", "silent")]
        md += [_table(["Condition"] + [e.name for e in inv], rows), ""]
    if notes:
        md += ["## Notes", ""] + [f"* {_md(n)}" for n in notes] + [""]
    md += ["## Runs", ""]
    md += [f"* `{_code(e.name)}`: " + ", ".join(f"`{_code(r.dir)}`" + (f" (split {_md(r.split)})" if r.split else "")
                                          for r in e.runs) for e in entries]
    md += ["", "All numbers are also in `report.json`."]
    return "\n".join(md) + "\n"
