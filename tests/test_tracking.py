"""Trackers of a real (tiny) training run: TensorBoard by default, W&B and trackio in their offline
modes, with the configured project and run names; a tracker that is not installed is one clear line."""

from __future__ import annotations

import json
import re
import sqlite3
import sys
from pathlib import Path

import pytest

from echodistill.config import ConfigError, load_config
from echodistill.tracking import resolve_log_with, tracker_names
from echodistill.train.trainer import run_train

from train_helpers import read_metrics, tiny_config

ONE_STEP = ["train.variant=grpo", "train.max_steps=1", "train.eval_steps=0"]


def _last_metrics(out: Path) -> dict:
    return read_metrics(out)[-1]


def test_log_with_parsing_and_missing_package(monkeypatch):
    cfg = load_config(None, ["run.log_with=tensorboard,wandb"])
    assert tracker_names(cfg.run) == ["tensorboard", "wandb"]
    assert tracker_names(load_config(None, ["run.log_with=null"]).run) == []
    with pytest.raises(ConfigError, match="'mlfloww' is not one of tensorboard, wandb, trackio"):
        tracker_names(load_config(None, ["run.log_with=mlfloww"]).run)
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None)  # nothing installed
    with pytest.raises(ConfigError, match="run.log_with=wandb needs the wandb package: pip install wandb"):
        resolve_log_with(load_config(None, ["run.log_with=wandb"]).run)
    assert resolve_log_with(load_config(None, []).run) is None  # the default quietly falls back to none


@pytest.mark.slow
def test_tensorboard_default_with_project_name(data_dir, tiny_qwen2_audio_dir, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    cfg = tiny_config(data_dir, tiny_qwen2_audio_dir, out, *ONE_STEP, "run.log_with=tensorboard",
                      "run.project_name=noise-study")
    assert load_config(None, []).run.log_with == "tensorboard"  # the default
    run_train(cfg)
    logdir = out / "noise-study"
    assert list(logdir.rglob("events.out.tfevents.*"))
    acc = EventAccumulator(str(logdir))
    acc.Reload()
    assert "train/reward_total_mean" in acc.Tags()["scalars"]  # grouped as TRL's runs are
    value = acc.Scalars("train/reward_total_mean")[0].value
    assert value == pytest.approx(_last_metrics(out)["reward_total_mean"], abs=1e-6)


@pytest.mark.slow
def test_wandb_offline(data_dir, tiny_qwen2_audio_dir, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    out = tmp_path / "wb"
    cfg = tiny_config(data_dir, tiny_qwen2_audio_dir, out, *ONE_STEP, "run.log_with=wandb",
                      "run.project_name=noise-study", "run.run_name=grpo-tiny")
    run_train(cfg)
    import wandb

    wandb.teardown()  # the wandb-core service writes the run file asynchronously: wait for it to flush
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    (record,) = runs[0].glob("run-*.wandb")  # what `wandb sync` would upload (protobuf records)
    data = record.read_bytes()
    assert b"noise-study" in data and b"grpo-tiny" in data and b"train.variant" in data
    # a history item: key, then field 16 (0x82 0x01) holding the value as JSON, length-prefixed
    m = re.search(rb"\x12\x17train/reward_total_mean\x82\x01(.)", data, re.S)
    assert m, "reward_total_mean not in the offline run's history"
    value = json.loads(data[m.end(): m.end() + m.group(1)[0]])
    assert value == pytest.approx(_last_metrics(out)["reward_total_mean"], abs=1e-6)


@pytest.mark.slow
def test_trackio_local(data_dir, tiny_qwen2_audio_dir, tmp_path, monkeypatch):
    pytest.importorskip("trackio")
    import trackio.utils

    monkeypatch.setattr(trackio.utils, "TRACKIO_DIR", tmp_path / "trackio")  # not the user's ~/.cache
    for mod in list(sys.modules.values()):  # modules that imported the constant by name
        if getattr(mod, "__name__", "").startswith("trackio") and hasattr(mod, "TRACKIO_DIR"):
            monkeypatch.setattr(mod, "TRACKIO_DIR", tmp_path / "trackio")
    out = tmp_path / "tk"
    cfg = tiny_config(data_dir, tiny_qwen2_audio_dir, out, *ONE_STEP, "run.log_with=trackio",
                      "run.project_name=noise-study", "run.run_name=grpo-tiny")
    run_train(cfg)
    import trackio

    trackio.finish()
    db = tmp_path / "trackio" / "noise-study.db"
    assert db.is_file()
    rows = sqlite3.connect(db).execute("select run_name, step, metrics from metrics").fetchall()
    logged = [json.loads(m) for name, step, m in rows if name == "grpo-tiny" and step == 1]
    assert any(m.get("train/reward_total_mean") == pytest.approx(_last_metrics(out)["reward_total_mean"], abs=1e-6)
               for m in logged)
