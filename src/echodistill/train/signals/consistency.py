"""The paper's bonus: token-level consistency of each sampled completion with the clean teacher.

``c_i = mean_t f(lT[i,t])`` over the answer tokens (``rewards.consistency``); its weighted value joins
the teacher score that ``SignalSet.advantages`` mixes into the advantages (``teacher.advantage``).
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import rewards as R
from . import Passes, Signal, register


@register
class Consistency(Signal):
    name = "consistency"
    needs_samples = True
    choices = {"mode": R.CONSISTENCY_MODES}

    @dataclass
    class Config:
        weight: float = 0.0  # share of c in the teacher score (the SNR-shaped bonus, teacher.w0 ...); 0 = off
        mode: str = "mean_prob"  # mean_prob | argmax_agree | mean_logprob
        logprob_clip: float = 5.0  # mean_logprob mode: clip log-probs at -this, then map to [0, 1]
        include_eos: bool = False  # over the answer tokens only (True: EOS too, ~ (p(answer)+1)/2)

    def passes(self) -> Passes:
        return Passes(scores=True, argmax=self.cfg.mode == "argmax_agree")

    def score(self, r):
        c = R.consistency(r.teacher_logp, r.mask if self.cfg.include_eos else r.answer_mask, self.cfg.mode,
                          teacher_argmax_match=r.teacher_argmax_match, logprob_clip=self.cfg.logprob_clip)
        r.rewards["consistency"] = c
        return self.weight * c
