"""Issue 15's bad-input corpus through the real CLI (`data check`, `eval`, `train`): >= 50 kinds, each
with its exact outcome. None crashes, hangs or exits 0 with a wrong number.

Item-level kinds share one manifest (one CLI call per command); structural and whole-file kinds stop
the runs while the manifest is read, so each costs milliseconds. `data check` on the item corpus runs
as a subprocess (a FIFO among the clips must not hang it: the timeout would fail the test).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bad_inputs import MAX_PROMPT_TOKENS, WINDOW_S, make_bad_noise, make_bad_weights, make_cli_corpus
from train_helpers import read_metrics

from echodistill.cli import main

EXE = Path(sys.executable).parent / "echodistill"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_cli_corpus(tmp_path_factory.mktemp("corpus"))


def _common(model_dir) -> list[str]:
    return [f"model.path={model_dir}", f"data.max_duration_s={WINDOW_S}", f"data.max_prompt_tokens={MAX_PROMPT_TOKENS}",
            "run.num_threads=1", "run.log_with=null"]


def _eval_args(manifest, out, model_dir, *extra):
    return ["eval", "--manifest", str(manifest), "--out", str(out), *_common(model_dir), "eval.noise_types=[white]",
            "eval.snr_levels=[0]", "eval.no_audio=false", "eval.bootstrap=20", "eval.max_new_tokens=2",
            "eval.batch_size=64", *extra]


def _train_args(manifest, out, model_dir, *extra):
    return ["train", *_common(model_dir), f"data.train_manifest={manifest}", f"run.output_dir={out}",
            f"data.val_manifest={out}/none.jsonl", "noise.train_types=[white]", f"noise.noise_dir={out}/no_noise",
            "train.num_generations=2", "train.max_completion_length=2", "train.max_steps=1", "train.save_steps=1",
            "train.eval_steps=0", "train.warmup_ratio=0.0", *extra]


def _one_line_error(capsys, rc: int, *fragments: str) -> str:
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("echodistill: error:")]
    assert rc == 2 and len(lines) == 1, (rc, err[-2000:])
    assert "Traceback" not in err
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


def test_corpus_has_at_least_50_bad_kinds(corpus):
    bad_items = [k for k in corpus["kinds"].values() if not k.get("ok")]  # fine inputs are not counted
    n = len(bad_items) + len(corpus["structural"]) + len(corpus["files"]) + 2 + 4 + 2  # weights, noise, flags
    assert n >= 50, n


def test_data_check_reports_every_kind_exactly(corpus, tiny_qwen2_audio_dir):
    m = corpus["items"]
    r = subprocess.run([str(EXE), "data", "check", str(m), *_common(tiny_qwen2_audio_dir)[:3]],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    found = {}
    for line in r.stdout.splitlines():
        if line.startswith(f"{m}:") and " (item " in line:
            where, rest = line.split("): ", 1)
            found.setdefault(int(where.split(":")[1].split(" ")[0]), set()).add(rest.split(":")[0])
            assert " — fix: " in line
    for name, k in corpus["kinds"].items():
        want = {k["kind"]} if "kind" in k else {k["note"]} if "note" in k else set()
        assert found.get(k["line"], set()) == want, (name, found.get(k["line"]), want)
    assert "notes: truncated: 2" in r.stdout.splitlines()[-1]
    # structural kinds: reported at file:line with the item id, the rest of the file still read
    for name, (p, kind, iid) in corpus["structural"].items():
        assert main(["data", "check", str(p)]) == 2, name
    # whole-file kinds
    assert main(["data", "check", str(corpus["files"]["empty_manifest"])]) == 2
    assert main(["data", "check", str(corpus["files"]["blank_lines_only"])]) == 2
    assert main(["data", "check", str(corpus["files"]["json_list_truncated"])]) == 2


def test_data_check_structural_lines(corpus, capsys):
    for name, (p, kind, iid) in corpus["structural"].items():
        capsys.readouterr()
        assert main(["data", "check", str(p)]) == 2
        out = capsys.readouterr().out
        loc = f"{p}:2" + (f" (item {iid})" if iid else "")
        assert any(x.startswith(f"{loc}: {kind}:") and " — fix: " in x for x in out.splitlines()), (name, out)
        assert f"{p}:1 " not in out, name  # the fine first row is not blamed
    for name in ("empty_manifest", "blank_lines_only"):
        main(["data", "check", str(corpus["files"][name])])
        assert "empty_manifest" in capsys.readouterr().out
    for name in ("manifest_is_a_folder", "manifest_missing"):
        _one_line_error(capsys, main(["data", "check", str(corpus["files"][name])]), str(corpus["files"][name]))


def test_eval_skips_and_counts_exactly_what_check_reports(corpus, tiny_qwen2_audio_dir, tmp_path):
    out = tmp_path / "ev"
    assert main(_eval_args(corpus["items"], out, tiny_qwen2_audio_dir)) == 0
    meta = json.loads((out / "metrics.json").read_text())
    kinds = corpus["kinds"]
    want = {k["id"]: k["kind"] for k in kinds.values() if "kind" in k}
    got = {b["id"]: b["kind"] for b in meta["bad_items"]["items"]}
    assert got == want
    assert set(meta["truncated"]["ids"]) == {k["id"] for k in kinds.values() if k.get("truncated")}
    rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    by_id = {}
    for r in rows:
        by_id.setdefault(r["id"], set()).add(r["condition"])
    for name, k in kinds.items():
        if k.get("ok") or k.get("truncated"):
            assert by_id.get(k["id"]) == {"clean", "noisy"}, name  # answered on every condition
        elif k.get("noisy"):
            assert by_id.get(k["id"]) == {"clean"}, name  # only its bad noisy clip is left out
        else:
            assert k["id"] not in by_id, name
    assert meta["metrics"]["counts"]["items"] == len({r["id"] for r in rows})
    # a resume with every row done still reports what was skipped and cut (bad items are retried, cut
    # clips are read off their rows)
    assert main(_eval_args(corpus["items"], out, tiny_qwen2_audio_dir)) == 0
    again = json.loads((out / "metrics.json").read_text())
    assert again["bad_items"] == meta["bad_items"] and again["truncated"] == meta["truncated"]


def test_eval_stops_on_structural_and_file_problems_with_one_line(corpus, tiny_qwen2_audio_dir, tmp_path, capsys):
    for name, (p, kind, iid) in corpus["structural"].items():
        rc = main(_eval_args(p, tmp_path / name, tiny_qwen2_audio_dir))
        _one_line_error(capsys, rc, f"{p}:2", kind, "fix")
    for name, p in corpus["files"].items():
        _one_line_error(capsys, main(_eval_args(p, tmp_path / name, tiny_qwen2_audio_dir)), str(p))


def test_eval_refuses_bad_weights_and_bad_noise_up_front(corpus, tiny_qwen2_audio_dir, tmp_path, capsys):
    m = corpus["items"]
    for name, ckpt in make_bad_weights(tmp_path / "w", tiny_qwen2_audio_dir).items():
        rc = main(_eval_args(m, tmp_path / name, tiny_qwen2_audio_dir) + ["--checkpoint", str(ckpt)])
        line = _one_line_error(capsys, rc, str(ckpt))
        assert ("model.safetensors" in line and "incomplete" in line) or "no weight files" in line
        assert not (tmp_path / name / "predictions.jsonl").exists()
    for name, (paths, frag) in make_bad_noise(tmp_path / "n").items():
        extra = [f"noise.extra_noise_paths=[{','.join(map(str, paths))}]", "eval.noise_types=[white,file]"]
        rc = main(_eval_args(m, tmp_path / name, tiny_qwen2_audio_dir, *extra))
        _one_line_error(capsys, rc, "noise", frag)
        assert not (tmp_path / name / "metrics.json").exists(), name  # no number computed on a biased subset
    _one_line_error(capsys, main(_eval_args(m, tmp_path / "pm", tiny_qwen2_audio_dir) + ["--path-map", "nothing"]),
                    "--path-map", "OLD_PREFIX=NEW_PREFIX")
    _one_line_error(capsys, main(_eval_args(m, tmp_path / "nt", tiny_qwen2_audio_dir, "eval.noise_types=[traffic]")),
                    "traffic", "available")


@pytest.mark.slow
def test_train_skips_and_counts_what_check_reports(corpus, tiny_qwen2_audio_dir, tmp_path, capsys):
    kinds = corpus["kinds"]
    prompt_skips = [k for k in kinds.values() if k.get("kind") == "prompt_too_long"]
    n = len(kinds) - len(prompt_skips)  # the items left after the up-front prompt check
    out = tmp_path / "tr"
    # one micro-batch holds every item once, so every bad clip is met (and skipped) in the one step
    rc = main(_train_args(corpus["items"], out, tiny_qwen2_audio_dir, f"train.prompts_per_device={n}"))
    err = capsys.readouterr().err
    assert rc == 0 and "Traceback" not in err, err[-3000:]
    assert f"skipped {len(prompt_skips)} item(s) with prompt_too_long" in err
    assert "2 clip(s) are cut to their first 1 s window" in err
    audio_bad = {k["id"] for k in kinds.values() if "kind" in k and not k.get("noisy")
                 and k["kind"] != "prompt_too_long"}
    skipped = {x.split("skipped bad item ", 1)[1].split(":")[0] for x in err.splitlines() if "skipped bad item " in x}
    assert skipped == audio_bad  # exactly the clean-audio kinds; pre-mixed noisy clips are not read by training
    row = read_metrics(out)[0]
    assert row["skipped_items"] == len(audio_bad)


@pytest.mark.slow
def test_train_stops_on_structural_file_weight_and_noise_problems(corpus, tiny_qwen2_audio_dir, tmp_path, capsys):
    for name in ("malformed_json", "deeply_nested_json", "noisy_without_snr", "duplicate_id", "line_too_long"):
        p, kind, iid = corpus["structural"][name]
        rc = main(_train_args(p, tmp_path / name, tiny_qwen2_audio_dir))
        _one_line_error(capsys, rc, f"{p}:2", kind, "fix")
    for name in ("empty_manifest", "blank_lines_only", "manifest_missing"):
        p = corpus["files"][name]
        _one_line_error(capsys, main(_train_args(p, tmp_path / name, tiny_qwen2_audio_dir)), str(p))
    ckpt = make_bad_weights(tmp_path / "w", tiny_qwen2_audio_dir)["truncated_safetensors"]
    rc = main(_train_args(corpus["items"], tmp_path / "wt", tiny_qwen2_audio_dir, f"train.init_from={ckpt}"))
    _one_line_error(capsys, rc, "model.safetensors", "incomplete")
    paths, frag = make_bad_noise(tmp_path / "n")["partly_bad_noise_bank"]
    rc = main(_train_args(corpus["items"], tmp_path / "nb", tiny_qwen2_audio_dir, "noise.train_types=[white,file]",
                          f"noise.extra_noise_paths=[{','.join(map(str, paths))}]"))
    _one_line_error(capsys, rc, "noise bank", frag)
