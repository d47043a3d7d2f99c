"""The signal contract (train/signals/): a new way for the teacher to enter training is one new part.

The toy signal below lives in this file only -- no trainer, config or variant code knows it -- and a
real training run picks it up from ``signals.toy_brevity.weight``: its config section, its pass, its
score in the rewards and its loss term in the update.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from echodistill.config import load_config
from echodistill.train import signals as S
from echodistill.train import trainer as T

from train_helpers import make_dataset, read_metrics, tiny_config


class ToyBrevity(S.Signal):
    """Prefer short completions the clean teacher finds likely: score = weight * p_T(first token)."""

    name = "toy_brevity"
    needs_samples = True

    @dataclass
    class Config:
        weight: float = 0.0
        scale: float = 1.0

    def passes(self) -> S.Passes:
        return S.Passes(scores=True)

    def score(self, r):
        first = r.teacher_logp[:, 0].exp()  # [N]
        r.rewards[self.name] = first
        return self.weight * self.cfg.scale * first

    def loss(self, model, r, max_completion_length):
        term = torch.zeros((), requires_grad=True)  # a loss term the update sums (0 here)
        return term, {"toy_term": 0.0}


@pytest.fixture
def toy_registered():
    S.register(ToyBrevity)
    yield
    S.REGISTRY.pop(ToyBrevity.name)


def test_a_registered_signal_gets_a_typed_config_section(toy_registered):
    cfg = load_config(None, ["train.variant=grpo", "signals.toy_brevity.weight=0.5", "signals.toy_brevity.scale=2"])
    signals = S.build_signals(cfg)
    assert signals.names == ["toy_brevity"] and signals.passes == S.Passes(scores=True)
    with pytest.raises(Exception, match="toy_brevity.scale"):
        load_config(None, ["signals.toy_brevity.scale=big"])


def test_register_refuses_a_config_without_weight():
    class Bad(S.Signal):
        name = "bad"

        @dataclass
        class Config:
            eta: float = 1.0

    with pytest.raises(TypeError, match="weight"):
        S.register(Bad)


@pytest.mark.slow
def test_a_toy_signal_trains_end_to_end_without_trainer_code(toy_registered, tmp_path, tiny_qwen2_audio_dir):
    data = make_dataset(tmp_path / "data")
    out = tmp_path / "run"
    cfg = tiny_config(data, tiny_qwen2_audio_dir, out, "train.variant=grpo", "signals.toy_brevity.weight=1.0",
                      "train.eval_steps=0")
    T.run_train(cfg)
    rows = read_metrics(out)
    assert "reward_toy_brevity_mean" in rows[0] and "toy_term" in rows[0]
    # the score entered the reward: total = task + w(snr) * score differs from the task reward
    assert rows[0]["reward_teacher_mean"] > 0 and rows[0]["reward_total_mean"] != rows[0]["reward_task_mean"]


def test_two_label_replacements_are_refused():
    with pytest.raises(Exception, match="both replace the labels"):
        load_config(None, ["train.variant=ttrl", "signals.pseudo_label.weight=1"])
