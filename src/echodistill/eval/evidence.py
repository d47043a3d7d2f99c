"""Evidence metrics of the reasoning format: is what the model says it hears what the clip contains?

Pure numpy. Reads the prediction rows ``echodistill eval`` writes in the reasoning format: besides the
answer fields, ``evidence`` (the stated evidence, the think span; None when the tags are broken),
``evidence_target`` (the item's evidence, what the clip contains; None when the manifest has none) and
``well_formed``. Rows of the answer format carry none of these: :func:`has_evidence` is False and no
figure below is computed.

Per row:

* **evidence F1** -- bag-of-words F1 of the stated evidence against the item's evidence (SQuAD's token
  F1 on the shared normalisation ``data.answers.normalize``; no stated evidence scores 0);
* **evidence exact** -- the stated evidence has exactly the item's evidence words, in order;
* **right for the wrong reason** -- among correct answers, the evidence is not exact (the answer came
  from somewhere other than what was heard);
* **hallucinated** (silent audio only) -- the stated evidence asserts content, i.e. has a word outside
  :data:`NO_CONTENT_WORDS` ("nothing", "silence", ...), where the clip has none;
* **answer-evidence agreement** -- the stated answer is the answer the stated evidence implies. What
  evidence implies is read from the evaluated items themselves: per task, the items' true evidence ->
  target (``implied_answers``); rows whose stated evidence is no item's evidence of that task, or
  that give no answer, cannot be checked and are left out (``n_obs`` says how many were checked).

Figures are :mod:`eval.metrics`' ``{"value", "ci_low", "ci_high", "n", "n_obs"}`` with the same
cluster bootstrap over items (seeds tagged by ``combine_seeds`` are averaged within an item).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Iterable, Optional, Sequence

import numpy as np

from ..data.answers import normalize
from .metrics import _figure, _macro, _ratio, _weights, snr_key

# Words a model may use to say that it hears nothing: evidence made only of these asserts no content.
NO_CONTENT_WORDS = frozenset(
    "nothing no sound sounds silence silent quiet noise noises none empty i hear heard can cant not anything "
    "only just there is it its a the".split())

EVIDENCE_DEFINITIONS = {
    "EvidenceF1": "bag-of-words F1 of the stated evidence against what the clip contains (no evidence = 0)",
    "EvidenceExact": "share of answers whose stated evidence has exactly the clip's evidence words, in order",
    "RightWrongReason": "share of correct answers whose stated evidence is not exact: right for the wrong reason",
    "Hallucinated": "share of silent-audio answers whose evidence asserts content (a word other than "
                    "'nothing', 'silence', ...)",
    "Agreement": "share of answers that are what their stated evidence implies (per task, the items' "
                 "evidence -> target); unverifiable evidence left out",
    "WellFormed": "share of clean and noisy completions that follow <think>E</think><answer>A</answer>",
}
ROW_FIGURES = ("EvidenceF1", "EvidenceExact", "RightWrongReason", "Agreement", "WellFormed")


def words(text: Optional[str]) -> list[str]:
    return normalize(text).split() if isinstance(text, str) else []


def evidence_f1(stated: Optional[str], true: Optional[str]) -> float:
    """Token F1 (bag of words, SQuAD) of ``stated`` against ``true``; 0 when nothing is stated."""
    s, t = words(stated), words(true)
    if not s or not t:
        return float(s == t and stated is not None)
    common = sum((Counter(s) & Counter(t)).values())
    if common == 0:
        return 0.0
    p, r = common / len(s), common / len(t)
    return 2 * p * r / (p + r)


def evidence_exact(stated: Optional[str], true: Optional[str]) -> bool:
    return stated is not None and bool(words(true)) and words(stated) == words(true)


def asserts_content(stated: Optional[str]) -> bool:
    """True when ``stated`` names something heard (a word outside ``NO_CONTENT_WORDS``)."""
    return any(w not in NO_CONTENT_WORDS for w in words(stated))


def has_evidence(rows: Iterable[dict]) -> bool:
    """Whether any row carries an item's evidence (reasoning-format rows of items with evidence)."""
    return any(r.get("evidence_target") for r in rows)


def implied_answers(rows: Iterable[dict]) -> dict:
    """``(task, evidence words) -> target`` from the rows' items; evidence that maps to two targets in one
    task is left out (it implies no single answer)."""
    seen: dict = defaultdict(set)
    for r in rows:
        if r.get("evidence_target") and r.get("target") is not None:
            seen[(str(r.get("task")), " ".join(words(r["evidence_target"])))].add(str(r["target"]))
    return {k: next(iter(v)) for k, v in seen.items() if len(v) == 1}


