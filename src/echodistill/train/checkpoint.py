"""Atomic checkpoints and resume for the GRPO trainer.

Layout of ``<output_dir>/checkpoint-<step>/``::

    model/              the adapter's ``save`` (PEFT adapter or full weights, HF format; loadable)
    trainable.safetensors  the trainable parameters by name (what resume loads back into the student)
    optimizer.pt        optimizer state (tensors and plain values only)
    scheduler.pt        LR scheduler state (plain values only)
    rng_rank<r>.pt      python / numpy / torch RNG states of rank r, as tensors and plain values
    trainer_state.json  step, data position (micro-batches consumed), counters

Why atomic: everything is written to ``.tmp-checkpoint-<step>`` and renamed at the end
(``os.replace`` is atomic on one filesystem), so a kill in the middle of a save leaves the previous
checkpoint complete and usable; a directory named ``checkpoint-<step>`` is complete by construction.
Only the newest ``keep`` checkpoints are kept.

Why nothing is unpickled: a checkpoint folder is something users copy around and download, and
``torch.load(weights_only=False)`` runs whatever a crafted pickle asks for. Weights are safetensors;
the other state files are loaded with ``weights_only=True`` (tensors, dicts, lists, numbers, strings
only), and anything else is refused with a ``UserError`` naming the file (``load_state_file``).

Why the student is reloaded from ``trainable.safetensors`` rather than by rebuilding the model from ``model/``:
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
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..errors import UserError

_NAME = re.compile(r"^checkpoint-(\d+)$")


WEIGHTS = "trainable.safetensors"
LEGACY_WEIGHTS = "trainable.pt"  # checkpoints written before safetensors (loaded weights_only=True)


def rng_state() -> dict:
    """Every RNG as tensors and plain values (loadable with ``weights_only=True``, unlike numpy arrays)."""
    version, mt, gauss = random.getstate()
    kind, key, pos, has_gauss, cached = np.random.get_state()
    return {"python": [int(version), list(mt), gauss],
            "numpy": {"kind": str(kind), "key": torch.from_numpy(np.asarray(key, dtype=np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict) -> None:
    version, mt, gauss = state["python"]
    random.setstate((int(version), tuple(int(x) for x in mt), gauss))
    n = state["numpy"]
    if isinstance(n, tuple):  # legacy files: np.random.get_state() as is
        np.random.set_state(n)
    else:
        np.random.set_state((n["kind"], n["key"].numpy().astype(np.uint32), int(n["pos"]), int(n["has_gauss"]),
                             float(n["cached_gaussian"])))
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
                    keep: int = 2, rank_files: Optional[Callable[[Path], None]] = None) -> Path:
    """Write ``checkpoint-<step>`` atomically from every rank (collective: all ranks must call it).

    ``model`` is the (unwrapped) trainable module; ``save_model(dir)`` writes the HF-format model
    (the adapter's ``save``), called on the main process only. ``rank_files(tmp)``: what every rank
    writes itself (FSDP2: its optimizer shard, ``optimizer`` None). Returns the final path.
    """
    output_dir = Path(output_dir)
    final = output_dir / f"checkpoint-{step}"
    tmp = output_dir / f".tmp-checkpoint-{step}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)  # left over from a save that was killed
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    torch.save(rng_state(), tmp / f"rng_rank{accelerator.process_index}.pt")
    if rank_files is not None:
        rank_files(tmp)
    if accelerator.is_main_process:
        save_model(tmp / "model")
        save_file(trainable_state(model), str(tmp / WEIGHTS))
        if optimizer is not None:
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
                    scheduler: Any, copy_weights: Optional[Callable] = None,
                    load_optimizer: Optional[Callable[[], None]] = None) -> dict:
    """Restore student weights, optimizer, scheduler and this rank's RNG; return trainer_state.

    ``copy_weights(params, weights)`` / ``load_optimizer()`` replace the plain copies (FSDP2 shards:
    ``distributed.load_sharded_checkpoint``)."""
    path = Path(path)
    weights = load_weights(path)
    params = dict(model.named_parameters())
    missing = [n for n in weights if n not in params]
    if missing:
        raise UserError(f"{path}: checkpoint does not match the model ({len(missing)} unknown parameters, "
                        f"e.g. {missing[0]}); resume with the same model/LoRA config or use a new run.output_dir")
    if copy_weights is not None:
        copy_weights(params, weights)
    else:
        with torch.no_grad():
            for n, t in weights.items():
                params[n].copy_(t.to(params[n].device, params[n].dtype))
    if load_optimizer is not None:
        load_optimizer()
    else:
        optimizer.load_state_dict(load_state_file(path / "optimizer.pt"))
    scheduler.load_state_dict(load_state_file(path / "scheduler.pt"))
    rng_file = path / f"rng_rank{accelerator.process_index}.pt"
    if rng_file.is_file():  # a different world size on resume: keep the fresh seeds
        state = load_state_file(rng_file, allow=_LEGACY_RNG_GLOBALS)
        try:
            set_rng_state(state)
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"{rng_file}: not an RNG state this code wrote ({type(e).__name__}: {e}); "
                            "delete the file to resume with fresh seeds, or start a new run.output_dir") from None
    try:
        return json.loads((path / "trainer_state.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path / 'trainer_state.json'}: unreadable ({e}); delete {path} to resume from the "
                        "previous checkpoint") from None


# Older rng_rank files hold numpy's state as an ndarray: allow exactly the numpy globals that rebuild a
# plain array (torch's documented allow-list for it), nothing else.
_LEGACY_RNG_GLOBALS = [np.ndarray, np.dtype, np.dtypes.UInt32DType,
                       getattr(np, "_core", np.core).multiarray._reconstruct]


def load_state_file(path: Path, allow: Sequence[Any] = ()) -> Any:
    """``torch.load(weights_only=True)``: tensors and plain containers only (plus the ``allow``-listed
    globals); anything else -> UserError. A crafted pickle (``__reduce__`` calling ``os.system``) is
    refused before any of it runs.
    """
    try:
        with torch.serialization.safe_globals(list(allow)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: missing from the checkpoint; resume from a complete checkpoint or start a new "
                        "run.output_dir") from None
    except Exception as e:  # pickle.UnpicklingError for forbidden globals, RuntimeError for a broken zip
        why = str(e).strip().splitlines()
        hint = next((line for line in why if "GLOBAL" in line or "Unsupported" in line), why[0] if why else "")
        raise UserError(f"{path}: refused to load ({type(e).__name__}: {hint.strip()[:200]}): a checkpoint state "
                        "file may hold only tensors and plain values; it was not written by echodistill or was "
                        "tampered with. Delete this checkpoint or start a new run.output_dir") from None


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """The student's trainable tensors of checkpoint folder ``path`` (safetensors; legacy ``.pt`` safely)."""
    f = path / WEIGHTS
    if not f.is_file() and (path / LEGACY_WEIGHTS).is_file():
        weights = load_state_file(path / LEGACY_WEIGHTS)
        if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
            raise UserError(f"{path / LEGACY_WEIGHTS}: not a dict of tensors; delete this checkpoint")
        return weights
    try:
        return load_file(str(f))
    except FileNotFoundError:
        raise UserError(f"{f}: missing from the checkpoint; delete {path} to resume from the previous one") from None
    except Exception as e:  # SafetensorError: truncated or not safetensors
        raise UserError(f"{f}: not a readable safetensors file ({e}); the copy is incomplete or corrupt — "
                        f"delete {path} to resume from the previous checkpoint") from None


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
