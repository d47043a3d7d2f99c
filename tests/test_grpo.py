"""GRPO advantages and losses against hand-computed values on small tensors."""

import math

import pytest
import torch

from echodistill.train.grpo import (
    aggregate_loss,
    group_advantages,
    k3_kl,
    kd_loss,
    policy_loss,
    token_advantages,
)

EPS = 1e-4


# --- advantages -------------------------------------------------------------------------------

REWARDS = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 0.0]])


def test_group_advantages_group():
    # group 0: mean 0.5, deviations +-0.5, unbiased var = 4*0.25/3 = 1/3, std = 0.57735
    # group 1: mean 0.75, deviations [.25,.25,.25,-.75], var = (3*.0625 + .5625)/3 = 0.25, std = 0.5
    a = group_advantages(REWARDS, "group", eps=EPS)
    s0 = math.sqrt(1 / 3) + EPS
    s1 = 0.5 + EPS
    expected = torch.tensor([[0.5 / s0, -0.5 / s0, -0.5 / s0, 0.5 / s0],
                             [0.25 / s1, 0.25 / s1, 0.25 / s1, -0.75 / s1]])
    assert torch.allclose(a, expected, atol=1e-6)


def test_group_advantages_batch():
    # all 8 rewards: mean 5/8, five deviations 0.375 and three -0.625:
    # sum sq = 5*0.140625 + 3*0.390625 = 1.875, unbiased var = 1.875/7, std = 0.517549
    a = group_advantages(REWARDS, "batch", eps=EPS)
    s = math.sqrt(1.875 / 7) + EPS
    centred = torch.tensor([[0.5, -0.5, -0.5, 0.5], [0.25, 0.25, 0.25, -0.75]])  # group mean removed
    assert torch.allclose(a, centred / s, atol=1e-6)


def test_group_advantages_none_and_equal_groups():
    a = group_advantages(REWARDS, "none")
    assert torch.allclose(a, torch.tensor([[0.5, -0.5, -0.5, 0.5], [0.25, 0.25, 0.25, -0.75]]))
    flat = torch.tensor([[0.7, 0.7, 0.7], [0.0, 0.0, 0.0]])
    for scale in ("group", "batch", "none"):
        assert torch.equal(group_advantages(flat, scale), torch.zeros(2, 3))
    with pytest.raises(ValueError):
        group_advantages(REWARDS, "item")
    with pytest.raises(ValueError):
        group_advantages(REWARDS.reshape(-1), "group")


