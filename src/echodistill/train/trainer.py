"""GRPO with a clean-audio teacher: the training loop (``echodistill train``).

One step (METHOD.md section 2), per rank, for each of ``gradient_accumulation_steps`` micro-batches
of ``prompts_per_device`` items::

    noise     draw type + SNR per item, seeded by (seed, item id, position)      -> noisy clip
    rollout   the student samples G completions on the NOISY clip (audio encoded once per item)
    teacher   the frozen teacher scores every candidate on the CLEAN clip (one batched forward);
              optional: silent-audio pass (grounding), reference on the noisy clip (beta KL),
              the teacher's greedy clean answer and its distributions (lambda_kd)
    rewards   accuracy, format, token-level consistency per candidate, SNR-shaped bonus
    advantages group-relative (+ per-token teacher credit)

then ``num_iterations`` updates over the micro-batches (PPO-clip + beta*k3 KL + lambda_kd*KD, gradient
accumulation, gradients averaged across ranks, clipping, AdamW, a transformers LR schedule).

Variants come from config alone (``train.variant`` presets ``config.VARIANTS``). Every random draw
derives from (seed, position, rank) so a killed-and-resumed run ends with the same weights as an
uninterrupted one. Distributed (DDP or FSDP2, ``train/distributed.py``): the update goes through the
prepared module (``Engine.loss``); sampling, teacher and evaluation run inside ``Engine.inference``
and never enter a collective. DeepSpeed is not supported.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from ..data.labels import select_items, write_label_sheet
from ..errors import UserError
from . import grpo, rewards as R
from .data import Example, ItemStream, load_examples, prompt_length_proxy
from .loop import PhaseTimer, Recipe, any_rank, val_examples
from .plugins import add_plugin_rewards
from .rollout_backends import rollout_backend
from .scoring import GreedyPath, distinct_logits, distinct_logprobs, greedy_from_scores, logprobs_of


# ================================================================== one micro-batch, phase by phase
@dataclass
class TeacherAnswer:
    """The frozen teacher's greedy answer on each CLEAN clip (B rows, one per item)."""

    ids: torch.Tensor  # [B, T'] greedy tokens
    mask: torch.Tensor  # [B, T'] 1 up to and including EOS
    choice: list[Optional[int]]  # [B] the offered choice it names (None: names none)
    confidence: torch.Tensor  # [B] p_T(answer tokens | clean clip), EOS excluded
    logits: Optional[torch.Tensor] = None  # [B, T', V] its logits on that answer (KD, clean retention)
    answered: Optional[torch.Tensor] = None  # [B] bool: items answered (None: all); the others have
    # choice None, confidence 0 and an all-0 mask (``answer_items``: only the KD scope is read)


@dataclass
class Rollout:
    """Everything one micro-batch of B examples produces before the update (N = B*G rows).

    Filled phase by phase: ``rollout`` (student), ``teacher_scoring`` (teacher fields),
    ``compute_rewards`` (targets, rewards), ``compute_advantages`` (advantages, KD rows).
    """

    examples: list[Example]
    noisy_batch: Any  # model inputs built from the noisy clips (student)
    ids: torch.Tensor  # [N, T] sampled completion tokens
    mask: torch.Tensor  # [N, T] 1 up to and including EOS
    answer_mask: torch.Tensor  # [N, T] the answer tokens: mask without EOS
    texts: list[str]
    behaviour_logp: torch.Tensor  # [N, T] student log-probs at sampling time (lS_old)
    clean_batch: Any = None  # model inputs built from the clean clips (teacher, clean retention)
    teacher_logp: Optional[torch.Tensor] = None  # [N, T] teacher on the clean clip (lT)
    teacher_argmax_match: Optional[torch.Tensor] = None  # [N, T] bool: o[i,t] is the teacher's argmax
    noaudio_logp: Optional[torch.Tensor] = None  # [N, T] teacher on silent audio (l0)
    ref_logp: Optional[torch.Tensor] = None  # [N, T] initial model on the noisy clip (beta KL)
    teacher_answer: Optional[TeacherAnswer] = None
    targets: list[Optional[int]] = field(default_factory=list)  # [B] what the accuracy reward checks against
    rewards: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> [N]
    adv_task: Optional[torch.Tensor] = None  # [N] the accuracy/format part of the advantages
    adv_teacher: Optional[torch.Tensor] = None  # [N] the teacher part (0 where it is off)
    advantages: Optional[torch.Tensor] = None  # [N], or [N, T] with per-token credit
    kd_items: Optional[torch.Tensor] = None  # [B] bool: items whose distillation term is on


