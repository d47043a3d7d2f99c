"""The feature-cache service: what a frozen audio path computed, reused instead of encoding again.

``FeatureCache`` is one object per loaded model, passed to whoever needs it (the adapter, its
teacher view, the warm-up): nothing is stored in batch objects. It holds

* per batch -- the features computed for one ``build_inputs`` batch, while that batch lives
  (keyed by the batch object's identity; ``weakref.finalize`` drops the entry when the batch is
  collected). Rollout, scoring and the update of the same batch share one encoder pass. Keys:
  ``("projected", model, device)`` (whole audio path frozen) and ``("hidden", encoder, device)``
  (encoder frozen, projector trains: only the projector reruns). The batch's clip content keys
  (``clip_key``) are registered here by ``build_inputs`` too.
* per clip -- ``clips`` (``ClipFeatureCache``): the frozen teacher's features and the frozen
  encoder's output per clip across steps, keyed by ``(fingerprint of the weights, clip content
  hash)``. A clean clip's features never change during training, so every epoch after the first is a
  hit (memory LRU, ``max_mb``). With a disk folder (``model.feature_cache_dir``) the entries outlive
  the process: every later run from the same model on the same clips (other seeds, other variants, a
  resumed run) has no miss in its first epoch either. The disk layer is bounded too (``disk_mb``;
  oldest files go first). Safetensors files: loading one runs no code. The warm-up pins the encoder
  outputs of the clips it trains on (reused every epoch: never evicted, kept on the CPU); the RL
  teacher then reads them under the same keys.
* per batch, on disk -- an inference model (``load(train=False)``: eval, predict) with a disk folder
  keeps each batch's encoder output in ``clips`` under the batch's content (``batch_key``: its clips'
  keys in order). Evaluating another checkpoint from the same base model on the same grid (same items,
  order, batch size) then encodes nothing, and gets the same bits: a clip's features depend in their
  last bits on the batch they were encoded in (its size, its neighbours), so the entries are whole
  batches, never assembled from clips encoded elsewhere.
* counters -- ``encoder_calls`` (forwards of an audio encoder), ``encoder_clips`` (clips encoded).
"""

from __future__ import annotations

import hashlib
import os
import weakref
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np
import torch
from torch import nn

from ..provenance import KERNEL_ENV


def clip_key(wav: np.ndarray) -> str:
    """Content key of one float32 clip: sha1 of its samples + its length."""
    return hashlib.sha1(wav.tobytes()).hexdigest() + f":{wav.size}"


def batch_key(clip_keys: list[str], device: str = "cpu") -> str:
    """Content key of a whole batch: its clips' keys in order, and what decides the computation's last bits
    besides the weights (the device type, torch's version and threads, the kernel pins of ``KERNEL_ENV``)."""
    context = [str(device).split(":")[0], torch.__version__, str(torch.get_num_threads()),
               *(os.environ.get(k, "") for k in KERNEL_ENV)]
    return "batch-" + hashlib.sha1("|".join([*clip_keys, *context]).encode()).hexdigest()


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


class ClipFeatureCache:
    """Per-clip tensors keyed by ``(fingerprint, clip_key)``: a memory LRU and an optional disk layer."""

    def __init__(self, max_mb: float = 256.0, disk_dir: Optional[str | Path] = None, disk_mb: float = 4096.0):
        self.max_mb, self.disk_mb = float(max_mb), float(disk_mb)
        self.disk_dir = Path(disk_dir) if disk_dir else None
        self._mem: OrderedDict[tuple[str, str], torch.Tensor] = OrderedDict()
        self._pinned: dict[tuple[str, str], torch.Tensor] = {}  # outside the LRU bound (``put(pin=True)``)
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
        if key in self._pinned:
            self.hits += 1
            return self._pinned[key]
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

    def put(self, key: tuple[str, str], value: torch.Tensor, pin: bool = False) -> None:
        """Store ``value``; ``pin``: a CPU copy kept outside the memory bound (the warm-up's training clips)."""
        value = value.detach()
        if pin:
            self.pin(key, value)
        else:
            self._remember(key, value)
        if self.disk_dir is not None:
            self._write(key, value)

    def pin(self, key: tuple[str, str], value: torch.Tensor) -> None:
        """Keep a CPU copy of ``value`` outside the memory bound (no disk write)."""
        if key not in self._pinned:
            self._pinned[key] = value.detach().cpu().clone()

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
        """Drop the memory layer, pinned entries included (the disk layer stays: it is keyed by content)."""
        self._mem.clear()
        self._pinned.clear()
        self._bytes = 0


class FeatureCache:
    """The service (see the module docstring): per-batch features, per-clip ``clips``, encoder counters."""

    def __init__(self, clips: Optional[ClipFeatureCache] = None, inference: bool = False):
        self.clips = clips if clips is not None else ClipFeatureCache()
        self.inference = inference  # a model loaded for prediction only (see ``keeps_batches``)
        self._batches: dict[int, tuple[Optional[list[str]], dict]] = {}  # id(batch) -> (clip keys, features)
        self._fingerprints: dict[tuple, str] = {}  # ids of frozen modules -> fingerprint of their weights
        self.encoder_calls = 0
        self.encoder_clips = 0

    def register(self, batch: Any, clip_keys: Optional[list[str]]) -> dict:
        """Start ``batch``'s entry (its clips' content keys, no features yet); it ends with the batch."""
        key = id(batch)
        if key not in self._batches:
            weakref.finalize(batch, self._batches.pop, key, None)
        self._batches[key] = (clip_keys, {})
        return self._batches[key][1]

    def clip_keys(self, batch: Any) -> Optional[list[str]]:
        """The content keys of ``batch``'s clips (None for a batch ``build_inputs`` did not make)."""
        entry = self._batches.get(id(batch))
        return entry[0] if entry is not None else None

    def of_batch(self, batch: Any) -> dict:
        """``batch``'s features by key (``("projected" | "hidden", id(module), device)``), created on first use."""
        entry = self._batches.get(id(batch))
        return entry[1] if entry is not None else self.register(batch, None)

    @property
    def keeps_batches(self) -> bool:
        """Whole batches' encoder outputs go to the disk layer: an inference model with a disk folder
        (a training run's batches never recur; its disk layer is for the teacher's clips)."""
        return self.inference and self.clips.disk_dir is not None

    @property
    def batches_held(self) -> int:
        """Batches with an entry now (each ends when its batch is collected)."""
        return len(self._batches)

    def fingerprint(self, modules: list[nn.Module]) -> str:
        """``weights_fingerprint`` of frozen ``modules``, computed once per set of module objects."""
        key = tuple(id(mod) for mod in modules)
        if key not in self._fingerprints:
            self._fingerprints[key] = weights_fingerprint(modules)
        return self._fingerprints[key]

    def count_call(self, *args: Any, **kwargs: Any) -> None:
        """Forward pre-hook of every audio encoder: counts its forwards, whoever calls it."""
        self.encoder_calls += 1

    def clear(self) -> None:
        """Drop the per-clip features held in memory (per-batch entries die with their batch)."""
        self.clips.clear()


__all__ = ["FeatureCache", "ClipFeatureCache", "clip_key", "batch_key", "weights_fingerprint"]
