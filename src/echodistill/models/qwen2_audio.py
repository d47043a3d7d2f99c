"""The Qwen2-Audio family (``Qwen2AudioForConditionalGeneration``; the embedded default is one).

transformers 5.x module paths: ``model.model.audio_tower`` (Whisper-style encoder; needs the mel
length to equal ``2 * max_source_positions`` exactly), ``model.model.multi_modal_projector``,
``model.model.language_model`` (a Qwen2Model), ``model.lm_head``. The processor expands each
``<|AUDIO|>`` of the chat template to one placeholder per encoder output frame (after pooling).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .family import Family, register


@register("qwen2_audio", "embedded", "tiny")
class Qwen2Audio(Family):
    has_separate_projector = True  # audio_tower -> multi_modal_projector

    @classmethod
    def hf_class(cls) -> type:
        from transformers import Qwen2AudioForConditionalGeneration

        return Qwen2AudioForConditionalGeneration

    def audio_modules(self, m: nn.Module) -> list[nn.Module]:
        return [m.model.audio_tower, m.model.multi_modal_projector]

    def audio_token_id(self, m: nn.Module) -> int:
        return int(m.config.audio_token_id)

    def encode_audio_hidden(self, m: nn.Module, features: Any) -> torch.Tensor:
        """Encoder only (before the projector), valid frames of every clip in order -> [n, H].

        Used by the warm-up to cache the frozen encoder's output per clip while the projector trains.
        Mirrors ``Qwen2AudioModel.forward``: the encoder attends only to the clip's own frames
        (bidirectional mask from ``feature_attention_mask``), then the valid pooled frames are kept.
        """
        from transformers.masking_utils import create_bidirectional_mask

        tower = m.model.audio_tower
        dev = next(tower.parameters()).device
        feats = features["input_features"].to(dev)
        fmask = features["feature_attention_mask"].to(dev)
        conv_lengths, out_lengths = tower._get_feat_extract_output_lengths(fmask.sum(-1))
        b, _, n_mel = feats.shape
        max_len = (n_mel - 2) // 2 + 1
        mask2d = (torch.arange(max_len, device=dev)[None, :] < conv_lengths[:, None]).long()
        dummy = torch.zeros((b, max_len, 1), dtype=tower.conv1.weight.dtype, device=dev)
        amask = create_bidirectional_mask(config=tower.config, inputs_embeds=dummy, attention_mask=mask2d)
        hidden = tower(feats, attention_mask=amask).last_hidden_state
        valid = torch.arange(hidden.shape[1], device=dev)[None, :] < out_lengths[:, None]
        return hidden[valid]

    def encode_audio(self, m: nn.Module, features: Any) -> torch.Tensor:
        """Encoder + projector on all B clips in one call; keep the valid frames of each -> [n, D]."""
        return self.project_audio(m, self.encode_audio_hidden(m, features))

    def project_audio(self, m: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        """Projector on encoder frames [n, H] -> [n, D] (per frame, so caching ``hidden`` is exact)."""
        return m.model.multi_modal_projector(hidden)


__all__ = ["Qwen2Audio"]
