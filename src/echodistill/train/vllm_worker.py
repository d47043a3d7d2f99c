"""vLLM worker extension for full-fine-tuning weight sync (``train.rollout_backend=vllm`` without LoRA).

Start the server with it (docs/scale-out.md)::

    VLLM_SERVER_DEV_MODE=1 vllm serve <model dir> --worker-extension-cls echodistill.train.vllm_worker.WeightSync

After each update the trainer writes ``<dir>/model.safetensors`` (HF parameter names) and calls
``POST /collective_rpc {"method": "echodistill_load_weights", "args": ["<dir>"]}``; every worker (each
tensor-parallel shard) reads the file and hands the tensors to the model's own ``load_weights``, which
maps HF names to vLLM's and shards them, as it does at start-up. TRL broadcasts the tensors over NCCL
instead (no disk); this path needs only the stock OpenAI server and a folder both sides read.

Weights load only from inside ``$ECHODISTILL_SYNC_DIR`` (set it to ``train.vllm_sync_dir`` when starting
the server): vLLM's ``--api-key`` guards ``/v1/*`` routes only, not ``/collective_rpc``, so a path
from a request is confined here too. Unset: refused.

Imported by vLLM's workers only; no vLLM import here. Untested on this CPU machine (no vLLM).
"""

from __future__ import annotations


class WeightSync:
    """Mixed into vLLM's GPU worker by ``--worker-extension-cls`` (``self.model_runner`` is the worker's)."""

    def echodistill_load_weights(self, folder: str) -> int:
        import os
        from pathlib import Path

        from safetensors import safe_open

        root = os.environ.get("ECHODISTILL_SYNC_DIR")
        if not root:
            raise ValueError("set ECHODISTILL_SYNC_DIR (= train.vllm_sync_dir) when starting the server")
        if not Path(folder).resolve().is_relative_to(Path(root).resolve()):
            raise ValueError("the weights folder must lie inside ECHODISTILL_SYNC_DIR")
        path = Path(folder).resolve() / "model.safetensors"
        with safe_open(str(path), framework="pt", device="cpu") as f:
            names = list(f.keys())
            self.model_runner.model.load_weights(weights=((n, f.get_tensor(n)) for n in names))
        return len(names)


__all__ = ["WeightSync"]
