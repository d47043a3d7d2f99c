"""Atomic checkpoints and resume for the GRPO trainer.

Layout of ``<output_dir>/checkpoint-<step>/``::

    model/              the adapter's ``save`` (PEFT adapter or full weights, HF format; loadable)
    trainable.pt        the trainable parameters by name (what resume loads back into the student)
    optimizer.pt        optimizer state
    scheduler.pt        LR scheduler state
    rng_rank<r>.pt      python / numpy / torch RNG states of rank r
    trainer_state.json  step, data position (micro-batches consumed), counters

Why atomic: everything is written to ``.tmp-checkpoint-<step>`` and renamed at the end
(``os.replace`` is atomic on one filesystem), so a kill in the middle of a save leaves the previous
checkpoint complete and usable; a directory named ``checkpoint-<step>`` is complete by construction.
Only the newest ``keep`` checkpoints are kept.

Why the student is reloaded from ``trainable.pt`` rather than by rebuilding the model from ``model/``:
the teacher must stay the *initial* model. Resume builds the model exactly as a fresh run does (so the
teacher is the initial weights, or the LoRA base with the adapter disabled) and then loads the
student's trainable parameters on top.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

_NAME = re.compile(r"^checkpoint-(\d+)$")


def rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Named trainable parameters, detached CPU copies."""
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def list_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints in ``output_dir`` as (step, path), oldest first."""
    out = []
    d = Path(output_dir)
    if d.is_dir():
        for p in d.iterdir():
            m = _NAME.match(p.name)
            if m and p.is_dir() and (p / "trainer_state.json").is_file():
                out.append((int(m.group(1)), p))
    return sorted(out)


def latest_checkpoint(output_dir: str | Path) -> Optional[Path]:
    ckpts = list_checkpoints(output_dir)
    return ckpts[-1][1] if ckpts else None


def save_checkpoint(output_dir: str | Path, step: int, *, accelerator: Any, model: torch.nn.Module,
                    save_model: Callable[[Path], None], optimizer: Any, scheduler: Any, state: dict,
                    keep: int = 2) -> Path:
    """Write ``checkpoint-<step>`` atomically from every rank (collective: all ranks must call it).

    ``model`` is the (unwrapped) trainable module; ``save_model(dir)`` writes the HF-format model
    (the adapter's ``save``), called on the main process only. Returns the final path.
    """
    output_dir = Path(output_dir)
    final = output_dir / f"checkpoint-{step}"
    tmp = output_dir / f".tmp-checkpoint-{step}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)  # left over from a save that was killed
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    torch.save(rng_state(), tmp / f"rng_rank{accelerator.process_index}.pt")
    if accelerator.is_main_process:
        save_model(tmp / "model")
        torch.save(trainable_state(model), tmp / "trainable.pt")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        (tmp / "trainer_state.json").write_text(json.dumps({"step": step, **state}, indent=1))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if final.exists():  # the same step saved before (e.g. final save right after a periodic one)
            shutil.rmtree(final)
        _fsync_dir(tmp)
        os.replace(tmp, final)
        for _, old in list_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(path: str | Path, *, accelerator: Any, model: torch.nn.Module, optimizer: Any,
                    scheduler: Any) -> dict:
    """Restore student weights, optimizer, scheduler and this rank's RNG; return trainer_state."""
    path = Path(path)
    weights = torch.load(path / "trainable.pt", map_location="cpu", weights_only=True)
    params = dict(model.named_parameters())
    missing = [n for n in weights if n not in params]
    if missing:
        from ..errors import UserError
        raise UserError(f"{path}: checkpoint does not match the model ({len(missing)} unknown parameters, "
                        f"e.g. {missing[0]}); resume with the same model/LoRA config or use a new run.output_dir")
    with torch.no_grad():
        for n, t in weights.items():
            params[n].copy_(t.to(params[n].device, params[n].dtype))
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location="cpu", weights_only=False))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", map_location="cpu", weights_only=False))
    rng_file = path / f"rng_rank{accelerator.process_index}.pt"
    if rng_file.is_file():  # a different world size on resume: keep the fresh seeds
        set_rng_state(torch.load(rng_file, map_location="cpu", weights_only=False))
    return json.loads((path / "trainer_state.json").read_text())


def _fsync_dir(d: Path) -> None:
    """Flush file contents before the rename so a crash cannot publish empty files."""
    for p in d.rglob("*"):
        if p.is_file():
            try:
                fd = os.open(p, os.O_RDONLY)
                os.fsync(fd)
                os.close(fd)
            except OSError:
                pass
