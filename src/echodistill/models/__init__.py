"""Model adapters: every backbone behind one contract (``base.AudioLLM``).

``load_adapter(cfg_model, path=None, lora=None, train=True)`` picks the backbone family
(``family.py``, registered by name) from ``cfg_model.backbone`` (or from the ``echodistill_model.json``
a saved checkpoint carries) and loads ``path`` (default ``cfg_model.path``): full weights or a saved
PEFT adapter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from ..config import ConfigError
from . import loading
from .base import AudioLLM, Completions, backbone_of
from .family import Family, family_for

adapter_class = family_for  # the former name: the family has ``hf_class`` / ``load_processor`` as before


def load_adapter(cfg_model: Any, path: Optional[str | Path] = None, lora: Any = None, train: bool = True,
                 fold_adapter: bool = True) -> AudioLLM:
    """Load the model of ``cfg_model`` (``ModelConfig``) from ``path`` (default ``cfg_model.path``).

    ``lora``: a ``LoraConfig`` (default ``cfg_model.lora``), applied when ``train`` and enabled.
    ``train=False``: everything frozen (evaluation). ``fold_adapter``: see ``loading.load``.
    """
    path = Path(path if path is not None else cfg_model.path)
    backbone = backbone_of(path) or cfg_model.backbone
    if backbone == "embedded" and backbone_of(path) is None and not (path / "config.json").is_file() \
            and not (path / "adapter_config.json").is_file():
        raise ConfigError(f"model directory {path} has no config.json: build the embedded model first "
                          "(`echodistill model build`) or set model.path")
    from ..provenance import verify_weights
    verify_weights(path, cfg_model.path, require=False)  # a truncated download is one line naming the file, not a traceback
    return loading.load(AudioLLM, family_for(backbone)(), path, cfg_model, lora=lora, train=train,
                        fold_adapter=fold_adapter)


__all__ = ["AudioLLM", "Completions", "Family", "load_adapter", "family_for", "adapter_class"]
