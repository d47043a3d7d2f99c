"""Per-token credit: the teacher-vs-student log-ratio added to each token's advantage.

``A[i,t] = A_i + eta * clip(lT[i,t] - lS_old[i,t], -clip, clip)`` (``grpo.token_advantages``), eta = weight.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import grpo
from . import Passes, Signal, register


@register
class TokenCredit(Signal):
    name = "token_credit"
    needs_samples = True

    @dataclass
    class Config:
        weight: float = 0.0  # eta; 0 = off
        clip: float = 2.0  # clip of the log-ratio per token

    def passes(self) -> Passes:
        return Passes(scores=True)

    def token_credit(self, r):
        return grpo.token_credit(r.teacher_logp, r.behaviour_logp, self.weight, self.cfg.clip)
