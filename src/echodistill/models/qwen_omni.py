"""The Qwen2.5-Omni and Qwen3-Omni thinker families (audio + text only).

Only the thinker (the text-generating half) is used; the talker/vocoder are never loaded. Module paths
in transformers 5.x: ``model.model.audio_tower`` (its own ``proj`` maps to the LM width, so there is
no separate projector), ``model.model.visual`` (unused), ``model.model.language_model``,
``model.lm_head``. The LM prefix equals Qwen2-Audio's, so the default LoRA regex applies unchanged.

Positions: the thinkers use 3-D multimodal rope; for audio-only prompts all three components equal
the plain sequential positions (``get_rope_index`` gives audio tokens ``arange(len) + start``), and
the text model expands 2-D position ids to 3-D itself, so the family's default cumsum positions are
correct (a test compares against the HF forward).

Processor: the stock Omni processors build image/video processors that need torchvision (not usable
beside this torch). ``AudioOnlyOmniProcessor`` subclasses them without the image/video parts. The
tokenizer must declare ``audio_token``, ``image_token``, ``video_token``, ``vision_bos_token``,
``vision_eos_token``, ``audio_bos_token``, ``audio_eos_token`` as extra special tokens, and the
thinker config needs ``vision_start_token_id``/``vision_end_token_id`` even for audio-only use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .family import Family, register
from .small_tokenizer import chatml_audio_template

OMNI_NAMED_SPECIALS = {
    "image_token": "<|IMAGE|>",
    "video_token": "<|VIDEO|>",
    "vision_bos_token": "<|vision_bos|>",
    "vision_eos_token": "<|vision_eos|>",
}

# Qwen2.5-Omni style: "<|audio_bos|><|AUDIO|><|audio_eos|>" inline before the user text.
OMNI_CHAT_TEMPLATE = chatml_audio_template(
    "content['type'] == 'audio' or 'audio' in content or 'audio_url' in content",
    "<|audio_bos|><|AUDIO|><|audio_eos|>", "content['type'] == 'text'")


def _audio_only_processor_class(base_name: str):
    """A subclass of transformers' Omni processor that holds only a feature extractor and a tokenizer."""
    import transformers
    from transformers.processing_utils import ProcessorMixin

    base = getattr(transformers, base_name)

    class AudioOnly(base):  # type: ignore[misc, valid-type]
        def __init__(self, feature_extractor=None, tokenizer=None, chat_template=None, **kwargs):
            ProcessorMixin.__init__(self, feature_extractor, tokenizer, chat_template=chat_template)
            tok = self.tokenizer
            for name in ("image_token", "audio_token", "video_token", "vision_bos_token", "vision_eos_token",
                         "audio_bos_token", "audio_eos_token"):
                setattr(self, name, getattr(tok, name, None))
            for name in ("image_token", "audio_token", "video_token"):
                setattr(self, name + "_id", tok.convert_tokens_to_ids(getattr(tok, name)))

        def __call__(self, text=None, audio=None, **kwargs):
            if kwargs.get("images") is not None or kwargs.get("videos") is not None:
                raise ValueError(f"{type(self).__name__} is audio-only: no images or videos")
            kwargs.pop("images", None)
            kwargs.pop("videos", None)
            return super().__call__(text=text, audio=audio, **kwargs)

    AudioOnly.__name__ = AudioOnly.__qualname__ = "AudioOnly" + base_name
    return AudioOnly


class _OmniThinker(Family):
    """The thinker's audio tower projects to the LM width itself (no separate projector)."""

    processor_base = "Qwen2_5OmniProcessor"

    def encode_audio(self, m: nn.Module, features: Any) -> torch.Tensor:
        """All clips in one encoder call (the Omni encoder packs them by length) -> [n, D]."""
        dev = next(m.model.audio_tower.parameters()).device
        out = m.model.get_audio_features(features["input_features"].to(dev),
                                         feature_attention_mask=features["feature_attention_mask"].to(dev),
                                         return_dict=True)
        return out.last_hidden_state

    @classmethod
    def load_processor(cls, path: Path, cfg_model: Any) -> Any:
        klass = _audio_only_processor_class(cls.processor_base)
        return klass.from_pretrained(str(path))


@register("qwen2_5_omni", "qwen_omni")
class Qwen25Omni(_OmniThinker):
    processor_base = "Qwen2_5OmniProcessor"

    @classmethod
    def hf_class(cls) -> type:
        from transformers import Qwen2_5OmniThinkerForConditionalGeneration

        return Qwen2_5OmniThinkerForConditionalGeneration


@register("qwen3_omni")
class Qwen3Omni(_OmniThinker):
    """Qwen3-Omni-MoE thinker: same structure as Qwen2.5-Omni's (audio_tower / language_model / lm_head).

    LoRA reaches the attention projections; the MoE experts are fused parameters (not nn.Linear), so
    the default regex leaves them untouched.
    """

    processor_base = "Qwen3OmniMoeProcessor"

    @classmethod
    def hf_class(cls) -> type:
        from transformers import Qwen3OmniMoeThinkerForConditionalGeneration

        return Qwen3OmniMoeThinkerForConditionalGeneration


__all__ = ["Qwen25Omni", "Qwen3Omni", "OMNI_NAMED_SPECIALS", "OMNI_CHAT_TEMPLATE"]
