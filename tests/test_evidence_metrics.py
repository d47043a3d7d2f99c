"""Evidence metrics of the reasoning format, on hand-built prediction rows with hand-computed values."""

import pytest

from echodistill.eval.evidence import (asserts_content, evidence_exact, evidence_f1, evidence_metrics,
                                       implied_answers, row_values)
from echodistill.eval.metrics import compute_metrics


def test_f1_exact_and_content():
    assert evidence_f1("x ray", "x ray") == 1.0
    assert evidence_f1("X-ray.", "x ray") == 1.0  # the shared normalisation
    assert evidence_f1("x", "x ray") == pytest.approx(2 * 1 * 0.5 / 1.5)
    assert evidence_f1("piano, three notes, falling", "piano, three notes, rising") == pytest.approx(0.75)
    assert evidence_f1(None, "x ray") == 0.0 and evidence_f1("", "x ray") == 0.0
    assert evidence_exact("X ray", "x ray") and not evidence_exact("ray x", "x ray") and not evidence_exact(None, "x")
    assert not asserts_content("") and not asserts_content(None) and not asserts_content("nothing, silence")
    assert asserts_content("I hear a piano") and asserts_content("x ray")


def _row(id_, cond, answer, target, stated, true="x ray", task="word_initial", snr=None, nt=None, wf=True):
    return {"id": id_, "task": task, "condition": cond, "noise_type": nt, "snr": snr, "answer": answer,
            "target": target, "correct": answer == target, "invalid": answer is None,
            "evidence": stated, "evidence_target": true, "well_formed": wf}


ROWS = [
    # item a (true: "x ray" -> X): clean right for the right reason; noisy right for the wrong reason
    _row("a", "clean", "X", "X", "x ray"),
    _row("a", "noisy", "X", "X", "yankee", snr=0.0, nt="white"),
    _row("a", "silent", "Y", "X", "yankee"),  # hallucinated
    # item b (true: "yankee" -> Y): clean wrong despite hearing right; noisy broken format
    _row("b", "clean", "X", "Y", "yankee", true="yankee"),
    _row("b", "noisy", None, "Y", None, true="yankee", snr=0.0, nt="white", wf=False),
    _row("b", "silent", None, "Y", "", true="yankee"),  # empty think: nothing asserted
]


def test_row_values_and_implied_answers():
    implied = implied_answers(ROWS)
    assert implied == {("word_initial", "x ray"): "X", ("word_initial", "yankee"): "Y"}
    v = row_values(ROWS[1], implied)
    assert v["EvidenceF1"] == 0.0 and v["RightWrongReason"] == 1.0 and v["Agreement"] == 0.0
    v = row_values(ROWS[3], implied)  # heard right, answered wrong: disagreement, not "wrong reason"
    assert v["EvidenceExact"] == 1.0 and v["RightWrongReason"] is None and v["Agreement"] == 0.0
    assert row_values(ROWS[2], implied)["Hallucinated"] == 1.0 and row_values(ROWS[5], implied)["Hallucinated"] == 0.0


def test_evidence_metrics_values():
    m = evidence_metrics(ROWS, n_boot=50, seed=0)
    assert m["clean"]["EvidenceF1"]["value"] == 1.0 and m["clean"]["EvidenceExact"]["n"] == 2
    assert m["clean"]["RightWrongReason"]["value"] == 0.0 and m["clean"]["RightWrongReason"]["n_obs"] == 1
    assert m["clean"]["Agreement"]["value"] == 0.5
    assert m["noisy"]["EvidenceF1"]["value"] == 0.0 and m["noisy"]["RightWrongReason"]["value"] == 1.0
    assert m["noisy"]["WellFormed"]["value"] == 0.5
    assert m["silent"]["Hallucinated"]["value"] == 0.5
    assert m["noisy_by_snr"]["0"]["EvidenceF1"]["value"] == 0.0
    assert set(m["by_task"]) == {"word_initial"}
    lo, hi = m["silent"]["Hallucinated"]["ci_low"], m["silent"]["Hallucinated"]["ci_high"]
    assert 0.0 <= lo <= 0.5 <= hi <= 1.0


def test_compute_metrics_adds_evidence_only_for_reasoning_rows():
    assert "evidence" in compute_metrics(ROWS, n_boot=10)
    answer_rows = [{k: v for k, v in r.items() if k not in ("evidence", "evidence_target", "well_formed")}
                   for r in ROWS]
    assert "evidence" not in compute_metrics(answer_rows, n_boot=10)


def test_report_shows_evidence_with_seeds(tmp_path):
    import json

    from echodistill.eval.report import make_report

    dirs = []
    for k in range(2):  # two seeds of one method: pooled, evidence figures recomputed from the rows
        d = tmp_path / f"reason-s{k}"
        d.mkdir()
        (d / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
        dirs.append(d)
    make_report(dirs, tmp_path / "report", n_boot=20)
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## Evidence (reasoning format)" in md and "Hallucinated evidence, silent audio" in md
    assert "Evidence F1 per SNR" in md and "| 0 dB |" in md


def test_seed_aware_evidence_scores():
    from echodistill.eval.seeds import compare, item_scores

    assert item_scores(ROWS, "CleanEvidenceF1") == {"a": 1.0, "b": 1.0}
    assert item_scores(ROWS, "EvidenceF1") == {"a": 0.0, "b": 0.0}
    assert item_scores(ROWS, "RightWrongReason") == {"a": 1.0}  # b has no correct noisy answer
    assert item_scores(ROWS, "Hallucinated") == {"a": 1.0, "b": 0.0}
    better = [dict(r, evidence=r["evidence_target"]) if r["condition"] == "noisy" else r for r in ROWS]
    c = compare([better, better], [ROWS, ROWS], "EvidenceF1", n_boot=200)
    assert c["diff"] == 1.0 and c["n_items"] == 2 and c["boot_low"] == 1.0
