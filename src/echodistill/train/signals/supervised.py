"""Supervision on the noisy clip: the cross-entropy of the item's labeled completion, teacher-forced on
the noisy clip -- `sft-noisy`'s loss as one term of the update.

Not a way for the teacher to enter training but a part of the same kind, so that a label term composes
with the teacher's: ``supervised`` + ``distill`` is `sft-distill` (round 4): the label's cross-entropy and
the KL toward the clean teacher's answer in one run, nothing sampled. The completion is the one the
warm-up teaches (``data.prompts.target_text`` + the end-of-turn token): the target's text, and in the
reasoning format ``<think>EVIDENCE</think><answer>TARGET</answer>``. Items without a target (or, in the
reasoning format, without evidence) add nothing. Normalised per item like ``distill``
(``grpo.hard_kd_loss``), so the two weights are on one scale.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from .. import grpo
from ..sft import completion_ids
from ...data.prompts import target_text
from . import Signal, register


def label_completions(model, examples) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids [B, T], mask [B, T], labeled [B] bool): each example's supervised completion, right-padded.
    An example with no target (or no evidence in the reasoning format) gets one padding token, mask 0."""
    rows, labeled = [], []
    for ex in examples:
        target = ex.choices[ex.target] if isinstance(ex.target, int) else ex.target
        evidence = ex.item.evidence
        ok = target is not None and (ex.response_format == "answer" or bool(evidence and evidence.strip()))
        rows.append(completion_ids(model, target_text(target, evidence, ex.response_format)) if ok else [])
        labeled.append(ok)
    t = max(1, max(len(r) for r in rows))
    ids = torch.full((len(rows), t), int(model.pad_token_id), dtype=torch.long)
    mask = torch.zeros((len(rows), t), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)], mask[i, :len(r)] = torch.tensor(r, dtype=torch.long), 1
    return ids.to(model.device), mask.to(model.device), torch.tensor(labeled)


@register
class Supervised(Signal):
    name = "supervised"
    reads_labels = True

    @dataclass
    class Config:
        weight: float = 0.0  # weight of the label's cross-entropy on the noisy clip; 0 = off

    def loss(self, model, r, max_completion_length: int) -> Optional[tuple[torch.Tensor, dict]]:
        ids, mask, labeled = label_completions(model, r.examples)
        student = model.completion_logits(r.noisy_batch, ids, mask, num_samples=1, with_grad=True)
        # per item of the micro-batch, at least the completion's own length (a reasoning target can be
        # longer than the sampled completions' budget)
        length = max(int(max_completion_length), ids.shape[1])
        term = self.weight * grpo.hard_kd_loss(ids, student, mask, num_items=len(r.examples),
                                               max_completion_length=length)
        return term, {"sft": float(term.detach()), "sft_items_frac": float(labeled.float().mean())}
