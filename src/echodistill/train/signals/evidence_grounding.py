"""Grounding over the evidence: the evidence tokens the clean audio supports beyond the text prior.

The reasoning format's completion states what it hears in ``<think>...</think>``. A noisy student's
typical failure is a confident description of something that is not in the clip; the clean teacher
sees that token by token. ``g_i = mean over the evidence tokens of clip(lT - l0, -k, k) / k``, with
``lT`` the teacher on the clean clip and ``l0`` the same teacher on silent audio: positive where the
clip, not the question, makes the stated evidence likely. The whole-completion version is
``grounding``; in the answer format (no evidence span) this signal is 0 for every row.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import rewards as R
from . import Passes, Signal, register


@register
class EvidenceGrounding(Signal):
    name = "evidence_grounding"
    needs_samples = True

    @dataclass
    class Config:
        weight: float = 0.0  # share of g over the evidence tokens in the teacher score; 0 = off (no silent pass)
        clip: float = 2.0  # k in clip(lT - l0, -k, k) / k

    def passes(self) -> Passes:
        return Passes(scores=True, silent=True)

    def score(self, r):
        span = r.evidence_mask if r.evidence_mask is not None else torch.zeros_like(r.mask)
        g = R.grounding(r.teacher_logp, r.noaudio_logp, span, self.cfg.clip)
        r.rewards["evidence_grounding"] = g
        return self.weight * g
