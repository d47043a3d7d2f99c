"""`predict` and the Python API apply evaluation's limits: only the model window of a long file is
decoded, an over-long prompt is refused per row, a question that is not valid Unicode is an error row."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np

from echodistill.audio.io import write_audio
from echodistill.cli import EXIT_PARTIAL, main
from echodistill.config import load_config
from echodistill.inference import Query, load_query_audio

from train_helpers import tone


def _overrides(model_dir):
    return [f"model.path={model_dir}", "model.backbone=embedded", "data.max_duration_s=1.0", "run.num_threads=1",
            "eval.max_new_tokens=2", "data.max_prompt_tokens=64"]


def test_only_the_window_of_a_long_file_is_decoded(tmp_path, tiny_qwen2_audio_dir):
    long = tmp_path / "two_minutes.wav"
    write_audio(long, np.tile(tone(300.0, seconds=1.0), 120))  # 120 s: 7.7 MB as float32
    cfg = load_config(None, _overrides(tiny_qwen2_audio_dir))
    tracemalloc.start()
    wav = load_query_audio(Query("a", str(long), "q", []), cfg, None, None, None)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert wav.size == 16000
    assert peak < 2_000_000, peak  # the whole file would be > 7.7 MB


def test_long_prompts_and_broken_text_are_error_rows(tmp_path, tiny_qwen2_audio_dir, capsys):
    write_audio(tmp_path / "clip.wav", tone(300.0, seconds=0.5))
    rows = [{"id": "long", "audio": "clip.wav", "question": "why " * 5000, "choices": ["a", "b"], "target": "a"},
            {"id": "broken", "audio": "clip.wav", "question": "bad \ud800 text", "choices": ["a", "b"], "target": "a"},
            {"id": "fine", "audio": "clip.wav", "question": "Which?", "choices": ["a", "b"], "target": "a"}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))  # json escapes the surrogate
    out = tmp_path / "preds.jsonl"
    rc = main(["predict", "--checkpoint", str(tiny_qwen2_audio_dir), "--audio", str(tmp_path / "m.jsonl"),
               "--out", str(out), *_overrides(tiny_qwen2_audio_dir)])
    assert rc == EXIT_PARTIAL and "Traceback" not in capsys.readouterr().err  # 2 of 3 failed, each in its row
    got = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert "data.max_prompt_tokens" in got["long"]["error"] and got["long"]["response"] is None
    assert "not valid Unicode" in got["broken"]["error"] and got["broken"]["question"] == "bad \ud800 text"
    assert got["fine"]["error"] is None and got["fine"]["response"] is not None
