"""A small byte-level BPE tokenizer in Qwen2's format, trained offline on a given corpus.

The tiny test models and the embedded model need a tokenizer that behaves exactly like Qwen2-Audio's
(same pre-tokenizer regex, byte-level BPE, the same special tokens and chat template) but with a
vocabulary of a few hundred tokens, so the LM head stays small. ``tokenizers`` trains it in well
under a second; ``transformers.Qwen2Tokenizer`` (= ``Qwen2TokenizerFast`` in 5.x) wraps it.

The special tokens are appended after the BPE vocabulary in Qwen's order, so their *relative* order
matches Qwen2-Audio (<|endoftext|>, <|im_start|>, <|im_end|>, <|AUDIO|>, <|audio_bos|>,
<|audio_eos|>); the absolute ids differ (Qwen2-Audio's start at 151643).
"""

from __future__ import annotations

import json
from typing import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import Qwen2Tokenizer

# Qwen2's pre-tokenisation regex (transformers' tokenization_qwen2.PRETOKENIZE_REGEX).
PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# Qwen2-Audio's special tokens, in Qwen's id order.
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"]

# Named special tokens the Qwen2-Audio processor looks up on the tokenizer (``tokenizer.audio_token``).
NAMED_SPECIALS = {
    "audio_token": "<|AUDIO|>",
    "audio_bos_token": "<|audio_bos|>",
    "audio_eos_token": "<|audio_eos|>",
}

def chatml_audio_template(audio_test: str, audio_part: str, text_test: str, prelude: str = "") -> str:
    """A ChatML chat template (Qwen's) whose list contents are audio parts and text parts.

    ``audio_test`` / ``text_test``: the Jinja conditions that pick an audio / a text content part;
    ``audio_part``: what an audio part renders to (the processor expands its ``<|AUDIO|>``).
    """
    return (
        prelude + "{% for message in messages %}"
        "{% if loop.first and message['role'] != 'system' %}"
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "{% endif %}"
        "<|im_start|>{{ message['role'] }}\n"
        "{% if message['content'] is string %}"
        "{{ message['content'] }}<|im_end|>\n"
        "{% else %}"
        "{% for content in message['content'] %}"
        "{% if " + audio_test + " %}" + audio_part + "{% elif " + text_test + " %}"
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


# Qwen2-Audio-Instruct's chat template (also transformers' Qwen2AudioProcessor.default_chat_template):
# one "Audio k: <|audio_bos|><|AUDIO|><|audio_eos|>" line per clip; the processor expands <|AUDIO|>.
QWEN2_AUDIO_CHAT_TEMPLATE = chatml_audio_template(
    "'audio' in content or 'audio_url' in content or content['type'] == 'audio'",
    "{% set audio_count.value = audio_count.value + 1 %}Audio {{ audio_count.value }}: "
    "<|audio_bos|><|AUDIO|><|audio_eos|>\n",
    "'text' in content", prelude="{% set audio_count = namespace(value=0) %}")

# Always in the corpus so chat-format scaffolding gets compact tokens.
_SCAFFOLD = ["system\nYou are a helpful assistant.\n", "user\n", "assistant\n", "Audio 1: ", "Audio 2: "]


def train_bpe(corpus: Iterable[str], vocab_size: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Train a byte-level BPE with Qwen2's pre-tokeniser. Returns (vocab, merges) without specials.

    All 256 byte symbols are always in the vocabulary, so any text can be encoded.
    """
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=max(vocab_size - len(SPECIAL_TOKENS), 257),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=1,
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus) + _SCAFFOLD * 4, trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m) if isinstance(m, (list, tuple)) else tuple(m.split(" ", 1)) for m in model["merges"]]
    return dict(model["vocab"]), merges


def build_small_tokenizer(corpus: list[str], vocab_size: int = 1000,
                          extra_specials: dict[str, str] | None = None) -> Qwen2Tokenizer:
    """A Qwen2-format tokenizer (byte-level BPE, Qwen2-Audio specials and chat template).

    ``corpus``: texts the BPE is trained on (questions, answers...). ``vocab_size``: total size
    including the 6 special tokens (fewer if the corpus has fewer distinct merges).
    eos = <|im_end|> (end of an assistant turn), pad = unk = <|endoftext|>.
    ``extra_specials``: more named special tokens (attribute -> token, e.g. the Omni processor's
    ``image_token``), appended after the Qwen2-Audio ones and readable as ``tok.<attribute>``.
    """
    vocab, merges = train_bpe(corpus, vocab_size - len(extra_specials or {}))
    named = dict(NAMED_SPECIALS)
    named.update(extra_specials or {})
    for t in SPECIAL_TOKENS + [t for t in (extra_specials or {}).values() if t not in SPECIAL_TOKENS]:
        vocab[t] = len(vocab)
    tok = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=named,
        model_max_length=32768,
        padding_side="left",
    )
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>"]})
    tok.chat_template = QWEN2_AUDIO_CHAT_TEMPLATE
    ids = tok.convert_tokens_to_ids(SPECIAL_TOKENS)
    assert ids == sorted(ids) and None not in ids, f"special token ids out of order: {ids}"
    return tok


__all__ = ["build_small_tokenizer", "train_bpe", "SPECIAL_TOKENS", "NAMED_SPECIALS", "QWEN2_AUDIO_CHAT_TEMPLATE",
           "PRETOKENIZE_REGEX"]
