"""Eval resume is keyed by content: every stale case of issue 15 recomputes or refuses, never reuses.

Relabelled manifest, a path map to other audio, another dtype, other weights at the same path, another
noise file at the same path; two evaluations into one folder cannot both write (lock)."""

from __future__ import annotations

import json
import shutil

import pytest

from echodistill.errors import UserError
from echodistill.eval.evaluate import FolderLock, run_eval

from test_evaluate import _cfg, write_audio
from train_helpers import read_jsonl, tone


@pytest.fixture
def small(tmp_path):
    d = tmp_path / "bench"
    for i, f0 in enumerate((220.0, 440.0)):
        write_audio(d / "audio" / f"q{i}.wav", tone(f0, n=12000, seed=i))
        write_audio(d / "other" / f"q{i}.wav", tone(f0 * 1.5, n=12000, seed=i + 7))
    write_audio(d / "noise" / "babble" / "b0.wav", tone(300.0, n=32000, seed=5))
    rows = [{"id": f"q{i}", "audio": f"audio/q{i}.wav", "question": "Which pitch?", "choices": ["low", "high"],
             "target": t, "task": "pitch", "split": "test"} for i, t in enumerate(("low", "high"))]
    (d / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


def _refused(cfg, out, match, **kw):
    with pytest.raises(UserError, match=match):
        run_eval(cfg, out_dir=out, **kw)


def test_stale_inputs_are_refused(small, tiny_qwen2_audio_dir, tmp_path):
    args = ("eval.noise_types=[white]", "eval.snr_levels=[0]", "eval.no_audio=false")
    cfg = _cfg(small, tiny_qwen2_audio_dir, *args)
    out = tmp_path / "ev"
    first = run_eval(cfg, out_dir=out)
    assert first["provenance"]["weights_sha256"] and first["provenance"]["code_version"]
    n = len(read_jsonl(out / "predictions.jsonl"))
    assert run_eval(cfg, out_dir=out)["timing"]["new_predictions"] == 0  # same content: resumes

    # 1. relabelled manifest (same path, other targets)
    m = small / "test.jsonl"
    original = m.read_text()
    m.write_text(original.replace('"target": "low"', '"target": "high"'))
    _refused(cfg, out, "manifest_sha256 content changed")
    m.write_text(original)
    # 2. a path map that points the same manifest at other audio
    _refused(cfg, out, "path_map", path_map={str(small / "audio"): str(small / "other")})
    # 3. another dtype
    _refused(_cfg(small, tiny_qwen2_audio_dir, *args, "model.dtype=bfloat16"), out, "model.dtype")
    # 4. other weights at the same checkpoint path
    model = tmp_path / "model"
    shutil.copytree(tiny_qwen2_audio_dir, model)
    cfg_m = _cfg(small, model, *args)
    out_m = tmp_path / "ev_m"
    run_eval(cfg_m, out_dir=out_m)
    st = next(model.glob("*.safetensors"))
    from safetensors.torch import load_file, save_file
    w = load_file(str(st))
    k = next(iter(w))
    w[k] = w[k] + 1.0
    save_file(w, str(st), metadata={"format": "pt"})
    _refused(cfg_m, out_m, "weights_sha256 content changed")
    # 5. another max_new_tokens
    _refused(_cfg(small, tiny_qwen2_audio_dir, *args, "eval.max_new_tokens=5"), out, "max_new_tokens")
    # 6. a replaced clip at the same path (size/mtime recorded)
    write_audio(small / "audio" / "q0.wav", tone(700.0, n=16000, seed=3))
    _refused(cfg, out, "audio_files content changed")
    # 7. a replaced noise file
    out_n = tmp_path / "ev_n"
    cfg_n = _cfg(small, tiny_qwen2_audio_dir, "eval.noise_types=[babble]", "eval.snr_levels=[0]",
                 "eval.no_audio=false")
    run_eval(cfg_n, out_dir=out_n)
    write_audio(small / "noise" / "babble" / "b0.wav", tone(900.0, n=24000, seed=9))
    _refused(cfg_n, out_n, "noise_files content changed")
    # predictions of an older format (no content key) are not trusted either
    (out / "eval_state.json").unlink()
    _refused(cfg, out, "not recorded by content")
    assert len(read_jsonl(out / "predictions.jsonl")) == n  # nothing was appended by a refused run


def test_a_second_eval_into_a_busy_folder_is_refused(small, tiny_qwen2_audio_dir, tmp_path):
    cfg = _cfg(small, tiny_qwen2_audio_dir, "eval.noise_types=[white]", "eval.snr_levels=[0]")
    out = tmp_path / "ev"
    out.mkdir()
    with FolderLock(out):  # what a running `echodistill eval` holds
        _refused(cfg, out, "another `echodistill eval`")
        assert not (out / "predictions.jsonl").exists()
    meta = run_eval(cfg, out_dir=out)  # the lock is released with its holder
    rows = read_jsonl(out / "predictions.jsonl")
    assert len(rows) == meta["n_predictions"] == len({(r["id"], r["condition"], r["snr"]) for r in rows})


@pytest.mark.slow
def test_two_eval_processes_into_one_folder_write_each_row_once(small, tiny_qwen2_audio_dir, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).parent / "echodistill"
    out = tmp_path / "ev"
    args = [str(exe), "eval", "--out", str(out), "--manifest", str(small / "test.jsonl"),
            f"model.path={tiny_qwen2_audio_dir}", "data.max_duration_s=1.0", "eval.noise_types=[white]",
            "eval.snr_levels=[0,10]", "eval.bootstrap=20", "eval.max_new_tokens=2", "run.num_threads=1",
            f"data.bench_dir={small}"]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    res = [p.communicate(timeout=300) + (p.returncode,) for p in procs]
    codes = sorted(r[2] for r in res)
    assert codes[0] == 0 and codes[1] in (0, 2), res
    for _, err, code in res:
        assert "Traceback" not in err
        if code == 2:
            assert "another `echodistill eval`" in err
    rows = read_jsonl(out / "predictions.jsonl")
    keys = [(r["id"], r["condition"], r["noise_type"], r["snr"]) for r in rows]
    assert len(keys) == len(set(keys)) == 2 * 4


def test_a_clip_replaced_keeping_size_and_mtime_is_refused(small, tiny_qwen2_audio_dir, tmp_path):
    import os

    cfg = _cfg(small, tiny_qwen2_audio_dir, "eval.noise_types=[white]", "eval.snr_levels=[0]", "eval.no_audio=false")
    out = tmp_path / "ev"
    run_eval(cfg, out_dir=out)
    clip = small / "audio" / "q0.wav"
    st = clip.stat()
    write_audio(clip, tone(660.0, n=12000, seed=11))  # another tone, same length: same size
    os.utime(clip, ns=(st.st_atime_ns, st.st_mtime_ns))  # what `cp -p` / rsync -t keep
    assert clip.stat().st_size == st.st_size and clip.stat().st_mtime_ns == st.st_mtime_ns
    _refused(cfg, out, "audio_files content changed")


def test_cached_rows_are_reused_whether_paths_are_relative_or_absolute(small, tiny_qwen2_audio_dir, tmp_path,
                                                                       monkeypatch):
    from echodistill.audio.noise import NoiseBank
    from echodistill.provenance import content_key

    args = ("eval.noise_types=[babble]", "eval.snr_levels=[0]", "eval.no_audio=false")
    monkeypatch.chdir(small.parent)
    out = tmp_path / "ev"
    first = run_eval(_cfg(small.relative_to(small.parent), tiny_qwen2_audio_dir, *args), out_dir=out)
    assert first["timing"]["new_predictions"] > 0
    again = run_eval(_cfg(small, tiny_qwen2_audio_dir, *args), out_dir=out)  # the same files, an absolute path
    assert again["timing"]["new_predictions"] == 0
    state = json.loads((out / "eval_state.json").read_text())
    assert content_key(NoiseBank(small / "noise").fingerprint()) == state["noise_files"]  # what a report checks
    assert NoiseBank("bench/noise").fingerprint() == NoiseBank(small / "noise").fingerprint()


def test_a_folder_recorded_in_format_2_or_3_is_still_resumed(small, tiny_qwen2_audio_dir, tmp_path):
    from echodistill.audio.noise import NoiseBank
    from echodistill.data.manifest import read_manifest
    from echodistill.eval.evaluate import _format2_keys
    from echodistill.provenance import weights_sha256_v1

    cfg = _cfg(small, tiny_qwen2_audio_dir, "eval.noise_types=[babble]", "eval.snr_levels=[0]", "eval.no_audio=false")
    out = tmp_path / "ev"
    run_eval(cfg, out_dir=out)
    state = json.loads((out / "eval_state.json").read_text())
    weights = {"weights_sha256": weights_sha256_v1(cfg.model.path)}  # the form formats 2-3 recorded
    old = _format2_keys(read_manifest(small / "test.jsonl"), NoiseBank(cfg.noise.noise_dir))
    (out / "eval_state.json").write_text(json.dumps({**state, **old, **weights, "format": 2}))
    assert run_eval(cfg, out_dir=out)["timing"]["new_predictions"] == 0
    assert json.loads((out / "eval_state.json").read_text()) == state  # rewritten in format 4
    (out / "eval_state.json").write_text(json.dumps({**state, **weights, "format": 3}))
    assert run_eval(cfg, out_dir=out)["timing"]["new_predictions"] == 0
    assert json.loads((out / "eval_state.json").read_text()) == state
