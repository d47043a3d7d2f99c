"""Qwen2.5-Omni and Qwen3-Omni thinkers (audio + text only) behind the adapter contract.

Only the thinker (the text-generating half) is used; the talker/vocoder are never loaded. Module paths
in transformers 5.x: ``model.model.audio_tower`` (its own ``proj`` maps to the LM width, so there is
no separate projector), ``model.model.visual`` (unused), ``model.model.language_model``,
``model.lm_head``. The LM prefix equals Qwen2-Audio's, so the default LoRA regex applies unchanged.

Positions: the thinkers use 3-D multimodal rope; for audio-only prompts all three components equal
the plain sequential positions (``get_rope_index`` gives audio tokens ``arange(len) + start``), and
the text model expands 2-D position ids to 3-D itself, so the base class's cumsum positions are
correct (a test compares against the HF forward).

Processor: the stock Omni processors build image/video processors that need torchvision (not usable
beside this torch). ``AudioOnlyOmniProcessor`` subclasses them without the image/video parts. The
tokenizer must declare ``audio_token``, ``image_token``, ``video_token``, ``vision_bos_token``,
``vision_eos_token``, ``audio_bos_token``, ``audio_eos_token`` as extra special tokens, and the
thinker config needs ``vision_start_token_id``/``vision_end_token_id`` even for audio-only use.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .base import AudioLLM

OMNI_NAMED_SPECIALS = {
    "image_token": "<|IMAGE|>",
    "video_token": "<|VIDEO|>",
    "vision_bos_token": "<|vision_bos|>",
    "vision_eos_token": "<|vision_eos|>",
}

# Qwen2.5-Omni style: "<|audio_bos|><|AUDIO|><|audio_eos|>" inline before the user text.
OMNI_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n"
    "{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'audio' or 'audio' in content or 'audio_url' in content %}"
    "<|audio_bos|><|AUDIO|><|audio_eos|>"
    "{% elif content['type'] == 'text' %}"
    "{{ content['text'] }}"
    "{% endif %}"
    "{% endfor %}"
    "<|im_end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "<|im_start|>assistant\n"
    "{% endif %}"
)


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


class _OmniThinkerLLM(AudioLLM):
    lm_prefix = "model.language_model"
    processor_base = "Qwen2_5OmniProcessor"

    def audio_modules(self, m: nn.Module) -> list[nn.Module]:
        return [m.model.audio_tower]

    @property
    def audio_token_id(self) -> int:
        cfg = self.hf.config
        return int(getattr(cfg, "audio_token_id", None) or cfg.audio_token_index)

    def encode_audio(self, m: nn.Module, batch: Any) -> torch.Tensor:
        """All clips in one encoder call (the Omni encoder packs them by length) -> [n, D]."""
        dev = next(m.model.audio_tower.parameters()).device
        out = m.model.get_audio_features(batch["input_features"].to(dev),
                                         feature_attention_mask=batch["feature_attention_mask"].to(dev),
                                         return_dict=True)
        return out.last_hidden_state

    @classmethod
    def load_processor(cls, path: Path, cfg_model: Any) -> Any:
        klass = _audio_only_processor_class(cls.processor_base)
        return klass.from_pretrained(str(path))


class Qwen25OmniLLM(_OmniThinkerLLM):
    backbone = "qwen2_5_omni"
    processor_base = "Qwen2_5OmniProcessor"

    @classmethod
    def hf_class(cls) -> type:
        from transformers import Qwen2_5OmniThinkerForConditionalGeneration

        return Qwen2_5OmniThinkerForConditionalGeneration


class Qwen3OmniLLM(_OmniThinkerLLM):
    """Qwen3-Omni-MoE thinker: same structure as Qwen2.5-Omni's (audio_tower / language_model / lm_head).

    LoRA reaches the attention projections; the MoE experts are fused parameters (not nn.Linear), so
    the default regex leaves them untouched.
    """

    backbone = "qwen3_omni"
    processor_base = "Qwen3OmniMoeProcessor"

    @classmethod
    def hf_class(cls) -> type:
        from transformers import Qwen3OmniMoeThinkerForConditionalGeneration

        return Qwen3OmniMoeThinkerForConditionalGeneration


def _mrope_section(head_dim: int) -> list[int]:
    """Split head_dim/2 rotary frequencies over (temporal, height, width), like Qwen's [16, 24, 24]."""
    half = head_dim // 2
    t = half // 4
    h = (half - t) // 2
    return [t, h, half - t - h]


