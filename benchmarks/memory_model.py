"""Memory model of one GRPO update (and the rollout's KV cache) for Qwen-class audio LLMs, from their configs.

``python benchmarks/memory_model.py`` prints the 7B table of docs/performance.md. ``run_all.py``
(bench ``memmodel``) checks the activation term against what autograd really saves on tiny real
models of the same classes scaled up in steps (``saved_bytes``).

What is counted (bytes; ``s`` = bytes per weight/activation element, 2 for bfloat16):

* weights: every parameter of the HF model (counted on the ``meta`` device from the config, so the
  number is exact and costs no memory), ``s`` each;
* trainable state: LoRA weights (or the full model) + their gradients (``s``) + AdamW's two fp32 moments;
* activations of the update, per token and decoder layer, from the ops of a Qwen2 layer as
  transformers 5.x runs it (enumerated below, ``layer_bytes_per_token``), times the tokens the layout
  puts through the layers: repeated prompt ``N*(L+T)``; packed ``B*(L+G*T)``; KV-cache layout
  ``B*L + N*T`` plus the repeated keys/values the completion attention saves (``2*N*(L+T)*Hq*hd*s``;
  checkpointed, the repeated cache at kv heads).
  With gradient checkpointing only each layer's input is kept (``D*s`` per token and layer) plus one
  layer's full activations during its replay;
* the LM head on the completion tokens only (our ``completion_logits``): fp32 logits + softmax for the
  entropy (``8*V`` bytes per completion token);
* the rollout's KV cache (no grad; the peak of generation): ``N*(L+T)*2*layers*Hkv*hd*s``.

Not counted: the audio encoder's forward (no grad, freed), allocator fragmentation, CUDA context
(~0.5-1 GB), the teacher (adapter-disabled LoRA: no extra weights).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

GiB = 2 ** 30


@dataclass
class LM:
    """The text decoder's sizes (from the model's config)."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


def layer_bytes_per_token(lm: LM, s: int, lora_r: int, repeat_kv: bool = True) -> float:
    """Bytes autograd keeps per token in one decoder layer (Qwen2 layer, sdpa, LoRA on the 7 linears).

    Two RMSNorms: each keeps its fp32 input (4D) and 1/rms (4), and its output feeds the next linear
    (kept once: s*D). Attention: q and k after rotary, v (k, v at all query heads when ``repeat_kv``,
    which transformers does whenever a mask is given), the output (s*D, also the o_proj input) and the
    fp32 log-sum-exp per head. MLP: gate output, up output, SiLU output and their product (4*s*I).
    LoRA: the rank-r intermediate of each of the 7 adapted linears (7*r*s); its input is one of the above.
    """
    d, i = lm.hidden, lm.intermediate
    kv = (lm.heads if repeat_kv else lm.kv_heads) * lm.head_dim
    norms = 2 * (4 * d + 4 + s * d)
    attn = s * d + 2 * s * kv + s * d + 4 * lm.heads
    mlp = 4 * s * i
    return norms + attn + mlp + 7 * lora_r * s


def update_activation_bytes(lm: LM, *, B: int, G: int, L: int, T: int, s: int, lora_r: int, layout: str,
                            checkpointing: bool = False, entropy: bool = True) -> dict:
    """Activation bytes of one micro-batch's forward (what backward needs), split prompt / completion / head.

    ``layout``: repeated | kv_cache | packed. Returns {"prompt", "completion", "head", "total"}.
    """
    n = B * G
    per = layer_bytes_per_token(lm, s, lora_r)
    keep = lm.hidden * s if checkpointing else per  # what stays per token and layer
    replay = per  # one layer's activations exist again while it is replayed (checkpointing)
    kv_row = 2 * lm.heads * lm.head_dim * s  # repeated keys + values per token (kv_cache layout)
    if layout == "repeated":
        prompt_tok, comp_tok, extra = n * L, n * T, 0.0
    elif layout == "packed":
        prompt_tok, comp_tok, extra = B * L, n * T, 0.0
    elif layout == "kv_cache":
        prompt_tok, comp_tok = B * L, n * T
        # saved by every completion attention; checkpointed, the repeated cache itself (at kv heads) stays
        extra = lm.layers * n * (L + T) * (2 * lm.kv_heads * lm.head_dim * s if checkpointing else kv_row)
    else:
        raise ValueError(layout)
    prompt = lm.layers * prompt_tok * keep + (extra if layout == "kv_cache" else 0.0)
    completion = lm.layers * comp_tok * keep
    if checkpointing:
        completion += (prompt_tok + comp_tok) * replay  # the layer being replayed
    head = n * T * (lm.hidden * s + (8 if entropy else 4) * lm.vocab) + (prompt_tok + comp_tok) * (4 * lm.hidden + 4 + s * lm.hidden)
    return {"prompt": prompt, "completion": completion, "head": head, "total": prompt + completion + head}


