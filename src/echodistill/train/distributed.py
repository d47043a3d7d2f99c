"""How the student is spread over processes: plain (one process), DDP, or FSDP2 (``fully_shard``).

The adapter computes through its own methods (text model, LM head and audio tower called directly,
the shared-prompt KV cache, our sampling loop), never through the HF model's top-level ``forward``.
DDP and FSDP2 hook the wrapper's forward, hence two rules here:

* **Gradients go through the wrapper's forward** (``Engine.loss``): the loss function of a micro-batch
  runs *inside* the prepared module's forward (TRL's forward-redirection trick: the inner module's
  ``forward`` is swapped for the loss function for one call). DDP then prepares its gradient
  all-reduce, FSDP2 all-gathers the root's parameters and registers the reduce-scatter of the
  backward, exactly as for an ordinary forward.
* **No-grad phases run unsharded** (``Engine.unsharded``): rollout, teacher scoring and evaluation
  call submodules outside any wrapper forward, so under FSDP2 every sharded module is all-gathered
  once for the phase (as TRL gathers ZeRO-3 weights for generation) and resharded after. Every rank
  enters and leaves together (collectives), and nothing inside is a collective, so ranks may run
  different numbers of decoding steps (an early EOS on one rank cannot hang the job).

FSDP2 is applied by our code (``shard``: each decoder layer, then the root) because accelerate 1.15
enables FSDP only with GPUs; with an accelerate FSDP config the same code runs and reads the plugin's
``reshard_after_forward`` and mixed precision; on CPU ``run.fsdp=true`` selects it (gloo).
Parameters become DTensor shards: optimizer state is sharded too (``save_sharded_optimizer``), and
full weights are materialised for saving inside ``unsharded``.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch
from torch import nn

from ..config import ConfigError
from ..errors import UserError


# ================================================================== forward redirection
def redirect(wrapper: nn.Module, inner: nn.Module, fn: Callable[[], Any]) -> Any:
    """``fn()`` run as ``wrapper``'s forward: ``inner.forward`` (the module ``wrapper`` wraps, or
    ``wrapper`` itself for FSDP2) is replaced by ``fn`` for exactly one call."""
    original = inner.forward

    def forward(*_args, **_kwargs):
        inner.forward = original  # restore first: fn may call inner's submodules, never inner.forward
        return fn()

    inner.forward = forward
    try:
        return wrapper()
    finally:
        inner.forward = original
        if "forward" in inner.__dict__ and inner.__dict__["forward"] is original:
            del inner.__dict__["forward"]  # back to the class's forward, as before


# ================================================================== FSDP2
def fsdp_modules(root: nn.Module) -> list[nn.Module]:
    from torch.distributed.fsdp import FSDPModule

    return [m for m in root.modules() if isinstance(m, FSDPModule)]


def shard(adapter: Any, *, device_type: str, reshard_after_forward: bool = True,
          mixed_precision: Optional[str] = None) -> None:
    """``fully_shard`` every decoder layer of the student, then its root module (in place).

    The frozen teacher copy (full fine-tuning) stays replicated: it never trains, and sharding it
    would put its all-gathers inside phases where ranks run different numbers of forwards.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    world = torch.distributed.get_world_size()
    mesh = init_device_mesh(device_type, (world,))
    mp = MixedPrecisionPolicy()
    if mixed_precision in ("bf16", "fp16"):
        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16 if mixed_precision == "bf16" else torch.float16,
                                  reduce_dtype=torch.float32)
    kw = dict(mesh=mesh, reshard_after_forward=reshard_after_forward, mp_policy=mp)
    for layer in adapter.text_model(adapter.hf).layers:
        fully_shard(layer, **kw)
    fully_shard(adapter.model, **kw)
    with torch.no_grad():  # FSDP2 initialises its root at the root's first forward: make that one first
        redirect(adapter.model, adapter.model, lambda: None)


@contextmanager
def unsharded(root: nn.Module, reshard_after_forward: bool = True) -> Iterator[None]:
    """Every FSDP2 module under ``root`` all-gathered for the block (collective on entry and exit;
    nothing inside is one). No-op without FSDP2. ``reshard_after_forward``: the setting to restore."""
    mods = fsdp_modules(root)
    if not mods:
        yield
        return
    for m in mods:
        m.set_reshard_after_forward(False, recurse=False)  # a layer's own forward must not reshard it here
        m.unshard()
    try:
        yield
    finally:
        for m in mods:
            m.reshard()
            m.set_reshard_after_forward(reshard_after_forward, recurse=False)