def build_tiny_qwen2_5_omni(out_dir: str | Path, seed: int = 0, window_s: float = 1.0, *, hidden_size: int = 64,
                            text_layers: int = 2, audio_layers: int = 2, audio_d_model: int = 64,
                            feature_size: int = 80, vocab_size: int = 400) -> Path:
    """Write a tiny random Qwen2.5-Omni thinker + audio-only processor to ``out_dir``; return it."""
    from transformers import Qwen2_5OmniThinkerConfig, Qwen2_5OmniThinkerForConditionalGeneration

    from .small_tokenizer import build_small_tokenizer
    from .tiny import TINY_CORPUS, tiny_feature_extractor, _window

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    w = _window(window_s)
    tok = build_small_tokenizer(TINY_CORPUS, vocab_size=vocab_size, extra_specials=OMNI_NAMED_SPECIALS)
    tok.chat_template = OMNI_CHAT_TEMPLATE
    ids = {k: tok.convert_tokens_to_ids(v) for k, v in
           {"audio": "<|AUDIO|>", "image": "<|IMAGE|>", "video": "<|VIDEO|>", "vbos": "<|vision_bos|>",
            "veos": "<|vision_eos|>", "abos": "<|audio_bos|>", "aeos": "<|audio_eos|>"}.items()}
    head_dim = hidden_size // 4
    config = Qwen2_5OmniThinkerConfig(
        audio_config=dict(num_mel_bins=feature_size, encoder_layers=audio_layers, encoder_attention_heads=4,
                          encoder_ffn_dim=2 * audio_d_model, d_model=audio_d_model, max_source_positions=50 * w,
                          n_window=50 * w, output_dim=hidden_size),
        vision_config=dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=hidden_size,
                           fullatt_block_indexes=[0]),
        text_config=dict(vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                         num_hidden_layers=text_layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=4096, tie_word_embeddings=False,
                         rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                                          "mrope_section": _mrope_section(head_dim)},
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None),
        audio_token_index=ids["audio"], image_token_index=ids["image"], video_token_index=ids["video"],
        audio_start_token_id=ids["abos"], audio_end_token_id=ids["aeos"],
        vision_start_token_id=ids["vbos"], vision_end_token_id=ids["veos"],
        user_token_id=tok.convert_tokens_to_ids("user") if "user" in tok.get_vocab() else 0,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = Qwen2_5OmniThinkerForConditionalGeneration(config)
    model.generation_config.eos_token_id = [tok.eos_token_id, tok.convert_tokens_to_ids("<|endoftext|>")]
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.bos_token_id = None
    model.save_pretrained(out)
    processor = _audio_only_processor_class("Qwen2_5OmniProcessor")(
        feature_extractor=tiny_feature_extractor(w, feature_size), tokenizer=tok, chat_template=OMNI_CHAT_TEMPLATE)
    processor.save_pretrained(out)
    (out / "echodistill_model.json").write_text(json.dumps({"backbone": "qwen2_5_omni", "base_path": None,
                                                            "lora": False}, indent=2))
    return out


__all__ = ["Qwen25OmniLLM", "Qwen3OmniLLM", "build_tiny_qwen2_5_omni", "build_tiny_qwen3_omni", "OMNI_NAMED_SPECIALS", "OMNI_CHAT_TEMPLATE"]


def build_tiny_qwen3_omni(out_dir: str | Path, seed: int = 0, window_s: float = 1.0, *, hidden_size: int = 64,
                          text_layers: int = 2, audio_layers: int = 2, audio_d_model: int = 64,
                          feature_size: int = 80, vocab_size: int = 400) -> Path:
    """Write a tiny random Qwen3-Omni-MoE thinker (4 experts, top-2) + audio-only processor to ``out_dir``."""
    from transformers import Qwen3OmniMoeThinkerConfig, Qwen3OmniMoeThinkerForConditionalGeneration

    from .small_tokenizer import build_small_tokenizer
    from .tiny import TINY_CORPUS, tiny_feature_extractor, _window

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    w = _window(window_s)
    tok = build_small_tokenizer(TINY_CORPUS, vocab_size=vocab_size, extra_specials=OMNI_NAMED_SPECIALS)
    tok.chat_template = OMNI_CHAT_TEMPLATE
    tid = tok.convert_tokens_to_ids
    head_dim = hidden_size // 4
    config = Qwen3OmniMoeThinkerConfig(
        audio_config=dict(num_mel_bins=feature_size, encoder_layers=audio_layers, encoder_attention_heads=4,
                          encoder_ffn_dim=2 * audio_d_model, d_model=audio_d_model, max_source_positions=50 * w,
                          n_window=50, n_window_infer=400, downsample_hidden_size=16, output_dim=hidden_size),
        vision_config=dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=hidden_size,
                           deepstack_visual_indexes=[0], num_position_embeddings=16),
        text_config=dict(vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                         num_hidden_layers=text_layers, num_attention_heads=4, num_key_value_heads=2,
                         head_dim=head_dim, moe_intermediate_size=32, num_experts=4, num_experts_per_tok=2,
                         max_position_embeddings=4096, tie_word_embeddings=False,
                         rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                                          "mrope_section": _mrope_section(head_dim), "mrope_interleaved": True},
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None),
        audio_token_id=tid("<|AUDIO|>"), image_token_id=tid("<|IMAGE|>"), video_token_id=tid("<|VIDEO|>"),
        audio_start_token_id=tid("<|audio_bos|>"), vision_start_token_id=tid("<|vision_bos|>"),
        user_token_id=0, tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = Qwen3OmniMoeThinkerForConditionalGeneration(config)
    model.generation_config.eos_token_id = [tok.eos_token_id, tid("<|endoftext|>")]
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.bos_token_id = None
    model.save_pretrained(out)
    processor = _audio_only_processor_class("Qwen3OmniMoeProcessor")(
        feature_extractor=tiny_feature_extractor(w, feature_size), tokenizer=tok, chat_template=OMNI_CHAT_TEMPLATE)
    processor.save_pretrained(out)
    (out / "echodistill_model.json").write_text(json.dumps({"backbone": "qwen3_omni", "base_path": None,
                                                            "lora": False}, indent=2))
    return out
