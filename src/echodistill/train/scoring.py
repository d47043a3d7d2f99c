"""No-grad scoring passes made cheap, exactly: each distinct completion scored once, and the teacher's
greedy answer read off its scoring pass wherever a sampled completion already follows it.

Why: after the update was made prompt-once (issue 11) the teacher's fixed work -- one forward of
the N = B*G candidates on the clean clip plus a greedy decode of its own answer, which prefilled the
same clean prompts a second time -- became a quarter of an EchoDistill step. Two facts remove most
of it without changing a number:

* A score depends only on (item, completion tokens). The G samples of an item repeat each other
  often (short multiple-choice answers), so each item's distinct completions are scored once
  (``distinct_completions``) and the scores broadcast back (``inverse``).
* Greedy decoding follows the argmax. The scoring pass already holds the teacher's next-token
  logits after every prefix of every sampled completion, so wherever some completion shares the
  greedy path's prefix at each step, the greedy answer, its log-probs and its logits are read off
  (``greedy_from_scores``); only the items for which no sample follows the path are decoded.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Distinct:
    """Each item's distinct completions, padded to the largest count U (rows item-major).

    ``ids``, ``mask`` [B*U, T]: a placeholder row (an item with fewer than U distinct completions)
    has an all-0 mask. ``inverse`` [N]: row of ``ids`` holding completion n, so that
    ``ids[inverse] == original ids`` on every real token. ``per_item`` = U.
    """

    ids: torch.Tensor
    mask: torch.Tensor
    inverse: torch.Tensor
    per_item: int


def distinct_completions(ids: torch.Tensor, mask: torch.Tensor, num_samples: int) -> Distinct:
    """Deduplicate ``ids``/``mask`` [N, T] (N = B*G, item-major) within each item.

    Two completions are the same when their real tokens (``mask`` 1) are; pads are ignored.
    """
    n, t = ids.shape
    b, g = n // num_samples, num_samples
    key = torch.where(mask.bool(), ids, torch.full_like(ids, -1)).view(b, g, t)
    found = [torch.unique(k, dim=0, return_inverse=True) for k in key]  # sorted rows: deterministic
    u = max(len(uniq) for uniq, _ in found)
    rows = torch.zeros(b, u, dtype=torch.long)  # which original row represents each distinct one
    real = torch.zeros(b, u, dtype=torch.bool)
    inverse = torch.empty(n, dtype=torch.long)
    for i, (uniq, inv) in enumerate(found):
        inv = inv.cpu()
        first = torch.full((len(uniq),), g, dtype=torch.long).scatter_reduce(0, inv, torch.arange(g), "amin")
        rows[i, :len(uniq)] = i * g + first
        rows[i, len(uniq):] = i * g  # placeholders: any row of the item, masked out below
        real[i, :len(uniq)] = True
        inverse[i * g:(i + 1) * g] = i * u + inv
    rows, real = rows.reshape(-1).to(ids.device), real.reshape(-1, 1).to(mask.device)
    return Distinct(ids[rows], mask[rows] * real.to(mask.dtype), inverse.to(ids.device), u)


def logprobs_of(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Log-probs [N, T] of ``ids`` under ``logits`` [N, T, V], 0 where ``mask`` is 0."""
    ids = ids.to(logits.device)
    return (logits.gather(-1, ids.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)) * mask.to(logits.device)


def distinct_logits(model, batch, ids: torch.Tensor, mask: torch.Tensor, num_samples: int) -> tuple[torch.Tensor, Distinct]:
    """Next-token logits [B*U, T, V] of each item's distinct completions (one no-grad pass).

    ``logits[d.inverse]`` are the logits of the original N rows.
    """
    d = distinct_completions(ids, mask, num_samples)
    return model.completion_logits(batch, d.ids, d.mask, num_samples=d.per_item), d


