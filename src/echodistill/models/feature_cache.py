"""Audio-feature caches: what a frozen audio path computed, reused instead of encoding again.

Two caches, each with explicit keys:

* ``BatchFeatures`` -- lives on one batch (``build_inputs`` output) and dies with it. Rollout,
  scoring and the update of the same batch share one encoder pass. Keys: ``("projected", model,
  device)`` (whole audio path frozen) and ``("hidden", encoder, device)`` (encoder frozen, projector
  trains: only the projector reruns).
* ``ClipFeatureCache`` -- the frozen teacher's features per clip across steps, keyed by
  ``(fingerprint of the teacher's audio weights, clip content hash)``. A clean clip's features never
  change during training, so every epoch after the first is a hit (memory LRU, ``max_mb``). With a
  disk folder (``model.feature_cache_dir``) the entries outlive the process: every later run from the
  same model on the same clips (other seeds, other variants, a resumed run) has no miss in its first
  epoch either. The disk layer is bounded too (``disk_mb``; oldest files go first). Safetensors files:
  loading one runs no code.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np
import torch
from torch import nn

BATCH_ATTR = "_echodistill_features"  # where a batch carries its BatchFeatures


def clip_key(wav: np.ndarray) -> str:
    """Content key of one float32 clip: sha1 of its samples + its length."""
    return hashlib.sha1(wav.tobytes()).hexdigest() + f":{wav.size}"


def weights_fingerprint(modules: Iterable[nn.Module]) -> str:
    """sha1 over the names, shapes, dtypes and values of every parameter and buffer of ``modules``.

    A content key for "the same audio path": equal weights give equal features. Computed once per
    model (a 7B model's audio tower, ~0.6 B parameters, hashes in seconds).
    """
    h = hashlib.sha1()
    for i, mod in enumerate(modules):
        for name, t in _state_tensors(mod):
            h.update(f"{i}.{name}:{tuple(t.shape)}:{t.dtype}".encode())
            # a copy: numpy() on the parameter's own CPU storage would pin it (FSDP2 could not free it)
            h.update(t.detach().to("cpu").contiguous().view(torch.uint8).clone().numpy().tobytes())
    return h.hexdigest()[:20]


def _state_tensors(mod: nn.Module) -> Iterable[tuple[str, torch.Tensor]]:
    """``mod.state_dict().items()`` read from the modules themselves (same names, same order): under
    FSDP2 ``state_dict()`` answers with DTensor shards even while the weights are gathered."""
    for prefix, m in mod.named_modules():
        for n, t in m._parameters.items():
            if t is not None:
                yield (f"{prefix}.{n}" if prefix else n), t
        for n, t in m._buffers.items():
            if t is not None and n not in m._non_persistent_buffers_set:
                yield (f"{prefix}.{n}" if prefix else n), t


class BatchFeatures:
    """Features computed for one batch, by explicit key (see the module docstring)."""

    def __init__(self, clip_keys: list[str]):
        self.clip_keys = clip_keys  # [B] content keys of the clips, in batch order
        self.store: dict[tuple[str, int, str], torch.Tensor] = {}

    @staticmethod
    def of(batch: Any) -> Optional["BatchFeatures"]:
        return batch.__dict__.get(BATCH_ATTR)

    @staticmethod
    def attach(batch: Any, clip_keys: list[str]) -> "BatchFeatures":
        feats = BatchFeatures(clip_keys)
        batch.__dict__[BATCH_ATTR] = feats
        return feats


class ClipFeatureCache:
    """Per-clip tensors keyed by ``(fingerprint, clip_key)``: a memory LRU and an optional disk layer."""

    def __init__(self, max_mb: float = 256.0, disk_dir: Optional[str | Path] = None, disk_mb: float = 4096.0):
        self.max_mb, self.disk_mb = float(max_mb), float(disk_mb)
        self.disk_dir = Path(disk_dir) if disk_dir else None
        self._mem: OrderedDict[tuple[str, str], torch.Tensor] = OrderedDict()
        self._bytes = 0
        self.hits = self.disk_hits = self.misses = 0
        self._disk_bytes: Optional[int] = None  # scanned on the first write, then kept up to date

    def __len__(self) -> int:
        return len(self._mem)

    @property
    def enabled(self) -> bool:
        return self.max_mb > 0 or self.disk_dir is not None

    def _path(self, key: tuple[str, str]) -> Path:
        fp, ck = key
        return self.disk_dir / fp / (ck.replace(":", "_") + ".safetensors")

    def get(self, key: tuple[str, str]) -> Optional[torch.Tensor]:
        if key in self._mem:
            self._mem.move_to_end(key)
            self.hits += 1
            return self._mem[key]
        if self.disk_dir is not None:
            path = self._path(key)
            if path.is_file():
                from safetensors.torch import load_file

                try:
                    value = load_file(str(path))["features"]
                except Exception:  # noqa: BLE001 -- a torn or foreign file is a miss, rewritten below
                    value = None
                if value is not None:
                    os.utime(path)  # recently used: evicted last
                    self.disk_hits += 1
                    self._remember(key, value)
                    return value
        self.misses += 1
        return None

    def put(self, key: tuple[str, str], value: torch.Tensor) -> None:
        value = value.detach()
        self._remember(key, value)
        if self.disk_dir is not None:
            self._write(key, value)

    def _remember(self, key, value: torch.Tensor) -> None:
        if self.max_mb <= 0:
            return
        if key in self._mem:
            return
        self._mem[key] = value
        self._bytes += value.numel() * value.element_size()
        while self._bytes > self.max_mb * 2 ** 20 and self._mem:
            _, old = self._mem.popitem(last=False)
            self._bytes -= old.numel() * old.element_size()

    def _write(self, key, value: torch.Tensor) -> None:
        from safetensors.torch import save_file

        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        save_file({"features": value.to("cpu").contiguous()}, str(tmp))
        os.replace(tmp, path)  # atomic: a reader never sees half a file
        if self._disk_bytes is None:
            self._disk_bytes = sum(p.stat().st_size for p in self.disk_dir.rglob("*.safetensors"))
        else:
            self._disk_bytes += path.stat().st_size
        if self._disk_bytes > self.disk_mb * 2 ** 20:
            self._evict_disk()

    def _evict_disk(self) -> None:
        """Delete the least recently used files until the folder is back under ``disk_mb``."""
        files = sorted((p.stat().st_mtime, p.stat().st_size, p) for p in self.disk_dir.rglob("*.safetensors"))
        total = sum(s for _, s, _ in files)
        for _, size, p in files:
            if total <= self.disk_mb * 2 ** 20:
                break
            p.unlink(missing_ok=True)
            total -= size
        self._disk_bytes = total

    def clear(self) -> None:
        """Drop the memory layer (the disk layer stays: it is keyed by content)."""
        self._mem.clear()
        self._bytes = 0


__all__ = ["BatchFeatures", "ClipFeatureCache", "clip_key", "weights_fingerprint"]
