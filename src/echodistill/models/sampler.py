"""Sampling completions: our own loop over the KV cache (temperature, top-p), generic over backbones.

Why not ``GenerationMixin.generate``: the loop starts from ``inputs_embeds`` (the audio features
merged in once per clip), uses exactly the position ids of scoring (cumsum of the attention mask,
so left padding changes nothing), suppresses every special token except EOS (a sampled
``<|AUDIO|>``-style placeholder breaks the feature merge of the next forward), and returns the raw
log-probs of the sampled tokens, equal to ``token_logprobs`` at temperature 1.

The G samples of an item share its prompt: with ``share_prefix`` and ``share_kv`` (the default) the
prompt runs once and its KV cache is kept once -- row b holds item b's prompt, then each step appends
the G samples' tokens, and a 4-D mask lets sample g see the prompt and its own tokens only
(``SharedPrefixMask``; sdpa / eager attention). Without ``share_kv`` the cache is copied G times
(``scorer.encode_prompt``); without ``share_prefix`` the prompt runs G times. All three give the same
tokens (tests/test_adapters.py); the kept cache is G x smaller and faster at B = G = 8, T = 24
(benchmarks row 10; slower at tiny shapes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from ..config import ConfigError
from .scorer import encode_prompt, expand


@dataclass
class Completions:
    """Sampled completions, item-major.

    ids: [N, T] long (pad id after EOS); mask: [N, T] long, 1 up to and including the first EOS, 0
    after (all 1 when no EOS within ``max_new_tokens``); texts: N strings decoded without special
    tokens; logprobs: [N, T] float32 raw log-probs (temperature 1, no suppression) of the sampled
    tokens under the sampling model, 0 where mask is 0.
    """

    ids: torch.Tensor
    mask: torch.Tensor
    texts: list[str]
    logprobs: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        return self.ids.shape[0]


def special_tokens(tokenizer: Any, generation_config: Any, vocab: int, audio_token_id: int) -> tuple[list[int], int, list[int]]:
    """(EOS ids sorted, pad id, ids never sampled). EOS from the generation config and the tokenizer;
    never sampled: every special or added special token but EOS, the audio placeholder, and
    embedding rows beyond the tokenizer (padding to a multiple)."""
    eos = getattr(generation_config, "eos_token_id", None) if generation_config is not None else None
    eos = [eos] if isinstance(eos, int) else list(eos or [])
    if tokenizer.eos_token_id is not None:
        eos.append(tokenizer.eos_token_id)
    eos = sorted(set(int(e) for e in eos))
    if not eos:
        raise ConfigError("the model has no EOS token (generation_config.eos_token_id and tokenizer.eos_token "
                          "are both empty): set one in the model directory")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    special = set(int(i) for i in tokenizer.all_special_ids)
    for i, added in getattr(tokenizer, "added_tokens_decoder", {}).items():
        if getattr(added, "special", False):
            special.add(int(i))
    special.add(int(audio_token_id))
    extra = set(range(len(tokenizer), vocab))
    return eos, int(pad), sorted((special | extra) - set(eos))


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus filtering on [N, V] logits: keep the smallest set with cumulative prob >= top_p."""
    if top_p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
    probs = sorted_logits.softmax(-1)
    drop = probs.cumsum(-1) - probs > top_p  # mass strictly before this token already reaches top_p
    drop[..., 0] = False
    sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)