@dataclass(frozen=True)
class TeacherPasses:
    """Which frozen-teacher passes a config needs -- decided here and nowhere else."""

    scores: bool  # lT: the teacher's log-prob of every sampled token on the clean clip
    argmax: bool  # + its full logits, for argmax agreement
    silent: bool  # l0: the same on silent audio (grounding)
    reference: bool  # the initial model on the noisy clip (beta KL)
    answer: bool  # its greedy answer on the clean clip (pseudo-label, confidence gate, KD)
    answer_logits: bool  # + its logits on that answer (KD, clean retention)

    @classmethod
    def of(cls, cfg) -> "TeacherPasses":
        tc, t = cfg.teacher, cfg.train
        scores = bool(tc.enabled or tc.token_credit or tc.lambda_g > 0)
        answer_logits = tc.lambda_kd > 0 or t.lambda_clean > 0
        # the greedy answer only where the method reads it (its accuracy is logged when it is there)
        answer = answer_logits or t.reward_source == "teacher" or tc.gate == "confidence"
        return cls(scores=scores, argmax=scores and tc.consistency == "argmax_agree",
                   silent=bool(tc.enabled and tc.lambda_g > 0), reference=t.beta > 0, answer=answer,
                   answer_logits=answer_logits)

    @property
    def clean(self) -> bool:
        return self.scores or self.answer


def _generator(device: torch.device, *keys: Any) -> torch.Generator:
    """A torch generator seeded from (seed, position, rank, ...) so sampling never depends on history."""
    from ..audio.noise import seeded_rng

    g = torch.Generator(device=device)
    g.manual_seed(int(seeded_rng(*keys).integers(2 ** 62)))
    return g