def distinct_logprobs(model, batch, ids: torch.Tensor, mask: torch.Tensor, num_samples: int) -> torch.Tensor:
    """``model.token_logprobs`` [N, T] of ``ids`` with each distinct completion scored once."""
    logits, d = distinct_logits(model, batch, ids, mask, num_samples)
    return logprobs_of(logits, d.ids, d.mask)[d.inverse] * mask.to(logits.device)


@dataclass
class GreedyPath:
    """The greedy answer per item read off a scoring pass; rows where ``covered`` is False are unknown.

    ``ids``, ``mask`` [B, T']: tokens up to and including EOS (pads after), as ``model.generate``
    returns them; ``logprobs`` [B, T'] raw log-probs of those tokens; ``logits`` [B, T', V] the
    next-token logits that chose them (0 on pads).
    """

    ids: torch.Tensor
    mask: torch.Tensor
    logprobs: torch.Tensor
    logits: torch.Tensor
    covered: torch.Tensor  # [B] bool


def greedy_from_scores(logits: torch.Tensor, d: Distinct, *, eos_ids: list[int], suppress: torch.Tensor,
                       pad_id: int, max_new_tokens: int) -> GreedyPath:
    """Follow the argmax through the distinct completions' logits ``logits`` [B*U, T, V].

    At step t an item's greedy prefix (t tokens) is known; any completion whose first t real tokens
    equal it holds the logits for token t. The next token is their argmax with the special tokens
    ``suppress`` masked, exactly as ``model.generate(do_sample=False)`` picks it. An item is covered
    when its path reaches EOS that way, or ``max_new_tokens`` tokens (the scored completions may be
    shorter than that: then a path still running at T is not covered).
    """
    bu, t, v = logits.shape
    b, u = bu // d.per_item, d.per_item
    dev = logits.device
    lg = logits.view(b, u, t, v)
    cid, cmask = d.ids.view(b, u, t).to(dev), d.mask.view(b, u, t).to(dev).bool()
    eos = torch.tensor(eos_ids, device=dev)
    follows = cmask[:, :, 0].clone()  # [B, U] completions whose prefix equals the greedy prefix so far
    covered = torch.ones(b, dtype=torch.bool, device=dev)
    finished = torch.zeros(b, dtype=torch.bool, device=dev)
    arange = torch.arange(b, device=dev)
    toks, lps, step_logits = [], [], []
    for step in range(t):
        covered &= finished | follows.any(1)
        src = follows.float().argmax(1)  # first completion on the path (any: all hold the same logits)
        step_lg = lg[arange, src, step]  # [B, V]
        work = step_lg.index_fill(-1, suppress.to(dev), float("-inf")) if suppress.numel() else step_lg
        tok = torch.where(finished, torch.full((b,), pad_id, device=dev), work.argmax(-1))
        lp = step_lg.log_softmax(-1).gather(-1, tok[:, None]).squeeze(-1)
        toks.append(tok)
        lps.append(torch.where(finished, torch.zeros_like(lp), lp))
        step_logits.append(torch.where(finished[:, None], torch.zeros_like(step_lg), step_lg))
        finished = finished | torch.isin(tok, eos)
        if finished.all():
            break
        # position step+1's logits need tokens 0..step real and on the path (not token step+1 itself)
        follows = follows & (cid[:, :, step] == tok[:, None]) & cmask[:, :, step]
    if len(toks) < max_new_tokens:  # decoding would go on past the scored length
        covered &= finished
    ids = torch.stack(toks, 1)
    is_eos = torch.isin(ids, eos)
    after = (is_eos.long().cumsum(1) - is_eos.long()) > 0
    return GreedyPath(ids.masked_fill(after, pad_id), (~after).long(), torch.stack(lps, 1) * (~after),
                      torch.stack(step_logits, 1), covered)


__all__ = ["Distinct", "distinct_completions", "logprobs_of", "distinct_logits", "distinct_logprobs", "GreedyPath",
           "greedy_from_scores"]
