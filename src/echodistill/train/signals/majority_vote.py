"""TTRL's label-free targets: the choice most of the G noisy samples name (no teacher).

Not a teacher signal, but a label replacement like ``pseudo_label``: the label-free baseline.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import rewards as R
from . import Signal, register


@register
class MajorityVote(Signal):
    name = "majority_vote"
    needs_samples = True

    @dataclass
    class Config:
        weight: float = 0.0  # != 0: on (the accuracy reward's weight stays train.reward_weights.accuracy)

    def targets(self, r):
        G = len(r.texts) // len(r.examples)
        return R.majority_vote(r.texts, [e.choices for e in r.examples], G, r.response_format)