def _answer_mask(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[N, T] mask of the answer tokens: ``mask`` without the EOS tokens."""
    eos = torch.tensor(model.eos_token_ids, device=ids.device)
    return mask * (~torch.isin(ids, eos)).to(mask.dtype)


def rollout(model, examples: list[Example], cfg, generator: torch.Generator) -> Rollout:
    """The student samples G completions per item on the noisy clip."""
    t = cfg.train
    batch = model.build_inputs([e.prompt for e in examples], [e.noisy for e in examples])
    # train.rollout_backend: our sampler, or a vLLM server (then the log-probs are recomputed here)
    comp = rollout_backend(cfg).generate(model, batch, [e.prompt for e in examples], [e.noisy for e in examples],
                                         t.num_generations, max_new_tokens=t.max_completion_length,
                                         temperature=t.temperature, top_p=t.top_p, generator=generator)
    return Rollout(examples, batch, comp.ids, comp.mask, _answer_mask(model, comp.ids, comp.mask), comp.texts,
                   comp.logprobs)


def _decode_answers(model, r: Rollout, cfg, items: list[int], with_logits: bool) -> GreedyPath:
    """The teacher's greedy decode on the clean clips of ``items`` (all of the batch, or a few)."""
    batch = (r.clean_batch if len(items) == len(r.examples) else
             model.build_inputs([r.examples[i].prompt for i in items], [r.examples[i].clean for i in items]))
    y = model.generate(batch, 1, max_new_tokens=cfg.train.max_completion_length, do_sample=False)
    logits = model.completion_logits(batch, y.ids, y.mask, num_samples=1) if with_logits else None
    return GreedyPath(y.ids, y.mask, y.logprobs, logits, torch.ones(len(items), dtype=torch.bool))


def _pad_to(x: torch.Tensor, length: int, value: float) -> torch.Tensor:
    """Right-pad dim 1 of ``x`` [B, T, ...] to ``length`` (>= T)."""
    if x.shape[1] >= length:
        return x
    pad = x.new_full((x.shape[0], length - x.shape[1], *x.shape[2:]), value)
    return torch.cat([x, pad], dim=1)


def answer_items(r: Rollout, cfg) -> Optional[list[int]]:
    """The items whose teacher answer the method reads; None = all.

    When the answer serves only distillation limited to all-wrong (or all-equal) groups, and the
    accuracy targets do not come from the teacher, the scope is known from the labels before the
    teacher runs: only those items are answered (in the rescue variant most steps have none or one).
    """
    tc, t, G = cfg.teacher, cfg.train, cfg.train.num_generations
    if (tc.kd_scope == "all" or tc.lambda_kd <= 0 or t.lambda_clean > 0 or t.reward_source == "teacher"
            or (tc.advantage == "decoupled" and tc.gate == "confidence")):
        return None
    acc = R.accuracy_rewards(r.texts, [e.choices for e in r.examples], reward_targets(r, cfg), G,
                             wrong=t.wrong_answer_reward)
    equal, wrong = _group_kinds(acc.view(-1, G))
    scope = equal & wrong if tc.kd_scope == "all_wrong" else equal
    return scope.nonzero().flatten().tolist()


def _place_answers(whole: GreedyPath, part: GreedyPath, items: list[int], pad_id: int) -> GreedyPath:
    """``whole`` (B rows) with rows ``items`` replaced by ``part`` (one row per item), both right-padded
    to the longer answer; those rows become covered."""
    t = max(whole.ids.shape[1], part.ids.shape[1])
    fill = {"ids": pad_id, "mask": 0, "logprobs": 0.0, "logits": 0.0}
    placed = {}
    for k, v in fill.items():
        w, p = getattr(whole, k), getattr(part, k)
        if p is None:  # no logits asked for
            placed[k] = w
            continue
        if w is None:
            w = p.new_zeros((len(whole.covered), 1, *p.shape[2:]))
        w = _pad_to(w, t, v)
        w[items] = _pad_to(p, t, v).to(w.device, w.dtype)
        placed[k] = w
    covered = whole.covered.clone()
    covered[items] = True
    return GreedyPath(**placed, covered=covered)


def teacher_answer(model, r: Rollout, cfg, with_logits: bool, scored: Optional[tuple] = None,
                   items: Optional[list[int]] = None) -> TeacherAnswer:
    """The teacher's greedy answer on the clean clips (call inside ``model.teacher()``).

    ``scored`` = (logits, Distinct) of the teacher's scoring pass: the answer is read off it for
    every item where a sampled completion follows the greedy path (``scoring.greedy_from_scores``,
    the same tokens ``generate`` picks); only the other items are decoded. ``items``: answer only
    these (``answer_items``); the others stay empty and ``answered`` says which.
    """
    b, pad = len(r.examples), model.pad_token_id
    if items is not None:  # only these; the others stay empty (one pad token, mask 0)
        path = GreedyPath(torch.full((b, 1), pad), torch.zeros(b, 1, dtype=torch.long), torch.zeros(b, 1), None,
                          torch.zeros(b, dtype=torch.bool))
        if items:
            path = _place_answers(path, _decode_answers(model, r, cfg, items, with_logits), items, pad)
    elif scored is None:
        path = _decode_answers(model, r, cfg, list(range(b)), with_logits)
    else:
        logits, d = scored
        suppress = torch.tensor([i for i in model.suppress_token_ids if i < logits.shape[-1]], dtype=torch.long)
        path = greedy_from_scores(logits, d, eos_ids=model.eos_token_ids, suppress=suppress,
                                  pad_id=pad, max_new_tokens=cfg.train.max_completion_length)
        todo = [i for i in range(b) if not bool(path.covered[i])]
        if todo:
            path = _place_answers(path, _decode_answers(model, r, cfg, todo, with_logits), todo, pad)
        t = int(path.mask.sum(1).max())  # as generate: as many steps as the longest answer
        path = GreedyPath(path.ids[:, :t], path.mask[:, :t], path.logprobs[:, :t], path.logits[:, :t], path.covered)
    confidence = (path.logprobs * _answer_mask(model, path.ids, path.mask)).sum(1).exp()
    texts = model.decode(path.ids, path.mask)
    choice = [R.extract_choice(text, e.choices) for text, e in zip(texts, r.examples)]
    answered = None
    if items is not None:
        answered = path.covered.cpu()
        confidence = confidence * answered.to(confidence.device, confidence.dtype)
        choice = [c if ok else None for c, ok in zip(choice, answered.tolist())]
    return TeacherAnswer(path.ids, path.mask, choice, confidence, path.logits if with_logits else None, answered)


def teacher_scoring(model, r: Rollout, cfg) -> None:
    """The frozen teacher scores every candidate under the CLEAN clip (+ the passes the config needs).

    Each item's distinct candidates are scored once (``scoring.py``); the greedy clean answer is read
    off that pass where a candidate follows it.
    """
    need, G = TeacherPasses.of(cfg), cfg.train.num_generations
    prompts = [e.prompt for e in r.examples]
    scored = None
    with model.teacher():
        if need.clean:
            r.clean_batch = model.build_inputs(prompts, [e.clean for e in r.examples])
        if need.scores:
            scored = distinct_logits(model, r.clean_batch, r.ids, r.mask, G)
            logits, d = scored
            r.teacher_logp = logprobs_of(logits, d.ids, d.mask)[d.inverse] * r.mask
            if need.argmax:
                r.teacher_argmax_match = (logits.argmax(-1)[d.inverse] == r.ids) & r.mask.bool()
        if need.silent:  # text prior: the same teacher with the audio silenced
            silent = model.build_inputs(prompts, [np.zeros_like(e.clean) for e in r.examples])
            r.noaudio_logp = distinct_logprobs(model, silent, r.ids, r.mask, G)
        if need.reference:  # reference = the initial model on the NOISY clip (the student's input)
            r.ref_logp = distinct_logprobs(model, r.noisy_batch, r.ids, r.mask, G)
        if need.answer:
            r.teacher_answer = teacher_answer(model, r, cfg, with_logits=need.answer_logits, scored=scored,
                                              items=None if scored is not None else answer_items(r, cfg))


def reward_targets(r: Rollout, cfg) -> list[Optional[int]]:
    """Per item, the choice index the accuracy reward checks against (``train.reward_source``).

    ``label``: the manifest's target. ``teacher``: the clean teacher's greedy answer, None below
    ``teacher.min_confidence`` (label-free EchoDistill). ``majority``: the most frequent answer among
    the G noisy samples (TTRL, label-free, no teacher). None = no accuracy signal for that item.
    """
    source, G = cfg.train.reward_source, cfg.train.num_generations
    if source == "label":
        return [e.target for e in r.examples]
    if source == "majority":
        return R.majority_vote(r.texts, [e.choices for e in r.examples], G)
    ta = r.teacher_answer
    return [c if c is not None and p >= cfg.teacher.min_confidence else None
            for c, p in zip(ta.choice, ta.confidence.tolist())]


def compute_rewards(r: Rollout, cfg) -> None:
    """Per-candidate rewards [N]: accuracy, format, consistency, grounding, SNR weight, task, total.

    ``task`` = weighted accuracy + format; ``teacher`` = consistency (+ lambda_g * grounding);
    ``total`` = task + w(snr) * teacher (what the joint advantage z-scores, and what is logged).
    """
    tc, t, G = cfg.teacher, cfg.train, cfg.train.num_generations
    choices = [e.choices for e in r.examples]
    r.targets = reward_targets(r, cfg)
    acc = R.accuracy_rewards(r.texts, choices, r.targets, G, wrong=t.wrong_answer_reward)
    fmt = R.format_rewards(r.texts, choices, G, fmt=t.answer_format)
    weights = dict(t.reward_weights)
    task = R.total_rewards(acc, fmt, None, None, 0.0, weights)
    w = R.expand_per_item(R.snr_weight([e.snr for e in r.examples], tc.w0, tc.snr_lo, tc.snr_hi, tc.w_min,
                                       tc.shaping, tc.shaping_direction), G)
    r.rewards.update(accuracy=acc, format=fmt, snr_weight=w, task=task, total=task)
    if tc.enabled and r.teacher_logp is not None:
        cons = R.consistency(r.teacher_logp, r.mask if tc.include_eos else r.answer_mask, tc.consistency,
                             teacher_argmax_match=r.teacher_argmax_match, logprob_clip=tc.logprob_clip)
        ground = (R.grounding(r.teacher_logp, r.noaudio_logp, r.mask, tc.grounding_clip)
                  if r.noaudio_logp is not None else None)
        r.rewards["consistency"] = cons
        if ground is not None:
            r.rewards["grounding"] = ground
        r.rewards["teacher"] = cons + (tc.lambda_g * ground if ground is not None else 0.0)
        r.rewards["total"] = R.total_rewards(acc, fmt, cons, ground, w, weights, tc.lambda_g)
    add_plugin_rewards(r, cfg)  # train.reward_funcs: user rewards, weighted into task and total


def _group_kinds(acc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(all_equal [B], all_wrong [B]) from accuracy rewards [B, G] (1 = right)."""
    top, bottom = acc.max(1).values, acc.min(1).values
    return top == bottom, top < 1


def teacher_gate(r: Rollout, cfg) -> torch.Tensor:
    """[B] multiplier of the decoupled teacher term (``teacher.gate``)."""
    G, gate = cfg.train.num_generations, cfg.teacher.gate
    if gate == "equal_groups":  # only where GRPO has no signal
        return _group_kinds(r.rewards["accuracy"].view(-1, G))[0].float()
    if gate == "confidence":
        return r.teacher_answer.confidence.float().cpu()
    return torch.ones(len(r.examples))


def kd_rows(r: Rollout, cfg) -> Optional[torch.Tensor]:
    """[B] bool: items distilled toward the teacher's clean answer (``teacher.kd_scope``); None = no KD.

    Only answers that name an offered choice with at least ``teacher.min_confidence`` are targets.
    """
    tc, G = cfg.teacher, cfg.train.num_generations
    if tc.lambda_kd <= 0 or r.teacher_answer is None:
        return None
    ta = r.teacher_answer
    rows = torch.tensor([c is not None and p >= tc.min_confidence for c, p in zip(ta.choice, ta.confidence.tolist())])
    equal, wrong = _group_kinds(r.rewards["accuracy"].view(-1, G))
    if tc.kd_scope == "all_wrong":
        rows &= equal & wrong
    elif tc.kd_scope == "equal_groups":
        rows &= equal
    return rows


def compute_advantages(r: Rollout, cfg) -> None:
    """Advantages [N] ([N, T] with per-token credit) from the task and teacher terms; KD rows.

    ``teacher.advantage=joint`` (paper): one group z-score of ``total``; the teacher part logged is
    its difference to the task-only advantages. ``decoupled``: ``grpo.decoupled_advantages`` with the
    per-item weight ``w(snr) * gate``.
    """
    tc, t, G = cfg.teacher, cfg.train, cfg.train.num_generations
    task = r.rewards["task"].view(-1, G)
    a_task = grpo.group_advantages(task, t.scale_rewards)
    a_teacher = torch.zeros_like(a_task)
    if "teacher" in r.rewards:
        if tc.advantage == "joint":
            a_teacher = grpo.group_advantages(r.rewards["total"].view(-1, G), t.scale_rewards) - a_task
        else:
            weight = r.rewards["snr_weight"].view(-1, G)[:, 0] * teacher_gate(r, cfg)
            a_task, a_teacher = grpo.decoupled_advantages(task, r.rewards["teacher"].view(-1, G), weight,
                                                          t.scale_rewards, tc.scale)
    r.adv_task, r.adv_teacher = a_task.reshape(-1), a_teacher.reshape(-1)
    adv = r.adv_task + r.adv_teacher
    if tc.token_credit and r.teacher_logp is not None:
        adv = grpo.token_advantages(adv, r.teacher_logp, r.behaviour_logp, r.mask, tc.eta, tc.token_clip)
    r.advantages = adv
    r.kd_items = kd_rows(r, cfg)


def _answer_kd(model, r: Rollout, rows: Optional[torch.Tensor], cfg, *, clean: bool = False) -> torch.Tensor:
    """KL(teacher on clean || student on the noisy clip, or the clean one) on the teacher's answer,
    over ``rows`` [B] (None: all), normalised per item of the whole micro-batch.

    Only the selected items run through the student. When none is, one item still runs with weight
    0: every rank then makes the same forward calls (FSDP2 all-gathers per call), at 1/B of the cost.
    """
    ta, b = r.teacher_answer, len(r.examples)
    sel = list(range(b)) if rows is None else rows.nonzero().flatten().tolist()
    weight = 1.0 if sel else 0.0
    sel = sel or [0]
    if len(sel) == b:
        batch = r.clean_batch if clean else r.noisy_batch
    else:
        batch = model.build_inputs([r.examples[i].prompt for i in sel],
                                   [r.examples[i].clean if clean else r.examples[i].noisy for i in sel])
    student = model.completion_logits(batch, ta.ids[sel], ta.mask[sel], num_samples=1, with_grad=True)
    teacher = ta.logits[sel].to(student.device) if weight else student.detach()  # weight 0: KL 0 exactly
    return weight * grpo.kd_loss(teacher, student, ta.mask[sel], num_items=b,
                                 max_completion_length=cfg.train.max_completion_length)


def _grad_norm(loss: torch.Tensor, params: list[torch.nn.Parameter]) -> float:
    """L2 norm of one loss term's gradient alone (an extra backward; the graph is kept for the update)."""
    grads = [g for g in torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True) if g is not None]
    return float(torch.sqrt(sum((g.float() ** 2).sum() for g in grads))) if grads else 0.0


def micro_loss(model, r: Rollout, cfg, *, first_iteration: bool, num_tokens: Optional[float]) -> tuple[torch.Tensor, dict]:
    """Loss of one micro-batch for one update (with grad): PPO-clip (+ beta k3 KL) (+ KD) (+ clean retention).

    KD terms are normalised per item like dr_grpo's policy term (``grpo.kd_loss``), so ``lambda_kd``
    and ``lambda_clean`` set their share against the policy loss.
    """
    t, tc, G = cfg.train, cfg.teacher, cfg.train.num_generations
    logp, ent = model.token_logprobs(r.noisy_batch, r.ids, r.mask, num_samples=G, with_grad=True, return_entropy=True)
    # One update per rollout: the behaviour policy is the current one (ratio 1, as TRL does).
    old = None if t.num_iterations == 1 else r.behaviour_logp
    # distill-only has all-zero rewards, hence zero advantages: the PPO term is 0, beta KL still applies.
    policy, stats = grpo.policy_loss(logp, old, r.advantages, r.mask, t.epsilon, t.epsilon_high, t.loss_type,
                                     t.max_completion_length, t.beta, r.ref_logp, num_tokens)
    terms = {"policy": policy}
    if r.kd_items is not None:
        terms["kd"] = tc.lambda_kd * _answer_kd(model, r, r.kd_items, cfg)
        stats["kd"] = float(terms["kd"].detach())
        stats["kd_items_frac"] = float(r.kd_items.float().mean())
    if t.lambda_clean > 0:  # clean retention: the student on CLEAN audio stays with the teacher
        terms["clean"] = t.lambda_clean * _answer_kd(model, r, None, cfg, clean=True)
        stats["clean_kl"] = float(terms["clean"].detach())
    if first_iteration:
        m = r.mask.float()
        stats["entropy"] = float((ent.detach() * m).sum() / m.sum().clamp(min=1))
        if t.log_component_grad_norms:
            params = model.trainable_parameters()
            stats.update({f"grad_norm_{k}": _grad_norm(v, params) for k, v in terms.items()})
    return sum(terms.values()), stats

# ================================================================== metrics
def _mean_std(prefix: str, x: torch.Tensor) -> dict[str, float]:
    x = x.float()
    return {f"{prefix}_mean": float(x.mean()), f"{prefix}_std": float(x.std()) if x.numel() > 1 else 0.0}


def rollout_metrics(rolls: list[Rollout], cfg) -> dict[str, float]:
    """Reward components, group kinds, the teacher's share of the update, and how good its answers are."""
    G = cfg.train.num_generations
    out: dict[str, float] = {}
    for k in sorted({k for r in rolls for k in r.rewards}):
        out.update(_mean_std(f"reward_{k}", torch.cat([r.rewards[k] for r in rolls])))
    # Where GRPO alone has signal: mixed groups. All-right and all-wrong groups give it none.
    acc = torch.cat([r.rewards["accuracy"] for r in rolls]).view(-1, G)
    equal, wrong = _group_kinds(acc)
    out["frac_groups_acc_equal"] = float(equal.float().mean())
    out["frac_groups_all_right"] = float((equal & ~wrong).float().mean())
    out["frac_groups_all_wrong"] = float((equal & wrong).float().mean())
    out["frac_groups_mixed"] = float((~equal).float().mean())
    # The teacher's share of the (sequence-level) advantage mass, and whether it still varies where
    # accuracy is all-equal (per-token credit counted as variation too).
    a_task = torch.cat([r.adv_task for r in rolls]).abs().sum()
    a_teacher = torch.cat([r.adv_teacher for r in rolls]).view(-1, G)
    out["teacher_adv_share"] = float(a_teacher.abs().sum() / (a_task + a_teacher.abs().sum()).clamp(min=1e-12))
    varies = a_teacher.std(1) > 1e-6
    if cfg.teacher.token_credit and rolls[0].teacher_logp is not None:
        credit = torch.cat([((r.teacher_logp - r.behaviour_logp) * r.mask).sum(1) / r.mask.sum(1).clamp(min=1)
                            for r in rolls]).view(-1, G)
        varies = varies | (credit.std(1) > 1e-6)
    teacher_used = TeacherPasses.of(cfg).scores
    out["frac_equal_groups_teacher_varies"] = (float(varies[equal].float().mean()) if teacher_used and equal.any()
                                               else float("nan"))
    if "consistency" in rolls[0].rewards:
        c = torch.cat([r.rewards["consistency"] for r in rolls]).view(-1, G)
        out["consistency_within_group_std"] = float(c.std(1).mean())
    # How much the teacher (and any pseudo-label) knows: checked against the true labels, which only
    # this logging reads in the label-free regime.
    labels = [e.target for r in rolls for e in r.examples]
    if rolls[0].teacher_answer is not None:
        ta_choice = [c for r in rolls for c in r.teacher_answer.choice]
        answered = torch.cat([r.teacher_answer.answered if r.teacher_answer.answered is not None
                              else torch.ones(len(r.examples), dtype=torch.bool) for r in rolls])
        conf = torch.cat([r.teacher_answer.confidence.cpu() for r in rolls])
        # answered only in the KD scope (``answer_items``): its accuracy there is another quantity
        scope = "_kd_scope" if any(r.teacher_answer.answered is not None for r in rolls) else ""
        some = bool(answered.any())  # the same keys on every rank (NaN when none answered here)
        out[f"teacher_clean_acc{scope}"] = (float(np.mean([c == y for c, y, ok in zip(ta_choice, labels,
                                                                                     answered.tolist()) if ok]))
                                            if some else float("nan"))
        out[f"teacher_confidence{scope}"] = float(conf[answered].mean()) if some else float("nan")
        out["teacher_answered_frac"] = float(answered.float().mean())
    targets = [tg for r in rolls for tg in r.targets]
    have = [tg is not None for tg in targets]
    out["target_coverage"] = float(np.mean(have))
    out["target_label_agreement"] = (float(np.mean([tg == y for tg, y in zip(targets, labels) if tg is not None]))
                                     if any(have) else float("nan"))
    lengths = torch.cat([r.mask.sum(1).float() for r in rolls])
    out["completion_length"] = float(lengths.mean())
    out["snr_mean"] = float(np.mean([e.snr for r in rolls for e in r.examples]))
    return out


# ================================================================== the recipe on the shared skeleton
class GRPORecipe(Recipe):
    """GRPO with a clean-audio teacher on ``train/loop.py``'s skeleton: a step is
    ``gradient_accumulation_steps`` micro-batches of phases 1-4, then ``num_iterations`` updates."""

    summed_keys = ("skipped_items", "encoder_clips")  # counts: summed over ranks, not averaged

    def __init__(self, cfg: Any, resume: bool = False, progress: bool = True):
        super().__init__(cfg, cfg.train, resume=resume, progress=progress)
        self.name = cfg.train.variant
        self.num_iterations = int(cfg.train.num_iterations)
        self.gradient_accumulation_steps = int(cfg.train.gradient_accumulation_steps)
        self.position = 0  # micro-batches of the item stream consumed

    def _setup_data(self) -> None:
        from ..audio.noise import NoiseBank
        from ..data.manifest import read_manifest
        from ..data.validate import usable_training_items

        cfg, t, acc = self.cfg, self.cfg.train, self.accelerator
        all_items = read_manifest(cfg.data.train_manifest, path_map=dict(cfg.data.path_map),
                                  columns=dict(cfg.data.columns))
        self.train_items = select_items(all_items, cfg, t.rl_items)  # label-free regime: RL on the unlabeled items
        if all_items:  # the checks `data check` makes: prompts that fit, long clips counted (data/validate.py)
            self.train_items = usable_training_items(self.train_items, cfg, cfg.data.train_manifest,
                                                     model_path=t.init_from or None, log=self._log)
        if not self.train_items:
            raise UserError(f"{cfg.data.train_manifest}: no training items for train.rl_items={t.rl_items}")
        if cfg.data.labeled_fraction < 1 and acc.is_main_process:
            write_label_sheet(self.out, all_items, cfg, t.rl_items)
        self.bank = NoiseBank(cfg.noise.noise_dir if Path(cfg.noise.noise_dir).is_dir() else None,
                              list(cfg.noise.extra_noise_paths))
        self.bank.check(list(cfg.noise.train_types))
        lengths = prompt_length_proxy(self.train_items, cfg.data.max_duration_s) if t.group_by_length else None
        self.stream = ItemStream(self.train_items, t.prompts_per_device, acc.num_processes, acc.process_index,
                                 cfg.run.seed, lengths=lengths)
        if t.eval_steps > 0 and Path(cfg.data.val_manifest).exists():
            self.val = val_examples(cfg, t.eval_items, self.bank)

    def _setup_model(self):
        from ..models import load_adapter

        model = load_adapter(self.cfg.model, path=self.cfg.train.init_from or None, train=True)
        model.gradient_checkpointing = bool(self.cfg.train.gradient_checkpointing)
        return model

    def state_dict(self) -> dict:
        return {"position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.position = int(state["position"])

    def _next_batches(self, timer: PhaseTimer) -> list[Rollout]:
        """Phases 1-4 for each micro-batch of the step (noise, rollout, teacher scoring, rewards)."""
        cfg, acc, model = self.cfg, self.accelerator, self.model
        rank = acc.process_index
        rolls: list[Rollout] = []
        self.skipped: list[str] = []
        self.encoder_clips, empty_in_a_row = model.encoder_clips, 0
        while len(rolls) < self.gradient_accumulation_steps:
            # ---- phase 1: noise (load clips, draw noise); all ranks agree before any skip
            with timer("noise"):
                examples, bad = load_examples(self.stream.batch(self.position), cfg, self.bank, self.position)
                self.skipped += bad
                skip = any_rank(acc, len(examples) == 0)
            self.position += 1
            if skip:  # some rank has nothing usable: every rank drops this micro-batch together
                empty_in_a_row += 1
                if empty_in_a_row > max(100, len(self.train_items)):  # the same decision on every rank
                    raise UserError(f"{cfg.data.train_manifest}: {empty_in_a_row} micro-batches in a row had no "
                                    f"usable audio (last: {bad[-1] if bad else '?'}); run `echodistill data check`")
                continue
            empty_in_a_row = 0
            # ---- phase 2: rollout (student, noisy audio)
            with timer("rollout"):
                r = rollout(model, examples, cfg, _generator(model.device, cfg.run.seed, "rollout", self.position, rank))
            # ---- phase 3: teacher scoring (frozen teacher, clean audio)
            with timer("teacher"):
                teacher_scoring(model, r, cfg)
            # ---- phase 4: rewards and advantages
            with timer("rewards"):
                compute_rewards(r, cfg)
                compute_advantages(r, cfg)
            rolls.append(r)
        for msg in self.skipped:
            print(f"[echodistill] rank {rank}: skipped bad item {msg}", file=sys.stderr, flush=True)
        return rolls

    # ---- phase 5: update (the skeleton runs num_iterations passes; accumulation; ranks averaged)
    def _update_context(self, rolls: list[Rollout]) -> Optional[float]:
        """DAPO's global token count (all ranks and micro-batches), as this rank's share."""
        if self.cfg.train.loss_type != "dapo":
            return None
        acc = self.accelerator
        local = sum(float(r.mask.sum()) for r in rolls)
        return float(acc.reduce(torch.tensor(local, device=acc.device), "sum")) / acc.num_processes

    def _loss_scale(self, rolls: list[Rollout]) -> float:
        return 1.0 if self.cfg.train.loss_type == "dapo" else 1.0 / len(rolls)

    def _loss_step(self, r: Rollout, iteration: int, num_tokens: Optional[float]) -> tuple[torch.Tensor, dict]:
        return micro_loss(self.model, r, self.cfg, first_iteration=iteration == 0, num_tokens=num_tokens)

    def _step_metrics(self, rolls: list[Rollout], stats: dict[str, list[float]]) -> dict[str, float]:
        m = rollout_metrics(rolls, self.cfg)
        m.update({k: float(np.mean(v)) for k, v in stats.items() if k != "num_tokens"})
        m["skipped_items"] = float(len(self.skipped))
        m["encoder_clips"] = float(self.model.encoder_clips - self.encoder_clips)  # audio encodings this step (all phases)
        return m

    def _row_position(self) -> dict:
        return {"epoch": self.stream.epoch_of(self.position - 1)}

    def _progress_postfix(self, m: dict) -> dict:
        return {"reward": f"{m['reward_total_mean']:.3f}", "acc": f"{m['reward_accuracy_mean']:.2f}"}


def run_train(cfg, resume: bool = False) -> Path:
    """Train ``cfg.train.variant`` on ``cfg.data.train_manifest``; return ``<output_dir>/final``."""
    from .plugins import load_reward_plugins
    load_reward_plugins(cfg)  # the one command that runs plug-in code: import now, fail before the model loads
    return GRPORecipe(cfg, resume=resume).setup().train()


__all__ = ["run_train", "Rollout", "TeacherAnswer", "TeacherPasses", "rollout", "teacher_scoring",
           "reward_targets", "compute_rewards", "compute_advantages", "teacher_gate", "kd_rows", "micro_loss",
           "rollout_metrics", "GRPORecipe"]
