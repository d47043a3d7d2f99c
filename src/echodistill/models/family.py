"""Backbone families: everything that differs between audio LLMs, one small class per family.

A family knows its transformers class, its processor, where the decoder / LM head / audio encoder /
projector sit inside the HF model, the names of the feature-extractor outputs, how to encode audio,
its chat template and its end-of-turn token. It holds no state: methods take the HF model ``m``
(student or frozen teacher) they work on. Families register themselves by name (``register``);
``family_for(name)`` looks one up. The generic code (``base.AudioLLM``, ``sampler``, ``scorer``,
``audio_path``) only calls these methods, so a backbone name or module path never appears there.

Adding a backbone: a subclass in its own module decorated with ``@register("name", aliases...)``,
that module named in ``BUILTIN_MODULES``, the name in ``config.BACKBONES``, a tiny builder in
``tiny.py`` and a ``tests/test_adapters.py`` parametrisation (docs/ARCHITECTURE.md, "A new backbone").
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..config import BACKBONES, ConfigError

FAMILIES: dict[str, type["Family"]] = {}
BUILTIN_MODULES = ("qwen2_audio", "qwen_omni")  # imported on the first lookup: their classes register


def register(*names: str) -> Callable[[type["Family"]], type["Family"]]:
    """Class decorator: make a family known under ``names`` (the first is the name saved with checkpoints)."""
    def add(cls: type[Family]) -> type[Family]:
        cls.name = names[0]
        for n in names:
            FAMILIES[n] = cls
        return cls
    return add


def family_for(backbone: str) -> type["Family"]:
    """The family class registered under ``backbone`` (``model.backbone`` or a checkpoint's record)."""
    for mod in BUILTIN_MODULES:
        importlib.import_module(f"{__package__}.{mod}")
    if backbone not in FAMILIES:
        raise ConfigError(f"model.backbone={backbone!r} is unknown; use {' | '.join(BACKBONES)}")
    return FAMILIES[backbone]


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """[N, S] 0/1 mask -> [N, S] positions counting attended tokens only (pads at 0)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


class Family:
    """One backbone family. Defaults describe the transformers 5.x Qwen audio layout; subclasses override."""

    name: str = ""
    #: module-name prefix of the language model inside the HF model (LoRA must stay under it)
    lm_prefix: str = "model.language_model"
    #: the token that ends an assistant turn (the warm-up's supervised completion ends with it)
    end_of_turn: str = "<|im_end|>"
    #: the processor outputs that carry the audio, one row per clip (sliced per clip by the caches)
    feature_keys: tuple[str, ...] = ("input_features", "feature_attention_mask")
    sampling_rate: int = 16000
    #: the audio path is an encoder then a per-frame projector: the encoder's output can be cached
    #: while the projector trains (``encode_audio_hidden`` / ``project_audio``)
    has_separate_projector: bool = False

    # ------------------------------------------------------------ loading
    @classmethod
    def hf_class(cls) -> type:
        """The transformers model class to load."""
        raise NotImplementedError

    @classmethod
    def load_processor(cls, path: Path, cfg_model: Any) -> Any:
        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(str(path), trust_remote_code=bool(getattr(cfg_model, "trust_remote_code",
                                                                                           False)))

    @classmethod
    def lora_target_modules(cls, regex: str) -> str:
        """The LoRA target regex for this family (the default regex names Qwen-style linears)."""
        return regex

    # ------------------------------------------------------------ module paths
    def text_model(self, m: nn.Module) -> nn.Module:
        """The decoder stack: forward(inputs_embeds, attention_mask, position_ids, cache, use_cache)."""
        return m.model.language_model

    def lm_head(self, m: nn.Module) -> nn.Module:
        return m.lm_head

    def audio_encoder(self, m: nn.Module) -> nn.Module:
        """The audio encoder (frozen by ``model.freeze_audio_encoder``; its forwards are counted)."""
        return m.model.audio_tower

    def audio_modules(self, m: nn.Module) -> list[nn.Module]:
        """Every module on the audio path, encoder first: if none trains, the features are cached."""
        return [self.audio_encoder(m)]

    def audio_token_id(self, m: nn.Module) -> int:
        """Id of the placeholder token the audio features replace."""
        cfg = m.config
        return int(getattr(cfg, "audio_token_id", None) or cfg.audio_token_index)

    # ------------------------------------------------------------ audio
    def clip_features(self, batch: Any, rows: list[int]) -> dict[str, torch.Tensor]:
        """The audio inputs of clips ``rows`` of a ``build_inputs`` batch (``feature_keys`` sliced)."""
        idx = torch.tensor(rows)
        return {k: batch[k][idx] for k in self.feature_keys}

    def clip_count(self, batch: Any) -> int:
        return int(batch[self.feature_keys[0]].shape[0])

    def encode_audio(self, m: nn.Module, features: Any) -> torch.Tensor:
        """Projected audio features for every placeholder, in order: [n_placeholders, D]."""
        raise NotImplementedError

    def encode_audio_hidden(self, m: nn.Module, features: Any) -> torch.Tensor:
        """Encoder output before the projector, valid frames of every clip in order: [n, H]."""
        raise NotImplementedError(f"{type(self).__name__} has no separate projector (has_separate_projector)")

    def project_audio(self, m: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        """The projector on encoder frames [n, H] -> [n, D] (per frame)."""
        raise NotImplementedError(f"{type(self).__name__} has no separate projector (has_separate_projector)")

    # ------------------------------------------------------------ text
    def chat_messages(self, system_prompt: str, prompt: str) -> list[dict]:
        """The conversation for one user text with one clip (system prompt first)."""
        return [
            {"role": "system", "content": system_prompt},
            {"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": prompt}]},
        ]

    def position_ids(self, attention_mask: torch.Tensor) -> torch.Tensor:
        """Position ids for the text model (a family with another rope scheme overrides)."""
        return position_ids_from_mask(attention_mask)

    def end_of_turn_id(self, tokenizer: Any, eos_token_ids: list[int]) -> int:
        """The id ending a supervised completion: ``end_of_turn`` if it is an EOS token, else the first EOS."""
        tid = tokenizer.convert_tokens_to_ids(self.end_of_turn)
        return int(tid) if isinstance(tid, int) and tid in eos_token_ids else int(eos_token_ids[0])


__all__ = ["Family", "FAMILIES", "register", "family_for", "position_ids_from_mask"]
