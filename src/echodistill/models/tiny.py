"""Tiny random models in the real architectures, for tests and benchmarks (built offline in ~1 s).

``build_tiny_qwen2_audio`` writes a Qwen2-Audio directory (config, random weights, processor with a
small Qwen2-format tokenizer and a short-window Whisper feature extractor) that
``AutoProcessor.from_pretrained`` and ``Qwen2AudioForConditionalGeneration.from_pretrained`` load.
``build_tiny_qwen2_5_omni`` / ``build_tiny_qwen3_omni`` do the same for the Omni thinkers (adapters in
``qwen_omni.py``). Every tiny builder lives here (tests, benchmarks, docs examples import them from here).

Window: the Qwen2-Audio encoder needs the mel length to equal ``2 * max_source_positions`` exactly,
so the feature extractor's ``chunk_length`` (seconds) and ``max_source_positions = 50 * window`` are
set together. A ``window_s`` second clip gives ``25 * window_s`` audio tokens.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .qwen_omni import OMNI_CHAT_TEMPLATE, OMNI_NAMED_SPECIALS, _audio_only_processor_class
from .small_tokenizer import build_small_tokenizer

# A fixed small corpus: the tokenizer (and so the vocab) is identical for every build.
TINY_CORPUS = [
    "What is the spoken word? Choices: yes, no, maybe. Answer with one choice.",
    "Which number is said? Options: zero, one, two, three, four, five, six, seven, eight, nine, ten.",
    "Which letter is spoken? alfa bravo charlie delta echo foxtrot golf hotel india juliett kilo lima",
    "mike november oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu",
    "The answer is music. The answer is speech. The sound is a dog barking in the rain.",
    "Is there noise in the recording? A person speaks, a bell rings, a car passes by.",
]


def _window(window_s: float) -> int:
    if float(window_s) != int(window_s) or int(window_s) < 1:
        raise ValueError(f"window_s must be a whole number of seconds >= 1, got {window_s}")
    return int(window_s)


def tiny_feature_extractor(window_s: float = 1.0, feature_size: int = 80):
    """A WhisperFeatureExtractor whose padded window is ``window_s`` seconds (100 mel frames/s)."""
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor(feature_size=feature_size, sampling_rate=16000, hop_length=160,
                                   chunk_length=_window(window_s), n_fft=400, padding_value=0.0)


def _save_random_model(out: Path, model_class: type, config, tok, seed: int) -> None:
    """``model_class(config)`` with seeded random weights, EOS = <|im_end|> or <|endoftext|>, saved to ``out``."""
    torch.manual_seed(seed)
    model = model_class(config)
    model.generation_config.eos_token_id = [tok.eos_token_id, tok.convert_tokens_to_ids("<|endoftext|>")]
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.bos_token_id = None
    model.save_pretrained(out)


def build_tiny_qwen2_audio(out_dir: str | Path, seed: int = 0, window_s: float = 1.0, *,
                           hidden_size: int = 64, text_layers: int = 2, audio_layers: int = 2,
                           audio_d_model: int = 64, feature_size: int = 80, vocab_size: int = 400) -> Path:
    """Write a tiny random Qwen2-Audio model + processor to ``out_dir``; return the path.

    Defaults: LM hidden 64, 2 layers, 4 heads (2 KV); encoder d_model 64, 2 layers; 80 mel bins.
    """
    from transformers import (Qwen2AudioConfig, Qwen2AudioForConditionalGeneration, Qwen2AudioProcessor)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    w = _window(window_s)
    tok = build_small_tokenizer(TINY_CORPUS, vocab_size=vocab_size)
    fe = tiny_feature_extractor(w, feature_size)
    config = Qwen2AudioConfig(
        audio_config=dict(model_type="qwen2_audio_encoder", num_mel_bins=feature_size, encoder_layers=audio_layers,
                          encoder_attention_heads=4, encoder_ffn_dim=2 * audio_d_model, d_model=audio_d_model,
                          max_source_positions=50 * w),
        text_config=dict(model_type="qwen2", vocab_size=len(tok), hidden_size=hidden_size,
                         intermediate_size=2 * hidden_size, num_hidden_layers=text_layers, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=4096, tie_word_embeddings=False,
                         bos_token_id=None, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
        audio_token_index=tok.convert_tokens_to_ids("<|AUDIO|>"),
    )
    _save_random_model(out, Qwen2AudioForConditionalGeneration, config, tok, seed)
    processor = Qwen2AudioProcessor(feature_extractor=fe, tokenizer=tok, chat_template=tok.chat_template)
    processor.save_pretrained(out)
    return out


def _mrope_section(head_dim: int) -> list[int]:
    """Split head_dim/2 rotary frequencies over (temporal, height, width), like Qwen's [16, 24, 24]."""
    half = head_dim // 2
    t = half // 4
    h = (half - t) // 2
    return [t, h, half - t - h]


def _omni_tokenizer(vocab_size: int):
    tok = build_small_tokenizer(TINY_CORPUS, vocab_size=vocab_size, extra_specials=OMNI_NAMED_SPECIALS)
    tok.chat_template = OMNI_CHAT_TEMPLATE
    return tok