@torch.no_grad()
def sample(llm: Any, batch: Any, num_samples: int = 1, *, max_new_tokens: int, do_sample: bool = True,
           temperature: float = 1.0, top_p: float = 1.0, generator: Optional[torch.Generator] = None) -> Completions:
    """``num_samples`` completions per prompt of ``batch`` (item-major) under ``llm.active_model``."""
    m = llm.active_model
    attn = getattr(llm.family.text_model(m).config, "_attn_implementation", "sdpa")
    shared = num_samples > 1 and llm.share_prefix and llm.share_kv and attn in ("sdpa", "eager")
    if shared:  # the prompt's KV cache [B, L] stays single: the G samples of item b decode in row b
        emb, am = llm.prompt_embeds(batch)
        pos = llm.family.position_ids(am)
        h, cache = llm.decoder(emb, am, pos, use_cache=True)
        last = expand(h[:, -1], num_samples)
        step_mask = SharedPrefixMask(am, num_samples, emb.dtype if attn == "eager" else None)
    else:
        st = encode_prompt(llm, batch, num_samples)
        last, cache, am, pos = st.last, st.cache, st.attention_mask, st.position_ids
    n, dev = last.shape[0], last.device
    next_pos = pos[..., -1:] + 1
    head, embed = llm.family.lm_head(m), llm.family.text_model(m).get_input_embeddings()
    eos, pad = torch.tensor(llm.eos_token_ids, device=dev), llm.pad_token_id
    suppress = None
    finished = torch.zeros(n, dtype=torch.bool, device=dev)
    toks, lps = [], []
    for step in range(max_new_tokens):
        logits = head(last).float()  # [N, V]
        if suppress is None:
            vocab = logits.shape[-1]
            suppress = torch.tensor([i for i in llm.suppress_token_ids if i < vocab], dtype=torch.long, device=dev)
        raw_lp = logits.log_softmax(-1)
        work = logits.index_fill(-1, suppress, float("-inf")) if suppress.numel() else logits
        if do_sample:
            work = top_p_filter(work / temperature, top_p)
            tok = torch.multinomial(work.softmax(-1), 1, generator=generator).squeeze(-1)
        else:
            tok = work.argmax(-1)
        tok = torch.where(finished, torch.full_like(tok, pad), tok)
        toks.append(tok)
        lps.append(torch.where(finished, torch.zeros_like(tok, dtype=raw_lp.dtype),
                               raw_lp.gather(-1, tok[:, None]).squeeze(-1)))
        finished = finished | torch.isin(tok, eos)
        if step == max_new_tokens - 1 or finished.all():
            break
        if shared:
            b = n // num_samples
            h, cache = llm.decoder(embed(tok.view(b, num_samples)), step_mask.next(), next_pos.expand(b, num_samples),
                                   cache=cache, use_cache=True)
            last = h.reshape(n, -1)
        else:
            am = torch.cat([am, torch.ones_like(am[:, :1])], dim=1)
            h, cache = llm.decoder(embed(tok[:, None]), am, next_pos, cache=cache, use_cache=True)
            last = h[:, -1]
        next_pos = next_pos + 1
    ids = torch.stack(toks, 1)
    is_eos = torch.isin(ids, eos)
    after = (is_eos.long().cumsum(1) - is_eos.long()) > 0
    mask = (~after).long()
    ids = ids.masked_fill(after, pad)
    return Completions(ids=ids, mask=mask, texts=decode(llm.tokenizer, ids, mask), logprobs=torch.stack(lps, 1) * mask)


class SharedPrefixMask:
    """4-D attention masks of the shared-prefix decode: row b holds item b's prompt (L keys) followed by
    the G samples' tokens, step by step (key ``L + s*G + g`` is sample g's token of step s); sample g's
    query sees the prompt's real tokens and its own tokens, never another sample's."""

    def __init__(self, prompt_mask: torch.Tensor, num_samples: int, additive_dtype=None):
        b, g = prompt_mask.shape[0], num_samples
        self.prompt = prompt_mask.bool()[:, None, None, :].expand(b, 1, g, prompt_mask.shape[1])  # [B, 1, G, L]
        self.own = torch.eye(g, dtype=torch.bool, device=prompt_mask.device)[None, None].expand(b, 1, g, g)
        self.parts = [self.prompt]
        self.additive_dtype = additive_dtype

    def next(self) -> torch.Tensor:
        """The mask [B, 1, G, L + G*(s+1)] for the step s that feeds the G samples' s-th tokens."""
        self.parts.append(self.own)
        mask = torch.cat(self.parts, dim=-1)
        if self.additive_dtype is None:
            return mask
        zero = torch.zeros((), dtype=self.additive_dtype, device=mask.device)
        return torch.where(mask, zero, torch.finfo(self.additive_dtype).min)


def decode(tokenizer: Any, ids: torch.Tensor, mask: torch.Tensor) -> list[str]:
    """The N texts of ``ids`` [N, T] (tokens where ``mask`` is 1, special tokens skipped, stripped)."""
    return [tokenizer.decode([t for t, k in zip(row, mrow) if k], skip_special_tokens=True).strip()
            for row, mrow in zip(ids.tolist(), mask.tolist())]


__all__ = ["Completions", "SharedPrefixMask", "special_tokens", "top_p_filter", "sample", "decode"]
