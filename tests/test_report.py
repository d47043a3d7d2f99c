"""eval.report: files written, names and definitions present, seeds pooled, bad input explained."""

import json

import pytest

from echodistill.errors import UserError
from echodistill.eval.metrics import GSR_DEFINITION, compute_metrics
from echodistill.eval.report import make_report

from test_metrics import hand_rows


def _rows(n_copies, flip=0):
    rows = sum((hand_rows(f"r{k}-") for k in range(n_copies)), [])
    out = []
    for j, r in enumerate(rows):  # flip: make every flip-th noisy row right
        if flip and r["condition"] == "noisy" and j % flip == 0:
            r = dict(r, answer="a", correct=True, invalid=False)
        out.append(r)
    return out


def _write_run(d, rows=None, metrics=True, name=None, method="model"):
    d.mkdir(parents=True)
    if rows is not None:
        with open(d / "predictions.jsonl", "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    if metrics:
        m = compute_metrics(rows, n_boot=100) if rows is not None else metrics
        (d / "metrics.json").write_text(json.dumps(
            {"name": name or d.name, "split": "test", "method": method, "metrics": m}))
    return d


def test_report_writes_md_png_json(tmp_path):
    a = _write_run(tmp_path / "baseline-run", _rows(8))
    b = _write_run(tmp_path / "better-run", _rows(8, flip=2), metrics=False)  # predictions only
    out = tmp_path / "report"
    rep = make_report([a, b], out, n_boot=200)
    md = (out / "report.md").read_text()
    assert "baseline-run" in md and "better-run" in md
    assert GSR_DEFINITION in md
    assert "Differences vs baseline-run" in md
    for png in ("accuracy_vs_snr.png", "accuracy_by_noise_type.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    js = json.loads((out / "report.json").read_text())
    assert js["baseline"] == "baseline-run" == rep["baseline"]
    assert [r["name"] for r in js["runs"]] == ["baseline-run", "better-run"]
    diff = js["paired"][0]["metrics"]["Noisy"]
    assert diff["diff"] > 0 and diff["n"] == 32


def test_report_deterministic_and_baseline_choice(tmp_path):
    a = _write_run(tmp_path / "a", _rows(4))
    b = _write_run(tmp_path / "b", _rows(4, flip=3))
    r1 = make_report([a, b], tmp_path / "o1", baseline="b", n_boot=100)
    r2 = make_report([a, b], tmp_path / "o2", baseline="b", n_boot=100)
    assert r1["paired"] == r2["paired"] and r1["baseline"] == "b"
    assert r1["paired"][0]["run"] == "a"
    with pytest.raises(UserError, match="not one of the runs"):
        make_report([a, b], tmp_path / "o3", baseline="zzz", n_boot=50)


def test_seeds_are_pooled(tmp_path):
    base = _write_run(tmp_path / "base", _rows(4))
    s0 = _write_run(tmp_path / "grpo-s0", _rows(4, flip=2))
    s1 = _write_run(tmp_path / "grpo-s1", _rows(4, flip=3))
    rep = make_report([base, s0, s1], tmp_path / "out", n_boot=100)
    names = [r["name"] for r in rep["runs"]]
    assert names == ["base", "grpo"]
    g = rep["runs"][1]
    assert g["seeds"] == [0, 1] and len(g["seed_spread"]["Noisy"]["per_seed"]) == 2
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Seeds" in md and "grpo-s0" in md


def test_metrics_json_only_run(tmp_path):
    a = _write_run(tmp_path / "a", _rows(4))
    b = tmp_path / "b"
    _write_run(b, None, metrics=compute_metrics(_rows(4), n_boot=50))
    make_report([a, b], tmp_path / "out", n_boot=50)
    md = (tmp_path / "out" / "report.md").read_text()
    assert "No paired differences for `b`" in md


def test_bad_run_dirs_raise_user_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="empty.*echodistill eval"):
        make_report([empty], tmp_path / "out")
    with pytest.raises(UserError, match="no such folder"):
        make_report([tmp_path / "missing"], tmp_path / "out")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "predictions.jsonl").write_text('{"id": "A", "condition": "clean", "correct": true}\n{oops\n')
    with pytest.raises(UserError, match="predictions.jsonl:2"):
        make_report([bad], tmp_path / "out")


def test_report_md_escapes_markup_in_names(tmp_path):
    evil = "<img src=x onerror=alert(1)>`pwn"
    a = _write_run(tmp_path / "base", _rows(4), name=evil)
    b = _write_run(tmp_path / "other", _rows(4, flip=2))
    make_report([a, b], tmp_path / "report", n_boot=50)
    md = (tmp_path / "report" / "report.md").read_text()
    import re
    assert not re.findall(r"(?<!`)<img", md) and "&lt;img src=x onerror=alert(1)&gt;" in md  # markup only as text
    assert "`<img src=x onerror=alert(1)>'pwn`" in md  # in a code span: shown as text, cannot close it early
