"""Experiment trackers for training runs: TensorBoard (default), Weights & Biases, trackio.

``run.log_with`` names one tracker or a comma-separated list (``tensorboard,wandb``), or null for none;
``run.project_name`` is the project (W&B / trackio project; TensorBoard writes to
``<run.output_dir>/<project_name>/``) and ``run.run_name`` the run (default: the output folder's name).
All go through accelerate's trackers, so under ``accelerate launch`` only the main process logs. Scalars are
grouped as TRL's are: ``train/<key>`` and ``eval/<key>`` (``tracker_scalars``).

Offline use: W&B honours ``WANDB_MODE=offline`` (the run is written under ``<output_dir>/wandb/`` for a
later ``wandb sync``); trackio is local-first (a SQLite file per project under ``TRACKIO_DIR``, default
``~/.cache/huggingface/trackio``; ``trackio show`` opens the dashboard).
"""

from __future__ import annotations

import importlib.util
import math
import re
from pathlib import Path
from typing import Any, Optional

from .config import ConfigError, RunConfig

TRACKERS = ("tensorboard", "wandb", "trackio")
_PIP = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio"}


def tracker_names(run: RunConfig) -> list[str]:
    """``run.log_with`` as a list of tracker names; ConfigError for an unknown one."""
    raw = run.log_with
    if raw is None or str(raw).strip().lower() in ("", "none", "null", "false"):
        return []
    names = [n.strip().lower() for n in str(raw).split(",") if n.strip()]
    for n in names:
        if n not in TRACKERS:
            raise ConfigError(f"run.log_with={raw!r}: {n!r} is not one of {', '.join(TRACKERS)} (or null for none; "
                              "several: run.log_with=tensorboard,wandb)")
    return list(dict.fromkeys(names))


def resolve_log_with(run: RunConfig) -> Optional[list[str]]:
    """The trackers to hand to ``Accelerator(log_with=...)`` (None: no tracking).

    TensorBoard, the default, is dropped quietly when not installed; a tracker the user asked for by
    name (wandb, trackio) is an error naming the package to install."""
    out = []
    for n in tracker_names(run):
        if importlib.util.find_spec(n) is None:
            if n == "tensorboard":
                continue
            raise ConfigError(f"run.log_with={n} needs the {n} package: pip install {_PIP[n]} "
                              "(or set run.log_with=tensorboard / null)")
        out.append(n)
    return out or None


def public_name(name: str) -> str:
    """A tracker project/run name with no secret in it: a name that holds an ``${oc.env:...}`` value
    (it would become a folder name, a W&B project) becomes its masked form, made a safe file name."""
    from .config import _mask

    masked = _mask(name)
    return name if masked == name else (re.sub(r"[^\w.-]+", "_", masked).strip("_.") or "masked")


def run_name(run: RunConfig) -> str:
    return public_name(str(run.run_name or "") or Path(str(run.output_dir)).name)


def start_trackers(accelerator: Any, run: RunConfig, hparams: dict) -> None:
    """``accelerator.init_trackers`` with the project, the run name and the flat hyperparameters."""
    if not accelerator.log_with:
        return
    name = run_name(run)
    kwargs = {"wandb": {"name": name, "dir": str(run.output_dir)}, "trackio": {"name": name}}
    accelerator.init_trackers(public_name(str(run.project_name or "echodistill")), config=hparams,
                              init_kwargs={k: v for k, v in kwargs.items() if k in tracker_names(run)})


def tracker_scalars(row: dict) -> dict[str, float]:
    """A metrics row as tracker scalars grouped the way TRL's runs are: ``val_*`` under ``eval/`` (without
    the prefix), everything else under ``train/``; non-numbers, non-finite values and ``step`` left out."""
    out = {}
    for k, v in row.items():
        if k == "step" or isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            continue
        out[f"eval/{k[4:]}" if k.startswith("val_") else f"train/{k}"] = v
    return out


def _markdown(columns: list[str], rows: list[list]) -> str:
    cell = lambda v: str(v).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows])


def log_table(accelerator: Any, name: str, columns: list[str], rows: list[list], step: int) -> None:
    """A table (TRL's ``log_completions``) to the trackers that show one: W&B and trackio as a table,
    TensorBoard as a Markdown text panel. Call on every process (trackers live on the main one)."""
    for tracker in getattr(accelerator, "trackers", []):
        if tracker.name == "wandb":
            tracker.log_table(name, columns=columns, data=rows, step=step)
        elif tracker.name == "trackio":
            import trackio

            if hasattr(trackio, "Table"):  # older trackio versions log scalars only
                tracker.log({name: trackio.Table(columns=columns, data=rows)}, step=step)
        elif tracker.name == "tensorboard":
            tracker.writer.add_text(name, _markdown(columns, rows), global_step=step)


__all__ = ["TRACKERS", "tracker_names", "resolve_log_with", "start_trackers", "run_name", "tracker_scalars",
           "log_table"]