def row_values(row: dict, implied: dict) -> dict[str, Optional[float]]:
    """Each figure's value for one row (None: the row does not count for it)."""
    stated, true = row.get("evidence"), row.get("evidence_target")
    cond = row.get("condition")
    out: dict[str, Optional[float]] = dict.fromkeys(ROW_FIGURES + ("Hallucinated",))
    if cond == "silent":
        out["Hallucinated"] = float(asserts_content(stated))
        return out
    if "well_formed" in row:
        out["WellFormed"] = float(bool(row["well_formed"]))
    if not true:
        return out
    exact = evidence_exact(stated, true)
    out["EvidenceF1"] = evidence_f1(stated, true)
    out["EvidenceExact"] = float(exact)
    correct = bool(row.get("correct")) and not row.get("invalid")
    if correct:
        out["RightWrongReason"] = float(not exact)
    target = implied.get((str(row.get("task")), " ".join(words(stated))))
    if target is not None and row.get("answer") is not None:
        out["Agreement"] = float(str(row["answer"]) == target)
    return out


def evidence_metrics(rows: Sequence[dict], strong_snr_max: float = 0.0, n_boot: int = 1000,
                     seed: int = 0) -> dict:
    """The evidence figures with bootstrap 95 % intervals (items resampled, as ``compute_metrics``).

    Returns ``{"clean": {fig name: fig}, "noisy": {...}, "strong": {...}, "silent": {"Hallucinated": fig},
    "noisy_by_snr": {snr: {"EvidenceF1", "RightWrongReason"}}, "noisy_by_noise_type": {...},
    "by_task": {task: {"EvidenceF1" clean, "EvidenceF1Noisy"}}, "definitions": {...}}``. Noisy figures
    are the mean over the noise type x SNR cells of the per-cell values (as ``Noisy``).
    """
    rows = list(rows)
    implied = implied_answers(rows)
    ids = sorted({str(r["id"]) for r in rows})
    cells = sorted({(str(r["noise_type"]), float(r["snr"])) for r in rows if r.get("condition") == "noisy"})
    iidx, cidx = {i: k for k, i in enumerate(ids)}, {c: k for k, c in enumerate(cells)}
    names = ROW_FIGURES + ("Hallucinated",)
    # columns: 0 = clean, 1 = silent, 2.. = noisy cells
    num = {n: np.zeros((len(ids), 2 + len(cells))) for n in names}
    den = {n: np.zeros((len(ids), 2 + len(cells))) for n in names}
    task_of: dict = {}
    for r in rows:
        i = iidx[str(r["id"])]
        task_of.setdefault(str(r["id"]), str(r.get("task") or "unknown"))
        cond = r.get("condition")
        col = 0 if cond == "clean" else 1 if cond == "silent" else 2 + cidx[(str(r["noise_type"]), float(r["snr"]))]
        for n, v in row_values(r, implied).items():
            if v is not None:
                num[n][i, col] += v
                den[n][i, col] += 1
    W = _weights(len(ids), n_boot, seed)
    snr = np.array([c[1] for c in cells], dtype=float)
    ntype = np.array([c[0] for c in cells], dtype=object)
    tasks = np.array([task_of[i] for i in ids], dtype=object)

    def count(d: np.ndarray) -> tuple[int, int]:
        per_item = d.sum(1)
        return int((per_item > 0).sum()), int(round(per_item.sum()))

    def fig(n: str, cols: np.ndarray, mask: Optional[np.ndarray] = None, macro: bool = False) -> dict:
        m = np.ones(len(ids)) if mask is None else mask.astype(float)
        a, b = num[n] * m[:, None], den[n] * m[:, None]
        if macro:
            draws = _macro(W, a[:, 2:], b[:, 2:], cols[2:])
        else:
            draws = _ratio(W, a[:, cols].sum(1), b[:, cols].sum(1))
        return _figure(draws, *count(b[:, cols]))

    def cols_of(noisy: Optional[np.ndarray] = None, clean: bool = False, silent: bool = False) -> np.ndarray:
        c = np.zeros(2 + len(cells), bool)
        c[0], c[1] = clean, silent
        if noisy is not None:
            c[2:] = noisy
        return c

    all_noisy = cols_of(np.ones(len(cells), bool))
    strong = cols_of(snr <= strong_snr_max)
    out: dict = {
        "clean": {n: fig(n, cols_of(clean=True)) for n in ROW_FIGURES},
        "noisy": {n: fig(n, all_noisy, macro=True) for n in ROW_FIGURES},
        "strong": {n: fig(n, strong, macro=True) for n in ROW_FIGURES},
        "silent": {"Hallucinated": fig("Hallucinated", cols_of(silent=True))},
        "noisy_by_snr": {snr_key(s): {n: fig(n, cols_of(snr == s), macro=True) for n in ("EvidenceF1", "RightWrongReason")}
                         for s in sorted(set(snr.tolist()))},
        "noisy_by_noise_type": {t: {n: fig(n, cols_of(ntype == t), macro=True) for n in ("EvidenceF1", "RightWrongReason")}
                                for t in sorted(set(ntype.tolist()))},
        "by_task": {t: {"EvidenceF1": fig("EvidenceF1", cols_of(clean=True), tasks == t),
                        "EvidenceF1Noisy": fig("EvidenceF1", all_noisy, tasks == t, macro=True)}
                    for t in sorted(set(tasks.tolist()))},
        "definitions": dict(EVIDENCE_DEFINITIONS),
    }
    return out