def _omni_sub_configs(tok, w: int, hidden_size: int, text_layers: int, audio_layers: int, audio_d_model: int,
                      feature_size: int, *, audio: dict, vision: dict, text: dict, rope: dict) -> dict:
    """audio / vision / text sub-configs shared by both Omni thinkers, plus each one's own keys."""
    return dict(
        audio_config=dict(num_mel_bins=feature_size, encoder_layers=audio_layers, encoder_attention_heads=4,
                          encoder_ffn_dim=2 * audio_d_model, d_model=audio_d_model, max_source_positions=50 * w,
                          output_dim=hidden_size, **audio),
        vision_config=dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=hidden_size,
                           **vision),
        text_config=dict(vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                         num_hidden_layers=text_layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=4096, tie_word_embeddings=False,
                         rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                                          "mrope_section": _mrope_section(hidden_size // 4), **rope},
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None, **text))


def _save_tiny_omni(out: Path, model_class: type, config, tok, seed: int, w: int, feature_size: int,
                    processor_name: str, backbone: str) -> Path:
    """Random weights (seeded), generation ids, the audio-only processor and the backbone marker."""
    _save_random_model(out, model_class, config, tok, seed)
    processor = _audio_only_processor_class(processor_name)(
        feature_extractor=tiny_feature_extractor(w, feature_size), tokenizer=tok, chat_template=OMNI_CHAT_TEMPLATE)
    processor.save_pretrained(out)
    (out / "echodistill_model.json").write_text(json.dumps({"backbone": backbone, "base_path": None,
                                                            "lora": False}, indent=2))
    return out


def _build_tiny_omni(backbone: str, out_dir: str | Path, seed: int, window_s: float, *, hidden_size: int = 64,
                     text_layers: int = 2, audio_layers: int = 2, audio_d_model: int = 64, feature_size: int = 80,
                     vocab_size: int = 400) -> Path:
    import transformers

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    w = _window(window_s)
    tok = _omni_tokenizer(vocab_size)
    tid = tok.convert_tokens_to_ids

    def sub(**kinds) -> dict:
        return _omni_sub_configs(tok, w, hidden_size, text_layers, audio_layers, audio_d_model, feature_size, **kinds)

    if backbone == "qwen2_5_omni":
        config = transformers.Qwen2_5OmniThinkerConfig(
            **sub(audio=dict(n_window=50 * w), vision=dict(fullatt_block_indexes=[0]), text={}, rope={}),
            audio_token_index=tid("<|AUDIO|>"), image_token_index=tid("<|IMAGE|>"), video_token_index=tid("<|VIDEO|>"),
            audio_start_token_id=tid("<|audio_bos|>"), audio_end_token_id=tid("<|audio_eos|>"),
            vision_start_token_id=tid("<|vision_bos|>"), vision_end_token_id=tid("<|vision_eos|>"),
            user_token_id=tid("user") if "user" in tok.get_vocab() else 0, tie_word_embeddings=False)
        model_class, processor = transformers.Qwen2_5OmniThinkerForConditionalGeneration, "Qwen2_5OmniProcessor"
    else:  # qwen3_omni: MoE text model (4 experts, top-2), interleaved M-RoPE
        config = transformers.Qwen3OmniMoeThinkerConfig(
            **sub(audio=dict(n_window=50, n_window_infer=400, downsample_hidden_size=16),
                  vision=dict(deepstack_visual_indexes=[0], num_position_embeddings=16),
                  text=dict(head_dim=hidden_size // 4, moe_intermediate_size=32, num_experts=4, num_experts_per_tok=2),
                  rope=dict(mrope_interleaved=True)),
            audio_token_id=tid("<|AUDIO|>"), image_token_id=tid("<|IMAGE|>"), video_token_id=tid("<|VIDEO|>"),
            audio_start_token_id=tid("<|audio_bos|>"), vision_start_token_id=tid("<|vision_bos|>"),
            user_token_id=0, tie_word_embeddings=False)
        model_class, processor = transformers.Qwen3OmniMoeThinkerForConditionalGeneration, "Qwen3OmniMoeProcessor"
    return _save_tiny_omni(out, model_class, config, tok, seed, w, feature_size, processor, backbone)


def build_tiny_qwen2_5_omni(out_dir: str | Path, seed: int = 0, window_s: float = 1.0, **sizes) -> Path:
    """Write a tiny random Qwen2.5-Omni thinker + audio-only processor to ``out_dir``; return it.
    ``sizes``: hidden_size, text_layers, audio_layers, audio_d_model, feature_size, vocab_size."""
    return _build_tiny_omni("qwen2_5_omni", out_dir, seed, window_s, **sizes)


def build_tiny_qwen3_omni(out_dir: str | Path, seed: int = 0, window_s: float = 1.0, **sizes) -> Path:
    """Write a tiny random Qwen3-Omni-MoE thinker (4 experts, top-2) + audio-only processor to ``out_dir``."""
    return _build_tiny_omni("qwen3_omni", out_dir, seed, window_s, **sizes)


build_tiny_qwen_omni = build_tiny_qwen2_5_omni  # the Omni default

__all__ = ["build_tiny_qwen2_audio", "build_tiny_qwen2_5_omni", "build_tiny_qwen3_omni", "build_tiny_qwen_omni",
           "tiny_feature_extractor", "TINY_CORPUS"]
