"""Teacher pseudo-labels: the accuracy reward checks against the clean teacher's greedy answer.

No label is read (label-free EchoDistill); answers below ``teacher.min_confidence`` give no target
(that item's group has no accuracy signal).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import Passes, Signal, register


@register
class PseudoLabel(Signal):
    name = "pseudo_label"
    needs_samples = True

    @dataclass
    class Config:
        weight: float = 0.0  # != 0: on (the accuracy reward's weight stays train.reward_weights.accuracy)

    def passes(self) -> Passes:
        return Passes(answer=True)

    def targets(self, r):
        ta = r.teacher_answer
        return [c if c is not None and p >= self.teacher.min_confidence else None
                for c, p in zip(ta.choice, ta.confidence.tolist())]