def evidence_markdown(named: Sequence[tuple[str, dict]], cell, strong_snr_max: float = 0.0) -> list[str]:
    """The report's evidence section (Markdown lines) for ``(run name, metrics)`` pairs; [] when no run has
    evidence figures. ``cell``: the report's figure formatter (``value [low, high]``)."""
    named = [(n, m["evidence"]) for n, m in named if isinstance(m.get("evidence"), dict)]
    if not named:
        return []
    s = f"{strong_snr_max:g}"
    md = ["## Evidence (reasoning format)", "",
          "What the model says it hears (`<think>`) against what the clip contains (the item's evidence). "
          + " ".join(f"**{k}**: {v}." for k, v in EVIDENCE_DEFINITIONS.items()), ""]
    rows = []
    for label, key in (("Evidence F1, clean", ("clean", "EvidenceF1")), ("Evidence F1, noisy", ("noisy", "EvidenceF1")),
                       (f"Evidence F1, strong noise (≤{s} dB)", ("strong", "EvidenceF1")),
                       ("Evidence exact, clean", ("clean", "EvidenceExact")),
                       ("Evidence exact, noisy", ("noisy", "EvidenceExact")),
                       ("Right for the wrong reason, clean", ("clean", "RightWrongReason")),
                       ("Right for the wrong reason, noisy", ("noisy", "RightWrongReason")),
                       ("Answer-evidence agreement, noisy", ("noisy", "Agreement")),
                       ("Hallucinated evidence, silent audio", ("silent", "Hallucinated")),
                       ("Well-formed, noisy", ("noisy", "WellFormed"))):
        rows.append([label] + [cell(m.get(key[0], {}).get(key[1])) for _, m in named])
    md += _md_table(["Figure"] + [n for n, _ in named], rows) + [""]
    snrs = sorted({k for _, m in named for k in m.get("noisy_by_snr", {})}, key=float)
    if snrs:
        md += ["Evidence F1 per SNR (mean over noise types); the first row is clean audio.", ""]
        rows = [["clean"] + [cell(m["clean"].get("EvidenceF1")) for _, m in named]]
        rows += [[f"{k} dB"] + [cell(m.get("noisy_by_snr", {}).get(k, {}).get("EvidenceF1")) for _, m in named]
                 for k in snrs]
        md += _md_table(["SNR"] + [n for n, _ in named], rows) + [""]
    types = sorted({t for _, m in named for t in m.get("noisy_by_noise_type", {})})
    if types:
        md += ["Evidence F1 per noise type (mean over SNR levels).", ""]
        rows = [[t] + [cell(m.get("noisy_by_noise_type", {}).get(t, {}).get("EvidenceF1")) for _, m in named]
                for t in types]
        md += _md_table(["Noise type"] + [n for n, _ in named], rows) + [""]
    return md


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]

__all__ = ["evidence_metrics", "evidence_markdown", "evidence_f1", "evidence_exact", "asserts_content", "has_evidence", "implied_answers",
           "row_values", "NO_CONTENT_WORDS", "EVIDENCE_DEFINITIONS"]