def test_token_advantages():
    adv = torch.tensor([1.0, -1.0])
    lT = torch.tensor([[-0.5, 0.0, -1.0], [-4.0, -1.0, -1.0]])
    lS = torch.tensor([[-1.0, -3.0, -1.0], [-1.0, -1.0, -1.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    out = token_advantages(adv, lT, lS, mask, eta=0.5, clip=2.0)
    # diffs [[0.5, 3 -> 2, pad], [-3 -> -2, 0, 0]]; A + 0.5 * diff
    assert torch.allclose(out, torch.tensor([[1.25, 2.0, 0.0], [-2.0, -1.0, -1.0]]))
    assert torch.allclose(token_advantages(adv, lT, lS, torch.ones(2, 3), eta=0.0, clip=2.0),
                          adv[:, None].expand(2, 3))


# --- policy loss ------------------------------------------------------------------------------

RATIOS = torch.tensor([[1.0, 1.5, 0.5], [0.7, 1.1, 1.0]])
MASK = torch.tensor([[1, 1, 1], [1, 1, 0]])
ADV = torch.tensor([1.0, -1.0])


def _inputs():
    old = torch.tensor([[-1.0, -2.0, -0.5], [-1.5, -0.3, -2.0]])
    logp = (old + RATIOS.log()).clone().requires_grad_(True)
    return logp, old


# per-token losses with epsilon = 0.2 (clip range [0.8, 1.2]):
# row 0 (A = +1): r=1   -> -min(1, 1)       = -1
#                 r=1.5 -> -min(1.5, 1.2)   = -1.2  (clipped, high)
#                 r=0.5 -> -min(0.5, 0.8)   = -0.5  (pessimistic: not clipped)
# row 1 (A = -1): r=0.7 -> -min(-0.7, -0.8) =  0.8  (clipped, low)
#                 r=1.1 -> -min(-1.1, -1.1) =  1.1
#                 (masked)
# sums: row 0 = -2.7 (3 tokens), row 1 = 1.9 (2 tokens), total = -0.8 over 5 tokens
@pytest.mark.parametrize("loss_type,kwargs,expected", [
    ("grpo", {}, (-2.7 / 3 + 1.9 / 2) / 2),  # 0.025
    ("bnpo", {}, -0.8 / 5),  # -0.16
    ("dr_grpo", {"max_completion_length": 4}, -0.8 / (2 * 4)),  # -0.1
    ("dr_grpo", {}, -0.8 / (2 * 3)),  # max_completion_length None = T
    ("dapo", {}, -0.8 / 5),  # one process: identical to bnpo
    ("dapo", {"num_tokens": 10}, -0.8 / 10),  # global normaliser
])
def test_policy_loss_types(loss_type, kwargs, expected):
    logp, old = _inputs()
    loss, stats = policy_loss(logp, old, ADV, MASK, epsilon=0.2, loss_type=loss_type, **kwargs)
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert stats["clip_fraction"] == pytest.approx(2 / 5)
    assert stats["low_clip_fraction"] == pytest.approx(1 / 5)
    assert stats["high_clip_fraction"] == pytest.approx(1 / 5)
    assert stats["num_tokens"] == 5


def test_policy_loss_asymmetric_clip_and_gradients():
    logp, old = _inputs()
    loss, stats = policy_loss(logp, old, ADV, MASK, epsilon=0.2, loss_type="bnpo")
    loss.backward()
    g = logp.grad
    # clipped tokens get no gradient; d(-r*A)/dlogp = -r*A, divided by 5 tokens for bnpo
    assert g[0, 1].item() == 0.0 and g[1, 0].item() == 0.0 and g[1, 2].item() == 0.0
    assert g[0, 0].item() == pytest.approx(-1.0 / 5)
    assert g[0, 2].item() == pytest.approx(-0.5 / 5)
    assert g[1, 1].item() == pytest.approx(1.1 / 5)

    # epsilon_high = 0.6: r = 1.5 < 1.6 is no longer clipped -> -1.5; the low side is unchanged.
    logp, old = _inputs()
    loss, stats = policy_loss(logp, old, ADV, MASK, epsilon=0.2, epsilon_high=0.6, loss_type="bnpo")
    assert loss.item() == pytest.approx((-1 - 1.5 - 0.5 + 0.8 + 1.1) / 5)  # -0.22
    assert stats["high_clip_fraction"] == 0.0
    assert stats["low_clip_fraction"] == pytest.approx(1 / 5)
    loss.backward()
    assert logp.grad[0, 1].item() == pytest.approx(-1.5 / 5)


def test_policy_loss_token_advantages_and_default_old():
    logp, old = _inputs()
    a_seq, _ = policy_loss(logp, old, ADV, MASK, loss_type="grpo")
    a_tok, _ = policy_loss(logp, old, ADV[:, None].expand(2, 3), MASK, loss_type="grpo")
    assert a_seq.item() == pytest.approx(a_tok.item())
    # old_logp None: ratio 1, loss = -mean A over tokens (bnpo): -(3*1 + 2*(-1)) / 5
    loss, stats = policy_loss(logp, None, ADV, MASK, loss_type="bnpo")
    assert loss.item() == pytest.approx(-0.2)
    assert stats["clip_fraction"] == 0.0 and stats["ratio_mean"] == pytest.approx(1.0)


def test_policy_loss_kl_term():
    logp = torch.zeros(1, 2, requires_grad=True)
    ref = torch.tensor([[0.0, math.log(2.0)]])
    # A = 0, ratio 1: only beta * k3. k3 = [0, 2 - ln 2 - 1 = 0.306853]; bnpo over 2 tokens
    loss, stats = policy_loss(logp, None, torch.zeros(1), torch.ones(1, 2), loss_type="bnpo",
                              beta=0.1, ref_logp=ref)
    k = 2 - math.log(2) - 1
    assert loss.item() == pytest.approx(0.1 * k / 2)
    assert stats["kl"] == pytest.approx(k / 2)
    with pytest.raises(ValueError):
        policy_loss(logp, None, torch.zeros(1), torch.ones(1, 2), beta=0.1)
    with pytest.raises(ValueError):
        aggregate_loss(torch.zeros(1, 2), torch.ones(1, 2), "sum")


def test_k3_kl():
    torch.manual_seed(0)
    a, b = torch.randn(4, 7) * 3, torch.randn(4, 7) * 3
    kl = k3_kl(a, b)
    assert kl.shape == (4, 7) and (kl >= 0).all()
    assert torch.equal(k3_kl(a, a), torch.zeros(4, 7))


# --- distillation -----------------------------------------------------------------------------

def test_kd_loss_zero_when_equal_and_hand_value():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5)
    mask = torch.ones(2, 3)
    assert kd_loss(logits, logits, mask).item() == pytest.approx(0.0, abs=1e-6)
    # teacher given as log-probs is the same as logits
    assert kd_loss(logits.log_softmax(-1), logits, mask).item() == pytest.approx(0.0, abs=1e-6)

    # V = 2: teacher [0.5, 0.5], student [0.8, 0.2]:
    # KL = 0.5 ln(0.5/0.8) + 0.5 ln(0.5/0.2) = 0.5*(-0.470004) + 0.5*0.916291 = 0.223144
    teacher = torch.log(torch.tensor([[[0.5, 0.5], [0.01, 0.99]]]))
    student = torch.log(torch.tensor([[[0.8, 0.2], [0.99, 0.01]]])).requires_grad_(True)
    mask = torch.tensor([[1, 0]])  # the second token is padding
    loss = kd_loss(teacher, student, mask)
    expected = 0.5 * math.log(0.5 / 0.8) + 0.5 * math.log(0.5 / 0.2)
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    loss.backward()
    assert student.grad[0, 1].abs().sum() == 0  # masked token: no gradient


def test_kd_loss_teacher_zero_prob_and_no_teacher_grad():
    teacher = torch.tensor([[[0.0, float("-inf"), 0.0]]], requires_grad=True)
    student = torch.zeros(1, 1, 3, requires_grad=True)
    loss = kd_loss(teacher, student, torch.ones(1, 1))
    # teacher [0.5, 0, 0.5], student uniform: 2 * 0.5 * ln(0.5 / (1/3)) = ln 1.5
    assert loss.item() == pytest.approx(math.log(1.5), abs=1e-6)
    loss.backward()
    assert torch.isfinite(student.grad).all()
    assert teacher.grad is None
