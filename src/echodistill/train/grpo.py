"""Group-relative advantages and the policy losses (METHOD.md section 2, steps 5 and 6). Pure.

Shapes: ``B`` items, ``G`` samples per item, ``N = B*G`` completions (item-major), ``T`` completion
tokens, ``V`` vocabulary, ``M`` sequences in the distillation batch. ``mask [N, T]`` is 1 on real
completion tokens and 0 on padding. Log-probs are natural-log probabilities of the sampled tokens.

The PPO-clip loss and its aggregation follow TRL's ``GRPOTrainer`` (``loss_type`` grpo | bnpo |
dr_grpo | dapo, ``epsilon``/``epsilon_high``, k3 KL with ``beta``), written independently.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ..config import LOSS_TYPES, SCALE_REWARDS  # allowed values, defined once

__all__ = [
    "LOSS_TYPES",
    "SCALE_REWARDS",
    "group_advantages",
    "normalise_within_groups",
    "decoupled_advantages",
    "token_credit",
    "add_token_credit",
    "token_advantages",
    "aggregate_loss",
    "policy_loss",
    "k3_kl",
    "kd_loss",
    "hard_kd_loss",
]



def group_advantages(rewards: torch.Tensor, scale: str = "group", eps: float = 1e-4) -> torch.Tensor:
    """Group-relative advantages ``A [B, G]`` from rewards ``[B, G]`` (TRL's ``scale_rewards``).

    The group mean is always subtracted: ``A = r - mean_G(r)``. Then

    * ``group``: divide by the group's std (``+ eps``), ``A_i = (r_i - mean_G r) / (std_G r + eps)``;
    * ``batch``: divide by the std of all ``B*G`` rewards (``+ eps``);
    * ``none``: no division (Dr. GRPO).

    Standard deviations are unbiased (``torch.std``, divisor ``n - 1``), as in TRL. A group whose
    rewards are all equal gets zero advantages: a per-item constant bonus cancels.
    """
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be [B, G], got shape {tuple(rewards.shape)}")
    r = rewards.float()
    adv = r - r.mean(dim=1, keepdim=True)
    if scale == "group":
        adv = adv / (r.std(dim=1, keepdim=True) + eps)
    elif scale == "batch":
        adv = adv / (r.std() + eps)
    elif scale != "none":
        raise ValueError(f"unknown scale_rewards {scale!r}; known: {', '.join(SCALE_REWARDS)}")
    return adv


def normalise_within_groups(scores: torch.Tensor, scale: str = "batch", eps: float = 1e-4) -> torch.Tensor:
    """Centre ``scores [B, G]`` within each group, then scale (``group`` | ``batch`` | ``none``).

    Unlike ``group_advantages``, ``batch`` divides by the std of the *centred* scores over the batch:
    a group whose scores barely differ keeps barely-different advantages instead of being blown up
    to +-1 by its own tiny std (the failure of z-scoring a near-constant teacher bonus).
    """
    s = scores.float()
    centred = s - s.mean(dim=1, keepdim=True)
    if scale == "group":
        return centred / (s.std(dim=1, keepdim=True) + eps)
    if scale == "batch":
        return centred / (centred.pow(2).mean().sqrt() + eps)
    if scale == "none":
        return centred
    raise ValueError(f"unknown scale {scale!r}; known: {', '.join(SCALE_REWARDS)}")


def decoupled_advantages(task_rewards: torch.Tensor, teacher_scores: torch.Tensor, weight: torch.Tensor,
                         scale_task: str = "group", scale_teacher: str = "batch",
                         eps: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """GDPO-style advantages: task and teacher terms normalised apart, summed with an explicit weight.

    ``task_rewards [B, G]`` (accuracy + format), ``teacher_scores [B, G]`` (consistency with the clean
    teacher, + grounding), ``weight [B]`` (per item: SNR shaping x gate x lambda; 0 = no teacher term).
    Returns ``(A_task [B, G], A_teacher [B, G])``; the update uses ``A_task + A_teacher``::

        A_task    = group_advantages(task_rewards, scale_task)
        A_teacher = weight[:, None] * normalise_within_groups(teacher_scores, scale_teacher)

    The weight, not the group's std, sets the teacher's share; a group with all-equal task rewards
    gets only the teacher term.
    """
    if task_rewards.shape != teacher_scores.shape:
        raise ValueError(f"task {tuple(task_rewards.shape)} and teacher {tuple(teacher_scores.shape)} differ")
    a_task = group_advantages(task_rewards, scale_task, eps)
    a_teacher = weight.float().reshape(-1, 1) * normalise_within_groups(teacher_scores, scale_teacher, eps)
    return a_task, a_teacher


def token_credit(teacher_logp: torch.Tensor, old_logp: torch.Tensor, eta: float, clip: float) -> torch.Tensor:
    """Per-token credit ``[N, T]``: ``eta * clip(lT[i,t] - lS_old[i,t], -clip, clip)`` (no gradient).

    ``teacher_logp [N, T]`` (clean-audio teacher), ``old_logp [N, T]`` (behaviour student on the noisy
    audio): the teacher-vs-student log-ratio as credit per token.
    """
    if clip <= 0:
        raise ValueError(f"token clip must be > 0, got {clip}")
    return float(eta) * (teacher_logp.detach().float() - old_logp.detach().float()).clamp(-clip, clip)


def add_token_credit(advantages: torch.Tensor, credit: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-token advantages ``[N, T]`` = sequence advantages ``[N]`` + ``credit [N, T]``, 0 on padding."""
    out = advantages.detach().float().reshape(-1, 1) + credit
    return out * mask.to(out.dtype)


def token_advantages(advantages: torch.Tensor, teacher_logp: torch.Tensor, old_logp: torch.Tensor,
                     mask: torch.Tensor, eta: float, clip: float) -> torch.Tensor:
    """Per-token advantages ``[N, T]``: ``A[i,t] = A_i + eta * clip(lT[i,t] - lS_old[i,t], -clip, clip)``.

    ``advantages [N]`` (sequence-level, from ``group_advantages(...).reshape(-1)``); see ``token_credit``.
    Padding positions are 0. No gradient flows.
    """
    return add_token_credit(advantages, token_credit(teacher_logp, old_logp, eta, clip), mask)


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k3 estimator of ``KL(pi_theta || pi_ref)`` per token ``[N, T]``: ``exp(d) - d - 1``, ``d = ref - logp``.

    Non-negative, 0 where the two log-probs are equal; gradients flow through ``logp`` only.
    """
    d = ref_logp.detach() - logp
    return torch.exp(d) - d - 1.0


def aggregate_loss(per_token_loss: torch.Tensor, mask: torch.Tensor, loss_type: str,
                   max_completion_length: Optional[int] = None,
                   num_tokens: Optional[float] = None) -> torch.Tensor:
    """Reduce ``per_token_loss [N, T]`` to a scalar with TRL's meaning of ``loss_type``.

    * ``grpo``: mean over sequences of each sequence's token mean (short answers weigh more per token);
    * ``bnpo``: sum over all tokens / number of unmasked tokens in this batch;
    * ``dr_grpo``: sum over all tokens / (N * max_completion_length) (a constant normaliser;
      ``max_completion_length`` None = T);
    * ``dapo``: sum over all tokens / ``num_tokens``, the number of unmasked tokens in the *global*
      batch (all processes and gradient-accumulation micro-batches). ``num_tokens`` None = this
      batch's count, so on one process without accumulation it is identical to ``bnpo``.
    """
    m = mask.to(per_token_loss.dtype)
    total = (per_token_loss * m).sum()
    if loss_type == "grpo":
        return ((per_token_loss * m).sum(-1) / m.sum(-1).clamp(min=1.0)).mean()
    if loss_type == "bnpo":
        return total / m.sum().clamp(min=1.0)
    if loss_type == "dr_grpo":
        L = per_token_loss.size(1) if max_completion_length is None else int(max_completion_length)
        return total / (per_token_loss.size(0) * L)
    if loss_type == "dapo":
        denom = m.sum().clamp(min=1.0) if num_tokens is None else max(float(num_tokens), 1.0)
        return total / denom
    raise ValueError(f"unknown loss_type {loss_type!r}; known: {', '.join(LOSS_TYPES)}")


def policy_loss(logp: torch.Tensor, old_logp: Optional[torch.Tensor], advantages: torch.Tensor,
                mask: torch.Tensor, epsilon: float = 0.2, epsilon_high: Optional[float] = None,
                loss_type: str = "dr_grpo", max_completion_length: Optional[int] = None,
                beta: float = 0.0, ref_logp: Optional[torch.Tensor] = None,
                num_tokens: Optional[float] = None) -> tuple[torch.Tensor, dict]:
    """PPO-clip policy loss per token, aggregated by ``loss_type``. Returns ``(loss, stats)``.

    ``logp [N, T]``: current policy log-probs of the sampled tokens (with grad).
    ``old_logp [N, T]``: behaviour policy's log-probs (None = ``logp.detach()``, i.e. one update per
    rollout, ratio 1). ``advantages``: ``[N]`` (sequence) or ``[N, T]`` (token credit).
    Per token, ``ratio = exp(logp - old_logp)``::

        loss_t = -min(ratio * A, clip(ratio, 1 - epsilon, 1 + epsilon_high) * A) + beta * k3(logp, ref)

    ``epsilon_high`` None = ``epsilon`` (symmetric). ``beta > 0`` needs ``ref_logp [N, T]``.
    ``max_completion_length`` and ``num_tokens`` as in ``aggregate_loss``.

    ``stats`` (python floats): ``clip_fraction`` (share of tokens whose objective is clipped:
    ratio below ``1 - epsilon`` with ``A < 0`` or above ``1 + epsilon_high`` with ``A > 0``),
    ``low_clip_fraction``, ``high_clip_fraction``, ``ratio_mean``, ``kl`` (masked mean k3; 0 when
    ``beta == 0`` and no ``ref_logp``), ``num_tokens`` (unmasked tokens in this batch).
    """
    if old_logp is None:
        old_logp = logp.detach()
    eps_low = float(epsilon)
    eps_high = eps_low if epsilon_high is None else float(epsilon_high)
    adv = advantages.to(logp.dtype)
    if adv.dim() == 1:
        adv = adv.unsqueeze(1)
    ratio = torch.exp(logp - old_logp.detach())
    clipped = ratio.clamp(1.0 - eps_low, 1.0 + eps_high)
    per_tok = -torch.min(ratio * adv, clipped * adv)
    m = mask.to(logp.dtype)
    n_tok = m.sum().clamp(min=1.0)
    kl_mean = 0.0
    if beta != 0.0 or ref_logp is not None:
        if ref_logp is None:
            raise ValueError("beta > 0 needs ref_logp [N, T] (the reference model's log-probs)")
        kl = k3_kl(logp, ref_logp)
        kl_mean = float(((kl.detach() * m).sum() / n_tok).item())
        if beta != 0.0:
            per_tok = per_tok + float(beta) * kl
    loss = aggregate_loss(per_tok, mask, loss_type, max_completion_length, num_tokens)
    with torch.no_grad():
        adv_b = adv.expand_as(ratio)
        low = ((ratio < 1.0 - eps_low) & (adv_b < 0)).to(m.dtype)
        high = ((ratio > 1.0 + eps_high) & (adv_b > 0)).to(m.dtype)
        stats = {
            "clip_fraction": float(((low + high) * m).sum() / n_tok),
            "low_clip_fraction": float((low * m).sum() / n_tok),
            "high_clip_fraction": float((high * m).sum() / n_tok),
            "ratio_mean": float((ratio * m).sum() / n_tok),
            "kl": kl_mean,
            "num_tokens": float(m.sum()),
        }
    return loss, stats


def _token_sum(per_token: torch.Tensor, mask: torch.Tensor, num_items: Optional[int],
               max_completion_length: Optional[int]) -> torch.Tensor:
    """Sum of ``per_token [M, T]`` over ``mask``, divided by ``num_items * max_completion_length`` (dr_grpo's
    per-item constant; ``max_completion_length`` None = T) or, without ``num_items``, by the token count."""
    m = mask.to(per_token.dtype)
    if num_items is not None:
        L = per_token.size(1) if max_completion_length is None else int(max_completion_length)
        return (per_token * m).sum() / max(int(num_items) * L, 1)
    return (per_token * m).sum() / m.sum().clamp(min=1.0)


def kd_loss(teacher: torch.Tensor, student_logits: torch.Tensor, mask: torch.Tensor,
            num_items: Optional[int] = None, max_completion_length: Optional[int] = None) -> torch.Tensor:
    """Distillation ``KL(pi_T || pi_theta)`` per token, summed and normalised (a scalar).

    ``teacher [M, T, V]``: teacher logits or log-probs over the vocabulary (log-softmax is applied,
    which leaves log-probs unchanged) on the clean audio; ``student_logits [M, T, V]``: the student on
    the noisy audio, both teacher-forced on the teacher's greedy clean answer; ``mask [M, T]``.
    ``KL = sum_v pT(v) * (log pT(v) - log pS(v))``; vocabulary entries with ``pT = 0`` contribute 0.
    Gradients flow into the student only.

    Normaliser: with ``num_items`` (B, the items of the micro-batch, of which the M rows may be a
    subset) the token sum is divided by ``B * max_completion_length`` -- per item the same constant
    dr_grpo divides the policy term by, so ``lambda_kd`` sets KD's share against the policy loss
    whatever the answer length or the number of selected rows. Without it: masked mean over tokens.
    """
    lt = F.log_softmax(teacher.detach().float(), dim=-1)
    ls = F.log_softmax(student_logits.float(), dim=-1)
    pt = lt.exp()
    kl = torch.where(pt > 0, pt * (lt - ls), torch.zeros_like(pt)).sum(-1)
    return _token_sum(kl, mask, num_items, max_completion_length)


def hard_kd_loss(ids: torch.Tensor, student_logits: torch.Tensor, mask: torch.Tensor,
                 num_items: Optional[int] = None, max_completion_length: Optional[int] = None) -> torch.Tensor:
    """Pseudo-label cross-entropy ``-log pi_theta(y_t)`` on the teacher's greedy tokens ``ids [M, T]``
    (the noisy-student baseline: ``kd_loss`` toward a one-hot teacher), normalised as ``kd_loss``."""
    ls = F.log_softmax(student_logits.float(), dim=-1)
    nll = -ls.gather(-1, ids.to(ls.device).unsqueeze(-1)).squeeze(-1)
    return _token_sum(nll, mask, num_items, max_completion_length)
