"""`echodistill data check`: every problem kind is found, located (file:line, item id) and given a fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bad_inputs import MAX_DURATION_S, make_bad_corpus, make_clean_manifest

from echodistill.data.check import check_manifest, run_check

ALL_KINDS = {"missing_audio", "unreadable_audio", "empty_audio", "nonfinite_audio", "silent_audio", "too_long",
             "target_not_in_choices", "duplicate_id", "too_few_choices", "duplicate_choices", "leakage",
             "position_bias", "malformed_json", "missing_field", "bad_field", "non_utf8", "noisy_length_mismatch",
             "empty_target"}


def test_every_kind_is_reported_with_location_and_fix(tmp_path):
    m, expected = make_bad_corpus(tmp_path)
    assert set(expected) == ALL_KINDS
    problems = check_manifest(m, max_duration_s=MAX_DURATION_S)
    found = {p.kind for p in problems}
    assert ALL_KINDS <= found, ALL_KINDS - found
    assert "check_failed" not in found
    for kind, places in expected.items():
        for line, item_id in places:
            if kind == "position_bias":
                assert any(p.kind == kind and p.location == str(m) for p in problems)
                continue
            loc = f"{m}:{line}" + (f" (item {item_id})" if item_id else "")
            hits = [p for p in problems if p.kind == kind and p.location == loc]
            assert hits, f"{kind} not reported at {loc}: {[str(p) for p in problems if p.kind == kind]}"
            assert all(p.fix and p.message for p in hits)
    # Noisy-clip problems say which clip is at fault.
    assert any(p.kind == "missing_audio" and "noisy audio" in p.message for p in problems)


def test_stereo_48k_and_fine_items_are_not_reported(tmp_path):
    m, _ = make_bad_corpus(tmp_path)
    problems = check_manifest(m, max_duration_s=MAX_DURATION_S)
    lines = m.read_bytes().split(b"\n")
    ok_lines = [n for n, raw in enumerate(lines, 1) if b'"id": "stereo"' in raw or b'"id": "after"' in raw
                or b'"id": "leak_a"' in raw]
    assert len(ok_lines) == 3
    assert not [p for p in problems if any(p.location.startswith(f"{m}:{n} ") for n in ok_lines)]


def test_run_check_exit_codes_and_summary(tmp_path, capsys):
    bad, _ = make_bad_corpus(tmp_path / "bad")
    assert run_check(bad, None, "auto", MAX_DURATION_S) == 2
    out = capsys.readouterr().out
    assert " — fix: " in out and "problem(s)" in out and "leakage: 2" in out
    clean = make_clean_manifest(tmp_path / "clean")
    assert check_manifest(clean, max_duration_s=MAX_DURATION_S) == []
    assert run_check(clean, None, "auto", MAX_DURATION_S) == 0


def test_path_map_fixes_missing_audio(tmp_path):
    clean = make_clean_manifest(tmp_path / "clean")
    moved = tmp_path / "moved.jsonl"
    moved.write_text(clean.read_text().replace(str(tmp_path / "clean"), "/nowhere/data"))
    assert {p.kind for p in check_manifest(moved)} == {"missing_audio"}
    assert check_manifest(moved, path_map={"/nowhere/data": str(tmp_path / "clean")}) == []


def test_cli_never_prints_a_traceback(tmp_path):
    bad, _ = make_bad_corpus(tmp_path)
    exe = Path(sys.executable).parent / "echodistill"
    r = subprocess.run([str(exe), "data", "check", str(bad), "--max-duration", str(MAX_DURATION_S)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    assert "non_utf8" in r.stdout and "position_bias" in r.stdout
    r = subprocess.run([str(exe), "data", "check", str(tmp_path / "absent.jsonl")], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "not found" in r.stderr


def test_garbage_files_do_not_crash(tmp_path):
    for name, data in {"bin.jsonl": bytes(range(256)) * 4, "empty.jsonl": b"", "list.json": b"[1, 2,",
                       "obj.json": b'{"a": 1}', "scalars.jsonl": b"1\n[]\nnull\n\"s\"\n"}.items():
        p = tmp_path / name
        p.write_bytes(data)
        problems = check_manifest(p)
        assert "check_failed" not in {q.kind for q in problems}
        if data:
            assert problems, name
