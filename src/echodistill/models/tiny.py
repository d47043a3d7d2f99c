"""Tiny random models in the real architectures, for tests and benchmarks (built offline in ~1 s).

``build_tiny_qwen2_audio`` writes a Qwen2-Audio directory (config, random weights, processor with a
small Qwen2-format tokenizer and a short-window Whisper feature extractor) that
``AutoProcessor.from_pretrained`` and ``Qwen2AudioForConditionalGeneration.from_pretrained`` load.
``build_tiny_qwen_omni`` does the same for the Qwen2.5-Omni thinker (see ``qwen_omni.py``).

Window: the Qwen2-Audio encoder needs the mel length to equal ``2 * max_source_positions`` exactly,
so the feature extractor's ``chunk_length`` (seconds) and ``max_source_positions = 50 * window`` are
set together. A ``window_s`` second clip gives ``25 * window_s`` audio tokens.
"""

from __future__ import annotations

from pathlib import Path

import torch

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
    torch.manual_seed(seed)
    model = Qwen2AudioForConditionalGeneration(config)
    model.generation_config.eos_token_id = [tok.eos_token_id, tok.convert_tokens_to_ids("<|endoftext|>")]
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.bos_token_id = None
    model.save_pretrained(out)
    processor = Qwen2AudioProcessor(feature_extractor=fe, tokenizer=tok, chat_template=tok.chat_template)
    processor.save_pretrained(out)
    return out


def build_tiny_qwen_omni(out_dir: str | Path, seed: int = 0, window_s: float = 1.0, **kw) -> Path:
    """Write a tiny random Qwen2.5-Omni thinker + audio-only processor to ``out_dir``."""
    from .qwen_omni import build_tiny_qwen2_5_omni

    return build_tiny_qwen2_5_omni(out_dir, seed=seed, window_s=window_s, **kw)


__all__ = ["build_tiny_qwen2_audio", "build_tiny_qwen_omni", "tiny_feature_extractor", "TINY_CORPUS"]
