"""Prompt-once packing for the update: each item's prompt followed by its G completions, one row per item.

Row ``b`` of the packed batch is ``[prompt_b (L) | c_b1 (T) | c_b2 (T) | ... | c_bG (T)]`` (S = L + G*T
tokens) with a 4-D attention mask in which the prompt is causal as usual and completion ``g`` sees the
whole prompt and its own earlier tokens, never another completion. Positions continue the prompt's
for every completion. Each prompt token is computed once (B rows, not N = B*G), so the prompt's
activations and their cost do not grow with G; the completions' gradients sum into it by autograd.

Why packing rather than the prompt's KV cache repeated G times: the repeated cache is itself saved
for the backward pass by every attention layer (N x L keys and values per layer, expanded to all
query heads by ``repeat_kv``), which grows with G. Packed, the attention saves B x S keys and values.
The cross-completion block of the mask is wasted attention work: (G*T)^2 per item, small next to
L^2 while T << L.
"""

from __future__ import annotations

import torch


def packed_positions(prompt_mask: torch.Tensor, comp_mask: torch.Tensor) -> torch.Tensor:
    """Position ids [B, L + G*T]: the prompt's (cumsum of its mask), then each completion from there on.

    ``prompt_mask`` [B, L] (left padded), ``comp_mask`` [B, G, T]. Equal to the positions of the
    repeated layout ``[prompt_b | c_bg]`` row by row.
    """
    ppos = (prompt_mask.long().cumsum(-1) - 1).clamp(min=0)
    start = prompt_mask.long().sum(-1)[:, None, None]
    cpos = start + (comp_mask.long().cumsum(-1) - 1).clamp(min=0)
    return torch.cat([ppos, cpos.flatten(1)], dim=1)


def packed_attention_mask(prompt_mask: torch.Tensor, comp_mask: torch.Tensor, additive_dtype=None) -> torch.Tensor:
    """Attention mask [B, 1, S, S]: True (or 0.0) where query q may attend key k.

    k must be a real token, not after q, and either in the prompt or in q's own completion. Every
    query also sees itself, so a padding query never has an empty row (its output is not used).
    ``additive_dtype``: return a float mask (0 / most negative) for eager attention instead of bool.
    """
    b, g, t = comp_mask.shape
    L = prompt_mask.shape[1]
    dev = prompt_mask.device
    valid = torch.cat([prompt_mask.bool(), comp_mask.bool().flatten(1)], dim=1)  # [B, S]
    seg = torch.cat([torch.zeros(L, dtype=torch.long, device=dev),
                     torch.arange(1, g + 1, device=dev).repeat_interleave(t)])  # 0 = prompt, g = completion g
    idx = torch.arange(L + g * t, device=dev)
    causal = idx[None, :] <= idx[:, None]  # [S, S] key not after query
    same = (seg[None, :] == 0) | (seg[None, :] == seg[:, None])  # key in the prompt or in q's completion
    allowed = (causal & same)[None] & valid[:, None, :]
    allowed = allowed | torch.eye(L + g * t, dtype=torch.bool, device=dev)[None]
    allowed = allowed.unsqueeze(1)
    if additive_dtype is None:
        return allowed
    zero = torch.zeros((), dtype=additive_dtype, device=dev)
    return torch.where(allowed, zero, torch.finfo(additive_dtype).min)


def unpack_predicting(h: torch.Tensor, prompt_len: int, num_samples: int) -> torch.Tensor:
    """Hidden states [B, L + G*T, D] -> [N, T, D] predicting each completion's tokens 0..T-1.

    Token 0 of every completion is predicted from the prompt's last position; token t from
    completion position t-1. Rows item-major (N = B*G).
    """
    b, s, d = h.shape
    t = (s - prompt_len) // num_samples
    comp = h[:, prompt_len:].reshape(b, num_samples, t, d)
    first = h[:, prompt_len - 1: prompt_len].unsqueeze(1).expand(b, num_samples, 1, d)
    return torch.cat([first, comp[:, :, :-1]], dim=2).reshape(b * num_samples, t, d)


__all__ = ["packed_positions", "packed_attention_mask", "unpack_predicting"]
