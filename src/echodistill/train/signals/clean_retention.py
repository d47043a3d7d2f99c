"""Clean retention: the student on the CLEAN clip stays with the teacher on its answer.

``KL(pi_T(.|clean) || pi_theta(.|clean))`` on the teacher's greedy answer, every item: holds clean
accuracy while the other terms train on noise.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import Passes, Signal, register
from .distill import answer_kd


@register
class CleanRetention(Signal):
    name = "clean_retention"

    @dataclass
    class Config:
        weight: float = 0.0  # weight of the KL term on clean audio; 0 = off

    def passes(self) -> Passes:
        return Passes(answer=True, answer_logits=True)

    def loss(self, model, r, max_completion_length: int):
        term = self.weight * answer_kd(model, r, None, max_completion_length, clean=True)
        return term, {"clean_kl": float(term.detach())}
