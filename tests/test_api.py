"""The Python API: config building, and the README's example run exactly as written."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import echodistill as ed
from echodistill.audio.io import write_audio

from test_predict import speech_wav
from train_helpers import make_dataset

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_api_example() -> str:
    """The first ```python block under '## Python API' in README.md."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## Python API", 1)[1]
    m = re.search(r"```python\n(.*?)```", section, re.S)
    assert m, "README.md: no python block in the Python API section"
    return m.group(1)


def test_make_config_layers_and_checks(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("train:\n  learning_rate: 0.5\n  variant: grpo\n")
    cfg = ed.make_config(y, {"train.max_steps": 3, "teacher": {"w0": 0.9}}, run={"seed": 7}, train__top_p=0.5,
                         data={"path_map": {"/old": "/new"}})
    assert cfg.train.learning_rate == 0.5 and cfg.train.max_steps == 3 and cfg.teacher.w0 == 0.9
    assert cfg.run.seed == 7 and cfg.train.top_p == 0.5 and dict(cfg.data.path_map) == {"/old": "/new"}
    assert cfg.signals.distill.weight == 0  # the grpo preset from the YAML's variant
    assert ed.make_config({"train": {"variant": "echodistill"}}).signals.consistency.weight == 1.0
    assert ed.make_config(None, ["train.max_steps=4"]).train.max_steps == 4
    with pytest.raises(ed.ConfigError, match="train.top_p"):
        ed.make_config(train={"top_p": 2.0})
    with pytest.raises(ed.ConfigError, match="no_such_key"):
        ed.make_config(train={"no_such_key": 1})
    with pytest.raises(ed.ConfigError, match="cannot go in a config"):
        ed.make_config(run={"seed": object()})


def test_readme_example_runs_as_written(tmp_path, monkeypatch, capsys):
    """Lay out what `make demo` writes (a tiny version) in a fresh folder, run the block as written;
    tests/test_readme.py runs it after a real demo."""
    import shutil

    from echodistill.models.tiny import build_tiny_qwen2_audio

    demo = tmp_path / "runs" / "demo"
    bench = make_dataset(demo / "bench", n_train=4, n_val=2)
    (bench / "test.jsonl").write_text((bench / "val.jsonl").read_text())
    rng = np.random.default_rng(5)
    for kind in ("babble", "music"):
        write_audio(bench / "noise" / kind / "n0.wav", (0.2 * rng.standard_normal(32000)).astype(np.float32))
    build_tiny_qwen2_audio(demo / "models" / "embedded", seed=0, window_s=2.0)  # the default 2 s window
    shutil.copytree(demo / "models" / "embedded", demo / "warmup" / "final")  # stands in for the warm-up
    clip = bench / "audio" / "spoken_number" / "spoken_number-test-0000.wav"
    clip.parent.mkdir(parents=True)
    speech_wav(clip, "six")
    monkeypatch.chdir(tmp_path)

    code = readme_api_example().replace('"max_steps": 10', '"max_steps": 2')  # the tiny model: 2 steps do
    exec(compile(code, "README.md:python-api", "exec"), {"__name__": "__readme__"})

    out = capsys.readouterr().out
    assert re.search(r"^noisy accuracy: \d", out, re.M)
    last = out.strip().splitlines()[-1].split()
    assert last[0] == "spoken_number-test-0000.wav" and last[1] in ("fifty", "six", "eighty", "ninety", "None")
    final = tmp_path / "runs" / "api" / "final"
    assert (final / "config.json").is_file() and (tmp_path / "runs" / "api" / "eval" / "metrics.json").is_file()
    with pytest.raises(ed.UserError, match=r"pass resume=True"):  # the Python spelling, not the CLI flag
        ed.Trainer(ed.make_config("demo", run={"output_dir": "runs/api"}, train={"max_steps": 2})).train()