def rollout_kv_bytes(lm: LM, *, B: int, G: int, L: int, T: int, s: int) -> float:
    """The sampling loop's KV cache at its largest: N rows of L+T tokens, every layer, keys + values."""
    return B * G * (L + T) * 2 * lm.layers * lm.kv_heads * lm.head_dim * s


# ------------------------------------------------------------------ the 7B-class models (public config.json values)
def qwen2_audio_7b_config():
    from transformers import Qwen2AudioConfig

    return Qwen2AudioConfig(
        audio_config=dict(model_type="qwen2_audio_encoder", num_mel_bins=128, encoder_layers=32,
                          encoder_attention_heads=20, encoder_ffn_dim=5120, d_model=1280, max_source_positions=1500),
        text_config=dict(model_type="qwen2", vocab_size=156032, hidden_size=4096, intermediate_size=11008,
                         num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                         max_position_embeddings=8192, tie_word_embeddings=False))


def qwen2_5_omni_7b_thinker_config():
    from transformers import Qwen2_5OmniThinkerConfig

    return Qwen2_5OmniThinkerConfig(
        vision_config=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584),
        audio_config=dict(num_mel_bins=128, encoder_layers=32, encoder_attention_heads=20, encoder_ffn_dim=5120,
                          d_model=1280, output_dim=3584, n_window=100, max_source_positions=1500),
        text_config=dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                         num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=32768,
                         rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                                          "mrope_section": [16, 24, 24]}))


def lm_of(config) -> LM:
    t = config.text_config
    return LM(t.hidden_size, t.intermediate_size, t.num_hidden_layers, t.num_attention_heads, t.num_key_value_heads,
              t.vocab_size)


def count_parameters(config, hf_class, lora_r: int) -> tuple[int, int]:
    """(all parameters, LoRA parameters on the LM's 7 linears with rank r) of ``hf_class(config)`` on meta."""
    import torch
    from torch import nn

    with torch.device("meta"):
        model = hf_class(config)
    total = sum(p.numel() for p in model.parameters())
    lora = 0
    names = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    for name, mod in model.named_modules():
        if "language_model" in name and isinstance(mod, nn.Linear) and name.rsplit(".", 1)[-1] in names:
            lora += lora_r * (mod.in_features + mod.out_features)
    return total, lora


def memory_table(B: int, G: int, L: int, T: int, lora_r: int = 16, s: int = 2) -> list[dict]:
    """Rows (model, layout, checkpointing) -> GiB of weights, trainable state, activations, rollout KV, peak."""
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration, Qwen2AudioForConditionalGeneration

    rows = []
    for name, cfg, cls in (("Qwen2-Audio-7B", qwen2_audio_7b_config(), Qwen2AudioForConditionalGeneration),
                           ("Qwen2.5-Omni-7B thinker", qwen2_5_omni_7b_thinker_config(),
                            Qwen2_5OmniThinkerForConditionalGeneration)):
        total, lora = count_parameters(cfg, cls, lora_r)
        lm = lm_of(cfg)
        weights = total * s
        trainable = lora * (s + s + 8)  # weights + grads (model dtype) + AdamW moments (fp32)
        kv = rollout_kv_bytes(lm, B=B, G=G, L=L, T=T, s=s)
        for layout in ("repeated", "kv_cache", "packed"):
            for ckpt in (False, True):
                act = update_activation_bytes(lm, B=B, G=G, L=L, T=T, s=s, lora_r=lora_r, layout=layout,
                                              checkpointing=ckpt)
                peak = weights + trainable + max(act["total"], kv)
                rows.append({"model": name, "params": total, "lora_params": lora, "layout": layout,
                             "checkpointing": ckpt, "weights": weights, "trainable": trainable,
                             "activations": act["total"], "act_prompt": act["prompt"], "rollout_kv": kv,
                             "peak": peak, "B": B, "G": G, "L": L, "T": T})
    return rows


def markdown(rows: list[dict]) -> str:
    out = ["| model | update layout | ckpt | weights | LoRA state | update activations | rollout KV cache | peak |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['model']} | {r['layout']} | {'yes' if r['checkpointing'] else 'no'} | "
                   f"{r['weights'] / GiB:.1f} | {r['trainable'] / GiB:.2f} | {r['activations'] / GiB:.1f} | "
                   f"{r['rollout_kv'] / GiB:.1f} | **{r['peak'] / GiB:.1f}** |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="GiB of one GRPO micro-batch on 7B-class audio LLMs (LoRA, bf16)")
    ap.add_argument("--B", type=int, default=4)
    ap.add_argument("--G", type=int, default=8)
    ap.add_argument("--L", type=int, default=850, help="prompt tokens: 750 audio (30 s) + ~100 text")
    ap.add_argument("--T", type=int, default=16)
    ap.add_argument("--lora-r", type=int, default=16)
    a = ap.parse_args(argv)
    print(f"B={a.B} items x G={a.G}, L={a.L} prompt tokens, T={a.T} completion tokens, LoRA r={a.lora_r}, bf16\n")
    print(markdown(memory_table(a.B, a.G, a.L, a.T, a.lora_r)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
