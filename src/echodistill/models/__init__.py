"""Model adapters: every backbone behind one contract (``base.AudioLLM``).

``load_adapter(cfg_model, path=None, lora=None, train=True)`` picks the adapter class from
``cfg_model.backbone`` (or from the ``echodistill_model.json`` a saved checkpoint carries) and loads
``path`` (default ``cfg_model.path``): full weights or a saved PEFT adapter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from ..config import BACKBONES, ConfigError
from .base import AudioLLM, Completions, backbone_of


def adapter_class(backbone: str) -> type[AudioLLM]:
    """The AudioLLM subclass for a backbone name (embedded is a small Qwen2-Audio)."""
    if backbone in ("qwen2_audio", "embedded", "tiny"):
        from .qwen2_audio import Qwen2AudioLLM

        return Qwen2AudioLLM
    if backbone in ("qwen2_5_omni", "qwen_omni"):
        from .qwen_omni import Qwen25OmniLLM

        return Qwen25OmniLLM
    if backbone == "qwen3_omni":
        from .qwen_omni import Qwen3OmniLLM

        return Qwen3OmniLLM
    raise ConfigError(f"model.backbone={backbone!r} is unknown; use {' | '.join(BACKBONES)}")


def load_adapter(cfg_model: Any, path: Optional[str | Path] = None, lora: Any = None, train: bool = True,
                 fold_adapter: bool = True) -> AudioLLM:
    """Load the model of ``cfg_model`` (``ModelConfig``) from ``path`` (default ``cfg_model.path``).

    ``lora``: a ``LoraConfig`` (default ``cfg_model.lora``), applied when ``train`` and enabled.
    ``train=False``: everything frozen (evaluation). ``fold_adapter``: see ``AudioLLM.load``.
    """
    path = Path(path if path is not None else cfg_model.path)
    backbone = backbone_of(path) or cfg_model.backbone
    if backbone == "embedded" and backbone_of(path) is None and not (path / "config.json").is_file() \
            and not (path / "adapter_config.json").is_file():
        raise ConfigError(f"model directory {path} has no config.json: build the embedded model first "
                          "(`echodistill model build`) or set model.path")
    from ..provenance import verify_weights
    verify_weights(path, cfg_model.path, require=False)  # a truncated download is one line naming the file, not a traceback
    return adapter_class(backbone).load(path, cfg_model, lora=lora, train=train, fold_adapter=fold_adapter)


__all__ = ["AudioLLM", "Completions", "load_adapter", "adapter_class"]
