"""Grounding: tokens the clean audio supports beyond the text prior (anti-hallucination).

``g_i = mean_t clip(lT[i,t] - l0[i,t], -k, k) / k`` with ``l0`` the same teacher on silent audio;
its weighted value joins the teacher score (``rewards.grounding``).
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import rewards as R
from . import Passes, Signal, register


@register
class Grounding(Signal):
    name = "grounding"
    needs_samples = True

    @dataclass
    class Config:
        weight: float = 0.0  # lambda_g: share of g in the teacher score; 0 = off (no silent-audio pass)
        clip: float = 2.0  # k in clip(lT - l0, -k, k) / k

    def passes(self) -> Passes:
        return Passes(scores=True, silent=True)

    def score(self, r):
        g = R.grounding(r.teacher_logp, r.noaudio_logp, r.mask, self.cfg.clip)
        r.rewards["grounding"] = g
        return self.weight * g
