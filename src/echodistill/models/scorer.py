"""Scoring completions: the prompts' decoder pass and the hidden states that predict completion tokens.

Generic over backbones: ``llm`` is an ``AudioLLM`` (or its teacher view), used through
``prompt_embeds``, ``decoder``, ``active_model``, ``family`` and the layout switches
``share_prefix`` (no grad) / ``share_prefix_grad`` (grad) / ``pack_completions``.

Shapes: ``B`` prompts, ``G`` samples per prompt, ``N = B*G`` completions item-major, ``L`` prompt
tokens (left padded), ``T`` completion tokens, ``D`` hidden size, ``V`` vocabulary.

Why three layouts: each item's G completions share its prompt. Packed (``packing.py``): one row per
item, the G completions behind the prompt with a 4-D mask, so the prompt runs once and its
activation memory does not grow with G (without gradients also ~1.4x faster than attending a
repeated cache). Where the attention implementation takes no 4-D mask: the prompt's KV cache,
computed once and repeated G times (a differentiable repeat: the G completions' gradients sum into
the one prompt pass). Reference: the prompt repeated G times, one forward over prompt + completion.
Only the T completion positions reach the LM head (the full ``[N, L+T, V]`` logits of a 7B model
would not fit).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .packing import packed_attention_mask, packed_positions, unpack_predicting


@dataclass
class PromptState:
    """The prompts after one decoder pass, expanded to N = B*G rows (``encode_prompt``).

    last: [N, D] hidden state at the last prompt position (predicts the first completion token);
    cache: the KV cache of the N rows (HF ``Cache``); attention_mask, position_ids: [N, L].
    """

    last: torch.Tensor
    cache: Any
    attention_mask: torch.Tensor
    position_ids: torch.Tensor


def expand(x: torch.Tensor, num_samples: int) -> torch.Tensor:
    """[B, ...] -> [B*G, ...], each row repeated G times in place (item-major)."""
    return x if num_samples == 1 else x.repeat_interleave(num_samples, dim=0)


def shares_prefix(llm: Any) -> bool:
    """Whether the G samples share one prompt pass now (``share_prefix_grad`` when gradients are on)."""
    return llm.share_prefix_grad if torch.is_grad_enabled() else llm.share_prefix


def encode_prompt(llm: Any, batch: Any, num_samples: int = 1) -> PromptState:
    """Run the B prompts of ``batch`` once and repeat the KV cache G times (``shares_prefix``), or
    run the prompt embeddings repeated G times (the reference path, or a cache that cannot repeat)."""
    emb, am = llm.prompt_embeds(batch)
    if shares_prefix(llm) and num_samples > 1:
        pos = llm.family.position_ids(am)
        h, cache = llm.decoder(emb, am, pos, use_cache=True)
        if cache is not None and hasattr(cache, "batch_repeat_interleave"):
            cache.batch_repeat_interleave(num_samples)
            return PromptState(expand(h[:, -1], num_samples), cache, expand(am, num_samples),
                               expand(pos, num_samples))
    emb, am = expand(emb, num_samples), expand(am, num_samples)
    pos = llm.family.position_ids(am)
    h, cache = llm.decoder(emb, am, pos, use_cache=True)
    return PromptState(h[:, -1], cache, am, pos)


def completion_hidden(llm: Any, batch: Any, ids: torch.Tensor, mask: torch.Tensor, num_samples: int = 1) -> torch.Tensor:
    """Hidden states [N, T, D] whose LM-head output predicts completion token t of ``ids`` [N, T].

    Gradients when the caller's context enables them. ``mask`` [N, T] hides the pads after EOS from
    later positions; a row whose mask is all 0 is a placeholder (its outputs are meaningless).
    """
    n_prompts = batch["input_ids"].shape[0]
    if n_prompts * num_samples != ids.shape[0]:
        raise ValueError(f"{ids.shape[0]} completions but {n_prompts * num_samples} prompt rows "
                         f"(B={n_prompts} x num_samples={num_samples})")
    text = llm.family.text_model(llm.active_model)
    ids, mask = ids.to(llm.device), mask.to(llm.device)
    comp = text.get_input_embeddings()(ids)
    share = shares_prefix(llm) and num_samples > 1
    attn = getattr(text.config, "_attn_implementation", "sdpa")
    if share and llm.pack_completions and attn in ("sdpa", "eager"):
        emb, am = llm.prompt_embeds(batch)
        b, big, d = emb.shape
        cm = mask.view(b, num_samples, -1)
        x = torch.cat([emb, comp.view(b, -1, d)], dim=1)  # [B, L + G*T, D]
        amask = packed_attention_mask(am, cm, emb.dtype if attn == "eager" else None)
        h, _ = llm.decoder(x, amask, packed_positions(am, cm))
        return unpack_predicting(h, big, num_samples)
    if share:
        st = encode_prompt(llm, batch, num_samples)
        full_am = torch.cat([st.attention_mask, mask.to(st.attention_mask.dtype)], dim=1)
        big = st.attention_mask.shape[1]
        hc, _ = llm.decoder(comp, full_am, llm.family.position_ids(full_am)[:, big:], cache=st.cache, use_cache=True)
        return torch.cat([st.last.unsqueeze(1), hc[:, :-1]], dim=1)  # predicting tokens 0..T-1
    emb, am = llm.prompt_embeds(batch)
    emb, am = expand(emb, num_samples), expand(am, num_samples)
    big, t = emb.shape[1], ids.shape[1]
    full_am = torch.cat([am, mask.to(am.dtype)], dim=1)
    h, _ = llm.decoder(torch.cat([emb, comp], dim=1), full_am, llm.family.position_ids(full_am))
    return h[:, big - 1: big + t - 1]


def token_logprobs_from_logits(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor,
                               return_entropy: bool = False):
    """Log-probs [N, T] of ``ids`` under ``logits`` [N, T, V] (0 where ``mask`` is 0); with
    ``return_entropy`` also the entropies [N, T] of the full next-token distributions."""
    ids, mask = ids.to(logits.device), mask.to(logits.device)
    lse = logits.logsumexp(-1)
    lp = (logits.gather(-1, ids.unsqueeze(-1)).squeeze(-1) - lse) * mask
    if not return_entropy:
        return lp
    p = (logits - lse.unsqueeze(-1)).exp()
    ent = (lse - (p * logits).sum(-1)) * mask
    return lp, ent


__all__ = ["PromptState", "encode_prompt", "completion_hidden", "token_logprobs_from_logits", "expand",
           "shares_prefix"]
