"""Distillation toward the clean teacher's answer: ``KL(pi_T(.|clean) || pi_theta(.|noisy))``, or with
``target=hard`` the cross-entropy on its answer's tokens (hard pseudo-labels: the noisy student).

Teacher-forced on the teacher's greedy answer on the clean clip (the release's distillation term),
on the items of ``scope``: every item (label-free distillation), or only the groups where GRPO has no
signal -- every sample wrong (``all_wrong``, the rescue) or all equal. Only answers that name an
offered choice with at least ``teacher.min_confidence`` are targets. Normalised per item like dr_grpo's
policy term (``grpo.kd_loss``), so the weight sets its share against the policy loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from .. import grpo
from . import Passes, Signal, group_kinds, register

SCOPES = ("all", "all_wrong", "equal_groups")


def answer_kd(model, r, rows: Optional[torch.Tensor], max_completion_length: int, *,
              clean: bool = False, hard: bool = False) -> torch.Tensor:
    """KL(teacher on clean || student on the noisy clip, or the clean one) on the teacher's answer,
    over ``rows`` [B] (None: all), normalised per item of the whole micro-batch. ``hard``: the
    student's cross-entropy on the answer's tokens instead (a one-hot teacher: pseudo-label SFT).

    Only the selected items run through the student. When none is, one item still runs with weight
    0: every rank then makes the same forward calls (FSDP2 all-gathers per call), at 1/B of the cost.
    """
    ta, b = r.teacher_answer, len(r.examples)
    sel = list(range(b)) if rows is None else rows.nonzero().flatten().tolist()
    weight = 1.0 if sel else 0.0
    sel = sel or [0]
    if len(sel) == b:
        batch = r.clean_batch if clean else r.noisy_batch
    else:
        batch = model.build_inputs([r.examples[i].prompt for i in sel],
                                   [r.examples[i].clean if clean else r.examples[i].noisy for i in sel])
    student = model.completion_logits(batch, ta.ids[sel], ta.mask[sel], num_samples=1, with_grad=True)
    if hard:
        return weight * grpo.hard_kd_loss(ta.ids[sel], student, ta.mask[sel], num_items=b,
                                          max_completion_length=max_completion_length)
    teacher = ta.logits[sel].to(student.device) if weight else student.detach()  # weight 0: KL 0 exactly
    return weight * grpo.kd_loss(teacher, student, ta.mask[sel], num_items=b,
                                 max_completion_length=max_completion_length)


@register
class Distill(Signal):
    name = "distill"
    choices = {"scope": SCOPES, "target": ("soft", "hard")}

    @dataclass
    class Config:
        weight: float = 0.0  # lambda_kd: weight of the KL term; 0 = off
        scope: str = "all"  # all items | all_wrong groups (the rescue) | equal_groups (all right or all wrong)
        # soft: KL toward the teacher's distributions on its answer | hard: cross-entropy on its answer's
        # tokens (pseudo-label SFT, the noisy-student baseline; no teacher logits needed)
        target: str = "soft"

    @property
    def reads_groups(self) -> bool:  # type: ignore[override]
        return self.cfg.scope != "all"

    @property
    def needs_samples(self) -> bool:  # type: ignore[override]
        return self.cfg.scope != "all"  # the groups are the samples' accuracy

    def passes(self) -> Passes:
        return Passes(answer=True, answer_logits=self.cfg.target == "soft")

    def _in_scope(self, equal: torch.Tensor, wrong: torch.Tensor) -> Optional[torch.Tensor]:
        if self.cfg.scope == "all_wrong":
            return equal & wrong
        if self.cfg.scope == "equal_groups":
            return equal
        return None

    def answer_scope(self, acc_groups):
        return None if self.cfg.scope == "all" else self._in_scope(*acc_groups())

    def select(self, r, G: int) -> None:
        """[B] bool ``r.kd_items``: items distilled (a confident answer naming a choice, in scope)."""
        ta = r.teacher_answer
        rows = torch.tensor([c is not None and p >= self.teacher.min_confidence
                             for c, p in zip(ta.choice, ta.confidence.tolist())])
        if self.cfg.scope != "all":
            rows &= self._in_scope(*group_kinds(r.rewards["accuracy"].view(-1, G)))
        r.kd_items = rows

    def loss(self, model, r, max_completion_length: int):
        term = self.weight * answer_kd(model, r, r.kd_items, max_completion_length, hard=self.cfg.target == "hard")
        return term, {"kd": float(term.detach()), "kd_items_frac": float(r.kd_items.float().mean())}