def local(t: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return t.to_local() if isinstance(t, DTensor) else t


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a DTensor shard (collective: every rank calls it); plain tensors as they are."""
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


def load_full_into(params: dict[str, nn.Parameter], weights: dict[str, torch.Tensor]) -> None:
    """Copy full tensors into parameters that may be DTensor shards (each rank keeps its own shard)."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    with torch.no_grad():
        for n, t in weights.items():
            p = params[n]
            if isinstance(p, DTensor):
                shard_ = distribute_tensor(t.to(p.device, p.dtype), p.device_mesh, p.placements, src_data_rank=None)
                p.to_local().copy_(shard_.to_local())
            else:
                p.copy_(t.to(p.device, p.dtype))


def optimizer_state_local(optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer's state dict with every DTensor replaced by this rank's shard (plain tensors)."""
    sd = optimizer.state_dict()
    sd["state"] = {k: {n: local(v) if isinstance(v, torch.Tensor) else v for n, v in s.items()}
                   for k, s in sd["state"].items()}
    return sd


def load_optimizer_state_local(optimizer: torch.optim.Optimizer, sd: dict) -> None:
    """Inverse of ``optimizer_state_local``: shards wrapped back as DTensors shaped like their parameters."""
    from torch.distributed.tensor import DTensor

    params = [p for g in optimizer.param_groups for p in g["params"]]
    for idx, s in sd["state"].items():
        p = params[int(idx)]
        if isinstance(p, DTensor):
            for n, v in list(s.items()):
                if isinstance(v, torch.Tensor) and v.shape == p.to_local().shape and v.dim() > 0:
                    s[n] = DTensor.from_local(v.to(p.device), p.device_mesh, p.placements, run_check=False,
                                              shape=p.shape, stride=p.stride())
    optimizer.load_state_dict(sd)


# ================================================================== the engine a recipe trains with
class Engine:
    """The student's process layout: ``plain`` | ``ddp`` | ``fsdp2`` (``Engine.setup``).

    ``loss(fn)``: run the loss function of one micro-batch with gradients, through the prepared module;
    ``inference()``: context for no-grad phases; ``full_weights()``: context for saves; ``no_sync(last)``:
    skip the gradient sync of all micro-batches but the last one of an update (DDP and FSDP2).
    """

    def __init__(self, accelerator: Any, adapter: Any, kind: str, reshard_after_forward: bool = True):
        self.accelerator, self.adapter, self.kind = accelerator, adapter, kind
        self.reshard_after_forward = reshard_after_forward
        self.wrapper: nn.Module = adapter.model

    @classmethod
    def setup(cls, accelerator: Any, adapter: Any, fsdp: bool = False) -> "Engine":
        """Choose the layout from accelerate's distributed type and ``fsdp`` (``run.fsdp``); wrap the student."""
        dt = accelerator.distributed_type.value
        want_fsdp = dt == "FSDP" or fsdp
        if dt in ("DEEPSPEED", "MEGATRON_LM", "XLA"):
            raise ConfigError(f"accelerate distributed_type {dt} is not supported by the trainer: use "
                              "configs/accelerate/ddp_gpu.yaml (LoRA) or fsdp2_gpu.yaml (full fine-tuning)")
        if accelerator.num_processes == 1:
            return cls(accelerator, adapter, "plain")
        if want_fsdp:
            plugin = getattr(accelerator.state, "fsdp_plugin", None)
            reshard = bool(getattr(plugin, "reshard_after_forward", True)) if plugin is not None else True
            mp = accelerator.mixed_precision if accelerator.mixed_precision != "no" else None
            if mp == "fp16":
                raise ConfigError("FSDP2 with fp16 needs a sharded gradient scaler the trainer does not have: "
                                  "use mixed_precision: bf16 in the accelerate config")
            shard(adapter, device_type=accelerator.device.type, reshard_after_forward=reshard, mixed_precision=mp)
            return cls(accelerator, adapter, "fsdp2", reshard)
        eng = cls(accelerator, adapter, "ddp")
        # accelerate's DDP wrapper over the student (the teacher copy, if any, stays outside)
        eng.wrapper = accelerator.prepare_model(adapter.model)
        return eng

    @property
    def sharded(self) -> bool:
        return self.kind == "fsdp2"

    def loss(self, fn: Callable[[], tuple[torch.Tensor, dict]]) -> tuple[torch.Tensor, dict]:
        """``fn()`` (loss, stats) with gradients; through DDP's / FSDP2's forward when there is one."""
        with self.accelerator.autocast():
            if self.kind == "plain":
                return fn()
            inner = self.wrapper.module if self.kind == "ddp" else self.wrapper
            return redirect(self.wrapper, inner, fn)

    def no_sync(self, last: bool):
        """No gradient sync in this backward unless ``last`` (gradients accumulate locally)."""
        if self.kind == "ddp" and not last:
            return self.wrapper.no_sync()
        if self.kind == "fsdp2" and not last:
            return _fsdp_no_sync(self.wrapper)
        return nullcontext()

    @contextmanager
    def inference(self) -> Iterator[None]:
        """No-grad phases (rollout, teacher, evaluation) and full-weight saves: FSDP2 modules all-gathered
        for the block, the accelerate config's autocast (the update's numerics, for the sampler too)."""
        with unsharded(self.adapter.model, self.reshard_after_forward) if self.sharded else nullcontext():
            with self.accelerator.autocast():
                yield

    @contextmanager
    def full_weights(self) -> Iterator[None]:
        """Saving (collective: every rank enters): the full weights as parameters (``named_parameters``)
        and as the state dict HF's / PEFT's ``save_pretrained`` read, on the main process.

        FSDP2 hooks ``state_dict()`` to return DTensor shards, so ``save_pretrained`` inside
        ``unsharded`` would read freed storage: the full state dict is gathered first (to the main
        process's CPU, ``get_model_state_dict``) and ``state_dict`` answers with it for the block.
        """
        if not self.sharded:
            yield
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        root = self.adapter.model
        full = get_model_state_dict(root, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        with unsharded(root, self.reshard_after_forward):
            root.state_dict = lambda *a, **k: dict(full)  # what save_pretrained reads
            try:
                yield
            finally:
                del root.state_dict

    def clip_grad_norm_(self, params: list[nn.Parameter], max_norm: float) -> float:
        """Clip the (averaged) gradients to ``max_norm`` (inf: measure only); the global norm over shards."""
        if not self.sharded:  # accelerate's: unscales fp16 gradients first
            return float(self.accelerator.clip_grad_norm_(params, max_norm))
        return float(full_tensor(torch.nn.utils.clip_grad_norm_(params, max_norm)))


@contextmanager
def _fsdp_no_sync(root: nn.Module) -> Iterator[None]:
    mods = fsdp_modules(root)
    for m in mods:
        m.set_requires_gradient_sync(False, recurse=False)
    try:
        yield
    finally:
        for m in mods:
            m.set_requires_gradient_sync(True, recurse=False)


# ================================================================== sharded checkpoints
def save_sharded_checkpoint(output_dir: Path, step: int, *, accelerator: Any, optimizer: Any, **kw) -> Path:
    """``checkpoint.save_checkpoint`` (call inside ``Engine.full_weights``) with the optimizer
    state in per-rank shards ``optimizer_rank<r>.pt`` (plain tensors), written before the atomic rename."""
    from .checkpoint import save_checkpoint

    rank = accelerator.process_index
    return save_checkpoint(output_dir, step, accelerator=accelerator, optimizer=None, **kw,
                           rank_files=lambda tmp: torch.save(optimizer_state_local(optimizer),
                                                             tmp / f"optimizer_rank{rank}.pt"))


def load_sharded_checkpoint(path: Path, *, accelerator: Any, optimizer: Any, **kw) -> dict:
    """``checkpoint.load_checkpoint`` for FSDP2: full weights split into this rank's shards, its optimizer shard."""
    from .checkpoint import load_checkpoint, load_state_file

    path = Path(path)
    check_world_size(path, accelerator.num_processes)
    shard_file = path / f"optimizer_rank{accelerator.process_index}.pt"
    return load_checkpoint(path, accelerator=accelerator, optimizer=optimizer, **kw, copy_weights=load_full_into,
                           load_optimizer=lambda: load_optimizer_state_local(optimizer, load_state_file(shard_file)))


def check_world_size(path: Path, world: int) -> None:
    """A sharded checkpoint resumes on the world size that wrote it (its optimizer is in shards)."""
    files = sorted(path.glob("optimizer_rank*.pt"))
    if files and len(files) != world:
        raise UserError(f"{path}: saved by {len(files)} FSDP processes, resumed with {world}: resume with "
                        f"--num_processes {len(files)}")


__all__ = ["Engine", "redirect", "shard", "unsharded", "fsdp_modules", "full_tensor", "load_full_into",
           "optimizer_state_local", "load_optimizer_state_local", "save_sharded_checkpoint",
           "load_sharded_checkpoint", "check_world_size"]
