"""Round 4 (issue 27): the plan a spec expands to, the tuning choice written for the test spec, the store
checked against the plan, and extendability -- a seed added later by a second process from nothing (the
warm-up rebuilt bit-identically, the store accepting the new unit)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from echodistill.eval import plan as P
from echodistill.eval.nested_report import nested_report, verdict
from echodistill.eval.store import read_store, write_run
from echodistill.eval.tuning_plot import tuning_figure
from train_helpers import make_dataset

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "experiment.py"


def _spec(tmp: Path, **over) -> dict:
    spec = {"title": "t", "store": str(tmp / "store"), "split": "val", "work": str(tmp / "work"),
            "bench": str(tmp / "bench"), "model": str(tmp / "model"), "formats": {"answer": []},
            "warmup_seeds": [0, 1], "seeds": [0, 1], "warmups": {"full": {"overrides": []}},
            "grids": {"g": {"train.learning_rate": [1e-4, 3e-4], "train.beta": [0.0, 0.04]}},
            "methods": {"grpo": {"warmup": "full", "grid": "g", "train": ["train.variant=grpo"]},
                        "later": {"warmup": "full", "pending": "a knob not in main"},
                        "typo": {"warmup": "full", "train": ["train.no_such_key=1"], "needs": "issue 99"}}}
    spec.update(over)
    return spec


def _rows(n_right: int, n: int = 20) -> list[dict]:
    out = []
    for i in range(n):
        ok = i < n_right
        for cond, snr in (("clean", None), ("noisy", -5.0)):
            out.append({"id": f"i{i}", "task": "t", "target": "a", "condition": cond, "noise_type": None if snr is None
                        else "white", "snr": snr, "answer": "a" if ok else "b", "correct": ok, "invalid": False})
    return out


def test_the_plan_crosses_formats_warmups_seeds_and_grid_and_blocks_what_cannot_run(tmp_path):
    units = P.plan_units(_spec(tmp_path))
    grpo = [u for u in units if u.method == "grpo"]
    assert len(grpo) == 4 * 2 * 2 and not any(u.blocked for u in grpo)  # 4 grid points x 2 warm-ups x 2 seeds
    assert grpo[0].name == "grpo-answer-beta0-lr0.0001-w0-s0"
    assert {u.blocked for u in units if u.method == "later"} == {"pending: a knob not in main"}
    typo = {u.blocked for u in units if u.method == "typo"}.pop()
    assert "no_such_key" in typo and typo.endswith("needs issue 99")
    assert [w.name for w in P.warmup_units({}, units)] == ["warmup-full-answer-w0", "warmup-full-answer-w1"]


def test_choose_applies_the_rule_and_the_test_spec_reads_the_choice(tmp_path):
    spec = _spec(tmp_path, warmup_seeds=[0])
    units = [u for u in P.plan_units(spec) if u.method == "grpo"]
    # strong GSR by point: lr1e-4/beta0 0.50, lr1e-4/beta0.04 0.50 (tie -> beta 0), lr3e-4/* 0.45
    right = {"beta0-lr0.0001": 10, "beta0.04-lr0.0001": 10, "beta0-lr0.0003": 9, "beta0.04-lr0.0003": 9}

    class Run:
        def __init__(self, rows):
            self.rows = rows

    runs = {u.name: Run(_rows(right[u.label])) for u in units}
    table = P.tuning_table(spec, units, runs)
    pick = P.choose(table[("answer", "grpo")])
    assert pick["point"] == {"train.beta": 0.0, "train.learning_rate": 1e-4} and pick["mean"] == 0.5
    figure = tuning_figure(table, {("answer", "grpo"): pick}, tmp_path / "tuning.png")
    assert figure is not None and figure.stat().st_size > 1000
    # one missing seed: no choice for that method yet
    runs.pop(units[0].name)
    assert P.choose(P.tuning_table(spec, units, runs)[("answer", "grpo")]) is None
    # the chosen file -> the test spec's units run that point
    chosen = tmp_path / "chosen.yaml"
    chosen.write_text(yaml.safe_dump({"chosen": {"answer": {"grpo": {"point": pick["point"]}}}}))
    test_spec = _spec(tmp_path, chosen=str(chosen), methods={"grpo": {"warmup": "full", "train": ["train.variant=grpo"]},
                                                             "other": {"warmup": "full"}})
    tu = P.plan_units(test_spec)
    assert {u.name for u in tu if u.method == "grpo"} == {f"grpo-answer-beta0-lr0.0001-w{w}-s{s}" for w in (0, 1)
                                                          for s in (0, 1)}
    assert all("not tuned yet" in u.blocked for u in tu if u.method == "other")


def test_the_report_flags_choices_at_an_end_of_their_grid_and_states_the_code_between_frozen_commits(tmp_path):
    grids = {"g": {"train.learning_rate": [3e-5, 1e-4, 3e-4], "train.beta": [0.0, 0.04]},
             "sft": {"warmup.learning_rate": [3e-5, 1e-4, 3e-4]}}
    assert P.grid_edges({"train.learning_rate": 3e-4, "train.beta": 0.04}, grids) == [
        "learning_rate 0.0003 (the grid's highest)"]  # beta has 2 values: no inside to be at an end of
    assert P.grid_edges({"warmup.learning_rate": 3e-5}, grids) == ["learning_rate 3e-05 (the grid's lowest)"]
    assert P.grid_edges({"train.learning_rate": 1e-4, "train.beta": 0.0}, grids) == []
    chosen = tmp_path / "chosen.yaml"
    chosen.write_text(yaml.safe_dump({"chosen": {"answer": {
        "grpo": {"point": {"train.learning_rate": 1e-4, "train.beta": 0.04}},
        "sft-noisy": {"point": {"warmup.learning_rate": 3e-4}}}}}))
    spec = _spec(tmp_path, grids=grids, chosen=str(chosen), methods={"grpo": {"warmup": "full"}})
    text = nested_report(spec, [], [], n_boot=10)
    assert "| answer | grpo | beta0.04-lr0.0001 | no |" in text
    assert "| answer | sft-noisy | lr0.0003 | learning_rate 0.0003 (the grid's highest) |" in text
    assert "The code between" not in text  # one frozen commit: no diff to state
    diff = [" src/x.py | 2 +-", " 1 file changed, 1 insertion(+), 1 deletion(-)"]
    assert "```\n" + "\n".join(diff) + "\n```" in nested_report(spec, [], [], n_boot=10, commit_diff=diff)


def test_choose_writes_no_choice_file_before_any_grid_is_complete(tmp_path):
    spec = _spec(tmp_path, warmup_seeds=[0], methods={"grpo": {"warmup": "full", "grid": "g",
                                                               "train": ["train.variant=grpo"]}})
    spec_path = tmp_path / "tune.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "chosen.yaml"
    res = _run(spec_path, "choose", "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert not out.exists() and "not written" in res.stdout
    assert not (tmp_path / "store" / "tuning.png").exists()  # nothing stored: nothing to draw
    assert "| answer | grpo | beta0-lr0.0001 | - | - |  |" in (tmp_path / "store" / "tuning.md").read_text()


def test_a_unit_from_another_build_of_its_warmup_keeps_the_store_incomplete(tmp_path):
    """A warm-up rebuilt elsewhere with other bits (an AVX-512 machine's kernels) is another starting point."""
    spec = _spec(tmp_path, grids={}, warmup_seeds=[0], methods={"a": {"warmup": "full"}, "b": {"warmup": "full"}})
    units = P.plan_units(spec)
    metas = {n: {"start_sha256": "w0", "method": u.method, "format": "answer", "warmup_seed": 0, "seed": u.seed}
             for n, u in ((u.name, u) for u in units)}
    metas["warmup-full-answer-w0"] = {"start_sha256": "w0"}
    assert P.check_store(spec, units, metas).complete
    metas["b-answer-w0-s1"]["start_sha256"] = "elsewhere"
    check = P.check_store(spec, units, metas)
    assert check.other_build == ["b-answer-w0-s1"] and not check.complete
    assert any("another build of their warm-up" in line for line in check.lines())


def test_the_store_is_checked_against_the_plan_and_the_report_withholds_verdicts_until_complete(tmp_path):
    spec = _spec(tmp_path, grids={}, seeds=[0, 1], frozen_commit="abc1234",
                 methods={"a": {"warmup": "full"}, "b": {"warmup": "full"}},
                 contrasts={"P1": {"a": "a", "b": "b", "predicted": ">0", "role": "primary"}})
    units = P.plan_units(spec)
    store = Path(spec["store"])
    for u in units:
        if u.name == "b-answer-w1-s1":
            continue  # one planned unit missing
        write_run(store, u.name, method=u.method, seed=u.seed, split="val", rows=_rows(15 if u.method == "a" else 10),
                  start_sha256=f"w{u.warmup.seed}", final_sha256="f", eval_settings={"overrides": []},
                  extra={"format": "answer", "warmup": "full", "warmup_seed": u.warmup.seed, "point": {}}, threads=1)
    write_run(store, "a-answer-w5-s0", method="a", seed=0, split="val", rows=_rows(1), start_sha256="x",
              final_sha256="f", eval_settings={}, extra={"format": "answer", "warmup_seed": 5})
    metas = {d.name: json.loads((d / "run.json").read_text()) for d in store.iterdir()}
    assert metas["a-answer-w0-s0"]["machine"]["threads"] == 1 and metas["a-answer-w0-s0"]["machine"]["cpu_model"]
    check = P.check_store(spec, units, metas)
    assert check.missing == ["b-answer-w1-s1", "warmup-full-answer-w0", "warmup-full-answer-w1"]
    assert check.extra == ["a-answer-w5-s0"]
    # one row per (format, method), the warm-up first: counts, not hundreds of unit names
    table = [line for line in check.lines() if line.startswith("| answer |")]
    assert table == ["| answer | warmup-full | 0 | 2 | 0 |", "| answer | a | 4 | 0 | 0 |", "| answer | b | 3 | 1 | 0 |"]
    assert len(check.off_commit) == 7  # none of them was made from commit abc1234
    text = nested_report(spec, read_store(store, "val"), check.lines(), n_boot=500, complete=check.complete)
    assert "**extra, not in the plan** (1): a-answer-w5-s0" in text and "Frozen commit: answer `abc1234`." in text
    assert "(incomplete: no verdict)" in text and "| P1/answer | +25.0 |" in text
    only_a = [r for r in read_store(store, "val") if r.method == "a"]  # nothing to pair with: one row, not four
    text = nested_report(spec, only_a, check.lines(), n_boot=500, complete=False)
    assert text.count("no paired runs yet") == 1 and "| P1 | `a` - `b` | every metric | - |" in text
    res = {"diff": 0.01, "low": -0.02, "high": 0.04}
    assert verdict(res, 0.3, ">0") == "not shown (excludes the paper's margin)"
    assert verdict({**res, "diff": 0.05}, 0.01, ">0") == "shown better"
    assert verdict({**res, "diff": -0.05}, 0.01, ">0") == "shown worse"


def _run(spec_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return subprocess.run([sys.executable, str(SCRIPT), args[0], str(spec_path), *args[1:]], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=900)


@pytest.mark.slow
def test_a_seed_added_later_by_a_fresh_process_rebuilds_the_warmup_bit_identically_and_is_accepted(
        tmp_path, tiny_qwen2_audio_dir):
    """Process 1 runs the plan with one seed; everything but the store is then deleted (warm-up, runs,
    caches); process 2, with a second seed added to the spec, rebuilds the warm-up from the spec -- the
    same weights to the bit (sha256) -- and adds the new unit, which the store pairs with the first."""
    bench = make_dataset(tmp_path / "bench", n_train=4, n_val=2)
    work = tmp_path / "work"
    spec = {"title": "extend", "store": str(tmp_path / "store"), "split": "val", "work": str(work),
            "bench": str(bench), "model": str(tiny_qwen2_audio_dir), "formats": {"answer": []},
            "warmup_seeds": [0], "seeds": [0],
            "common": ["run.log_with=null", "data.max_duration_s=1.0", "model.backbone=embedded",
                       "noise.train_types=[white,music]", "eval.batch_size=2", "eval.max_new_tokens=3"],
            "warmups": {"full": {"overrides": ["warmup.prompts_per_device=2", "warmup.max_steps=2",
                                               "warmup.eval_steps=0", "warmup.learning_rate=3e-3",
                                               "warmup.warmup_ratio=0.0", "warmup.save_steps=1"]}},
            "train": ["train.num_generations=2", "train.prompts_per_device=2", "train.max_completion_length=3",
                      "train.max_steps=1", "train.eval_steps=0", "train.save_steps=1", "train.learning_rate=1e-3"],
            "eval": ["eval.snr_levels=[0]", "eval.noise_types=[white]", "eval.no_audio=false"],
            "methods": {"grpo": {"warmup": "full", "train": ["train.variant=grpo"]}},
            "feature_cache": str(tmp_path / "feats")}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    p1 = _run(path, "run", "--threads", "1")
    assert p1.returncode == 0, p1.stdout[-3000:] + p1.stderr[-3000:]
    first = json.loads((tmp_path / "store" / "grpo-answer-w0-s0" / "run.json").read_text())
    warm_sha = json.loads((tmp_path / "store" / "warmup-full-answer-w0" / "run.json").read_text())["final_sha256"]
    assert first["start_sha256"] == warm_sha and first["machine"]["threads"] == 1
    # every command ran with the CPU kernels pinned (recorded), and the evaluations shared the feature cache,
    # which is not a recorded setting
    assert first["machine"]["env"]["ONEDNN_MAX_CPU_ISA"] == "AVX2" and first["machine"]["env"]["OPENBLAS_CORETYPE"]
    assert any((tmp_path / "feats").rglob("batch-*.safetensors"))
    assert not any("feature_cache" in o for o in first["eval"]["overrides"])

    shutil.rmtree(work)  # a fresh clone: only the committed store is left
    spec["seeds"] = [0, 1]
    path.write_text(yaml.safe_dump(spec))
    p2 = _run(path, "run", "--threads", "1")
    assert p2.returncode == 0, p2.stdout[-3000:] + p2.stderr[-3000:]
    assert "warm-up warmup-full-answer-w0" in p2.stdout  # it was rebuilt, not found
    runs = {r.name: r for r in read_store(tmp_path / "store")}
    assert set(runs) == {"warmup-full-answer-w0", "grpo-answer-w0-s0", "grpo-answer-w0-s1"}
    assert runs["grpo-answer-w0-s1"].meta["start_sha256"] == first["start_sha256"]  # bit-identical warm-up
    check = _run(path, "check", "--strict")
    assert check.returncode == 0 and "missing 0, blocked 0, extra 0" in check.stdout, check.stdout + check.stderr


def test_made_from_accepts_a_clean_checkout_of_the_frozen_commit_only():
    assert P.made_from("45b579b", "45b579b1c2d3") and P.made_from("v0.4-12-g45b579b", "45b579b")
    assert not P.made_from("45b579b-dirty", "45b579b") and not P.made_from("7f66f16", "45b579b")
    assert not P.made_from("45b579b", "45b")  # too short to name a commit


def test_each_format_can_have_its_own_frozen_commit_and_a_test_run_without_one_is_refused(tmp_path):
    """``frozen_commit: {answer: A}``: the answer half is checked against A while the reasoning half, still
    being tuned, has none -- and `run` refuses its test units rather than run them from any code."""
    spec = _spec(tmp_path, grids={}, warmup_seeds=[0], seeds=[0], formats={"answer": [], "reasoning": []},
                 methods={"a": {"warmup": "full"}}, frozen_commit={"answer": "abc1234"})
    units = P.plan_units(spec, validate=False)
    assert (P.frozen_commit(spec, "answer"), P.frozen_commit(spec, "reasoning")) == ("abc1234", "")
    assert P.frozen_commit({"frozen_commit": "abc1234"}, "reasoning") == "abc1234"  # one commit for every format
    store = Path(spec["store"])
    for name, version in (("a-answer-w0-s0", "abc1234"), ("warmup-full-answer-w0", "def5678"),
                          ("a-reasoning-w0-s0", "def5678")):
        write_run(store, name, method="a", seed=0, split="val", rows=_rows(1), start_sha256="w", final_sha256="f",
                  eval_settings={}, extra={"code_version": version})
    metas = {d.name: json.loads((d / "run.json").read_text()) for d in store.iterdir()}
    assert P.check_store(spec, units, metas).off_commit == ["warmup-full-answer-w0"]

    path = tmp_path / "test.yaml"
    path.write_text(yaml.safe_dump({**spec, "split": "test"}))
    refused = _run(path, "run", "--formats", "reasoning")
    assert refused.returncode != 0 and "no frozen_commit for the reasoning format" in refused.stderr, refused.stderr
    refused = _run(path, "run", "--formats", "answer")  # this checkout is not commit abc1234
    assert refused.returncode != 0 and "the answer format's frozen_commit is abc1234" in refused.stderr, \
        refused.stderr
    # the commit reaches git's command line (the report's diff): anything but a hash is refused, clearly
    path.write_text(yaml.safe_dump({**spec, "split": "test", "frozen_commit": {"answer": "--output=x"}}))
    refused = _run(path, "check")
    assert refused.returncode != 0 and "frozen_commit (answer): '--output=x' is not a commit hash" in refused.stderr
    assert "Traceback" not in refused.stderr and not (REPO / "x").exists()


def test_the_store_keeps_the_reasoning_formats_evidence_fields_and_old_stores_still_read(tmp_path):
    rows = [{"id": "i0", "task": "t", "target": "a", "condition": "noisy", "noise_type": "white", "snr": -5.0,
             "answer": "a", "evidence": "a low tone", "evidence_target": "a low tone", "well_formed": True}]
    write_run(tmp_path, "r", method="m", seed=0, split="val", rows=rows, start_sha256="s", final_sha256="f",
              eval_settings={})
    back = read_store(tmp_path)[0].rows[0]
    assert (back["evidence"], back["evidence_target"], back["well_formed"], back["correct"]) == \
        ("a low tone", "a low tone", True, True)
    write_run(tmp_path, "old", method="m", seed=0, split="val", rows=_rows(1, 1), start_sha256="s", final_sha256="f",
              eval_settings={})
    assert "evidence" not in read_store(tmp_path)[0].rows[0]
