"""GRPO with a clean-audio teacher: the training loop (``echodistill train``).

One step (METHOD.md section 2), per rank, for each of ``gradient_accumulation_steps`` micro-batches
of ``prompts_per_device`` items::

    noise      draw type + SNR per item, seeded by (seed, item id, position)      -> noisy clip
    rollout    the student samples G completions on the NOISY clip (audio encoded once per item);
               skipped when no active term reads samples (label-free distillation)
    teacher    the frozen teacher's passes on the CLEAN clip that the active signals read
               (train/teacher.py), + the reference on the noisy clip when beta > 0
    rewards    accuracy (labels, or the signal that replaces them), format, plug-ins, the signals'
               teacher score, SNR weight
    advantages group-relative, mixed with the teacher score (+ per-token credit)

then ``num_iterations`` updates over the micro-batches (PPO-clip + beta*k3 KL + each signal's loss
term, gradient accumulation, gradients averaged across ranks, clipping, AdamW, a transformers LR
schedule).

How the teacher enters is the run's ``SignalSet`` (train/signals/, built from ``signals.*`` as a
variant sets them, ``config.VARIANTS``): this file never reads a teacher setting. Every random draw
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
from .spans import evidence_mask
from .signals import SignalSet, build_signals, group_kinds
from .teacher import TeacherAnswer, answer_mask, teacher_scoring


# ================================================================== one micro-batch, phase by phase
@dataclass
class Rollout:
    """Everything one micro-batch of B examples produces before the update (N = B*G rows).

    Filled phase by phase: ``rollout`` (student), ``teacher.teacher_scoring`` (teacher fields),
    ``compute_rewards`` (targets, rewards), ``compute_advantages`` (advantages, the signals' selections).
    A run whose signals need no samples (``SignalSet.samples`` False) has no completions: ``ids`` etc. None.
    """

    examples: list[Example]
    noisy_batch: Any  # model inputs built from the noisy clips (student)
    ids: Optional[torch.Tensor] = None  # [N, T] sampled completion tokens
    mask: Optional[torch.Tensor] = None  # [N, T] 1 up to and including EOS
    answer_mask: Optional[torch.Tensor] = None  # [N, T] the answer tokens: mask without EOS
    texts: list[str] = field(default_factory=list)
    behaviour_logp: Optional[torch.Tensor] = None  # [N, T] student log-probs at sampling time (lS_old)
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
    kd_items: Optional[torch.Tensor] = None  # [B] bool: items the distill signal selected
    evidence_mask: Optional[torch.Tensor] = None  # [N, T] tokens of the reasoning format's <think> span, else None

    @property
    def sampled(self) -> bool:
        return self.ids is not None

    @property
    def response_format(self) -> str:
        """How the completions are read (``data.response_format``, carried by the examples; a stand-in
        example without the field reads as the answer format)."""
        return getattr(self.examples[0], "response_format", "answer") if self.examples else "answer"


def _generator(device: torch.device, *keys: Any) -> torch.Generator:
    """A torch generator seeded from (seed, position, rank, ...) so sampling never depends on history."""
    from ..audio.noise import seeded_rng

    g = torch.Generator(device=device)
    g.manual_seed(int(seeded_rng(*keys).integers(2 ** 62)))
    return g


def rollout(model, examples: list[Example], cfg, generator: torch.Generator, sample: bool = True) -> Rollout:
    """The student samples G completions per item on the noisy clip (``sample`` False: inputs only)."""
    t = cfg.train
    batch = model.build_inputs([e.prompt for e in examples], [e.noisy for e in examples])
    if not sample:
        return Rollout(examples, batch)
    # train.rollout_backend: our sampler, or a vLLM server (then the log-probs are recomputed here)
    comp = rollout_backend(cfg).generate(model, batch, [e.prompt for e in examples], [e.noisy for e in examples],
                                         t.num_generations, max_new_tokens=t.max_completion_length,
                                         temperature=t.temperature, top_p=t.top_p, generator=generator)
    reasoning = cfg.data.response_format == "reasoning"  # the evidence tokens: the grounding signal's span
    evidence = evidence_mask(model.tokenizer, comp.ids, comp.mask) if reasoning else None
    return Rollout(examples, batch, comp.ids, comp.mask, answer_mask(model, comp.ids, comp.mask), comp.texts,
                   comp.logprobs, evidence_mask=evidence)


def _accuracy(r: Rollout, targets: list, t) -> torch.Tensor:
    return R.accuracy_rewards(r.texts, [e.choices for e in r.examples], targets, t.num_generations,
                              wrong=t.wrong_answer_reward, response_format=r.response_format)


def teacher_phase(model, r: Rollout, signals: SignalSet, t) -> None:
    """Phase 3: the teacher passes the signals read (and GRPO's reference pass when ``beta`` > 0)."""
    def label_groups():  # accuracy groups against what the accuracy reward will check (not the teacher)
        targets = signals.targets(r) if signals.target_source else [e.target for e in r.examples]
        return group_kinds(_accuracy(r, targets, t).view(-1, t.num_generations))

    teacher_scoring(model, r, signals, reference=r.sampled and t.beta > 0, max_new_tokens=t.max_completion_length,
                    label_groups=label_groups)


def compute_rewards(r: Rollout, signals: SignalSet, t) -> None:
    """Per-candidate rewards [N]: accuracy, format, the signals' teacher score, SNR weight, task, total.

    ``task`` = weighted accuracy + format (+ plug-ins); ``teacher`` = the sum of the signals' scores;
    ``total`` = task + w(snr) * teacher (what the joint advantage z-scores, and what is logged).
    Targets: the labels, or the signal that replaces them (teacher pseudo-labels, majority vote).
    """
    if not r.sampled:
        return
    choices = [e.choices for e in r.examples]
    targets = signals.targets(r)
    r.targets = [e.target for e in r.examples] if targets is None else targets
    acc = _accuracy(r, r.targets, t)
    fmt = R.format_rewards(r.texts, choices, t.num_generations, fmt=t.answer_format,
                           response_format=r.response_format)
    task = R.total_rewards(acc, fmt, None, None, 0.0, dict(t.reward_weights))
    w = signals.snr_weight([e.snr for e in r.examples])
    r.rewards.update(accuracy=acc, format=fmt, snr_weight=w, task=task, total=task)
    score = signals.teacher_score(r)
    if score is not None:
        r.rewards["teacher"] = score
        r.rewards["total"] = task + w * score
    add_plugin_rewards(r, t)  # train.reward_funcs: user rewards, weighted into task and total


def compute_advantages(r: Rollout, signals: SignalSet, t) -> None:
    """Advantages (``SignalSet.advantages``) and the signals' selections for the loss."""
    if r.sampled:
        signals.advantages(r, t.scale_rewards)
    else:
        signals.select(r)


def prepare(model, examples: list[Example], cfg, signals: SignalSet, generator: torch.Generator) -> Rollout:
    """Phases 2-4 of one micro-batch in one call, without timers (tests, benchmarks)."""
    r = rollout(model, examples, cfg, generator, sample=signals.samples)
    teacher_phase(model, r, signals, cfg.train)
    compute_rewards(r, signals, cfg.train)
    compute_advantages(r, signals, cfg.train)
    return r


def _grad_norm(loss: torch.Tensor, params: list[torch.nn.Parameter]) -> float:
    """L2 norm of one loss term's gradient alone (an extra backward; the graph is kept for the update)."""
    grads = [g for g in torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True) if g is not None]
    return float(torch.sqrt(sum((g.float() ** 2).sum() for g in grads))) if grads else 0.0


def micro_loss(model, r: Rollout, signals: SignalSet, t, *, first_iteration: bool,
               num_tokens: Optional[float]) -> tuple[torch.Tensor, dict]:
    """Loss of one micro-batch for one update (with grad): PPO-clip (+ beta k3 KL) on the samples,
    plus each signal's loss term (distillation, clean retention, ...)."""
    terms, stats = {}, {}
    if r.sampled:
        G = t.num_generations
        logp, ent = model.token_logprobs(r.noisy_batch, r.ids, r.mask, num_samples=G, with_grad=True,
                                         return_entropy=True)
        # One update per rollout: the behaviour policy is the current one (ratio 1, as TRL does).
        old = None if t.num_iterations == 1 else r.behaviour_logp
        terms["policy"], stats = grpo.policy_loss(logp, old, r.advantages, r.mask, t.epsilon, t.epsilon_high,
                                                  t.loss_type, t.max_completion_length, t.beta, r.ref_logp,
                                                  num_tokens)
        stats["policy"] = float(terms["policy"].detach())  # the PPO term alone (with beta * KL), for the bar
        if first_iteration:
            m = r.mask.float()
            stats["entropy"] = float((ent.detach() * m).sum() / m.sum().clamp(min=1))
    extra, more = signals.losses(model, r, t.max_completion_length)
    terms.update(extra)
    stats.update(more)
    if first_iteration and t.log_component_grad_norms:
        params = model.trainable_parameters()
        names = {"distill": "kd", "clean_retention": "clean"}  # the stored metric names
        stats.update({f"grad_norm_{names.get(k, k)}": _grad_norm(v, params) for k, v in terms.items()})
    return sum(terms.values()), stats

# ================================================================== metrics
def _mean_std(prefix: str, x: torch.Tensor) -> dict[str, float]:
    x = x.float()
    return {f"{prefix}_mean": float(x.mean()), f"{prefix}_std": float(x.std()) if x.numel() > 1 else 0.0}


def sample_metrics(rolls: list[Rollout], signals: SignalSet) -> dict[str, float]:
    """Reward components, group kinds and the teacher's share of the update (runs that sample)."""
    G = signals.G
    out: dict[str, float] = {}
    for k in sorted({k for r in rolls for k in r.rewards}):
        out.update(_mean_std(f"reward_{k}", torch.cat([r.rewards[k] for r in rolls])))
    # Where GRPO alone has signal: mixed groups. All-right and all-wrong groups give it none.
    acc = torch.cat([r.rewards["accuracy"] for r in rolls]).view(-1, G)
    equal, wrong = group_kinds(acc)
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
    if "token_credit" in signals:
        credit = torch.cat([((r.teacher_logp - r.behaviour_logp) * r.mask).sum(1) / r.mask.sum(1).clamp(min=1)
                            for r in rolls]).view(-1, G)
        varies = varies | (credit.std(1) > 1e-6)
    out["frac_equal_groups_teacher_varies"] = (float(varies[equal].float().mean())
                                               if signals.passes.scores and equal.any() else float("nan"))
    if "consistency" in rolls[0].rewards:
        c = torch.cat([r.rewards["consistency"] for r in rolls]).view(-1, G)
        out["consistency_within_group_std"] = float(c.std(1).mean())
    labels = [label_of(e) for r in rolls for e in r.examples]
    targets = [label_of(e, tg) for r in rolls for e, tg in zip(r.examples, r.targets)]
    out["target_coverage"] = float(np.mean([tg is not None for tg in targets]))
    out["target_label_agreement"] = agreement(targets, labels)
    out["completion_length"] = float(torch.cat([r.mask.sum(1).float() for r in rolls]).mean())
    return out


def label_of(e: Example, answer: Any = "label") -> Any:
    """An answer (default: the item's label) as ``read_answer`` gives answers: a choice index, or an open-ended
    question's normalised text; None stays None (unlabeled, or no answer)."""
    a = e.target if answer == "label" else answer
    if a is None or e.choices:
        return a
    return R.read_answer(str(a), [])


def agreement(answers: list, labels: list) -> float:
    """Share of ``answers`` equal to their label, over the pairs that have both; NaN when none has
    (unlabeled items: the true labels are only ever read here, for logging)."""
    pairs = [(a, y) for a, y in zip(answers, labels) if a is not None and y is not None]
    return float(np.mean([a == y for a, y in pairs])) if pairs else float("nan")


def teacher_answer_metrics(rolls: list[Rollout]) -> dict[str, float]:
    """How much the teacher knows: its clean answers checked against the true labels, which only this
    logging reads in the label-free regime (NaN where there are none)."""
    labels = [label_of(e) for r in rolls for e in r.examples]
    ta_choice = [c for r in rolls for c in r.teacher_answer.choice]
    answered = torch.cat([r.teacher_answer.answered if r.teacher_answer.answered is not None
                          else torch.ones(len(r.examples), dtype=torch.bool) for r in rolls])
    conf = torch.cat([r.teacher_answer.confidence.cpu() for r in rolls])
    # answered only in a signal's scope (``SignalSet.answer_scope``): its accuracy there is another quantity
    scope = "_kd_scope" if any(r.teacher_answer.answered is not None for r in rolls) else ""
    some = bool(answered.any())  # the same keys on every rank (NaN when none answered here)
    # a teacher that names no choice is wrong where there is a label
    told = [c if c is not None else -1 for c in ta_choice]
    return {f"teacher_clean_acc{scope}": (agreement([c for c, ok in zip(told, answered.tolist()) if ok],
                                                    [y for y, ok in zip(labels, answered.tolist()) if ok])
                                          if some else float("nan")),
            f"teacher_confidence{scope}": float(conf[answered].mean()) if some else float("nan"),
            "teacher_answered_frac": float(answered.float().mean())}


def rollout_metrics(rolls: list[Rollout], signals: SignalSet) -> dict[str, float]:
    """What a metrics row reports about the step's micro-batches."""
    out = sample_metrics(rolls, signals) if rolls[0].sampled else {}
    if rolls[0].teacher_answer is not None:
        out.update(teacher_answer_metrics(rolls))
    out["snr_mean"] = float(np.mean([e.snr for r in rolls for e in r.examples]))
    return out


# ================================================================== the recipe on the shared skeleton
class GRPORecipe(Recipe):
    """GRPO with a clean-audio teacher on ``train/loop.py``'s skeleton: a step is
    ``gradient_accumulation_steps`` micro-batches of phases 1-4, then ``num_iterations`` updates."""

    summed_keys = ("skipped_items", "encoder_clips")  # counts: summed over ranks, not averaged
    val_teacher = True  # label-free validation: the noisy student's agreement with the clean teacher

    def __init__(self, cfg: Any, resume: bool = False, progress: bool = True):
        super().__init__(cfg, cfg.train, resume=resume, progress=progress)
        self.name = cfg.train.variant
        self.signals = build_signals(cfg)  # how the teacher enters this run: the one place that knows
        self.num_iterations = int(cfg.train.num_iterations)
        self.gradient_accumulation_steps = int(cfg.train.gradient_accumulation_steps)
        self.position = 0  # micro-batches of the item stream consumed
        # checkpoint selection starts from the initial model: best/ may say training did not help
        self.eval_at_start = bool(cfg.train.metric_for_best_model)

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
                r = rollout(model, examples, cfg, _generator(model.device, cfg.run.seed, "rollout", self.position, rank),
                            sample=self.signals.samples)
            # ---- phase 3: teacher scoring (frozen teacher, clean audio): the passes the signals read
            with timer("teacher"):
                teacher_phase(model, r, self.signals, cfg.train)
            # ---- phase 4: rewards and advantages
            with timer("rewards"):
                compute_rewards(r, self.signals, cfg.train)
                compute_advantages(r, self.signals, cfg.train)
            rolls.append(r)
        for msg in self.skipped:
            print(f"[echodistill] rank {rank}: skipped bad item {msg}", file=sys.stderr, flush=True)
        return rolls

    # ---- phase 5: update (the skeleton runs num_iterations passes; accumulation; ranks averaged)
    def _update_context(self, rolls: list[Rollout]) -> Optional[float]:
        """DAPO's global token count (all ranks and micro-batches), as this rank's share."""
        if self.cfg.train.loss_type != "dapo" or not self.signals.samples:
            return None
        acc = self.accelerator
        local = sum(float(r.mask.sum()) for r in rolls)
        return float(acc.reduce(torch.tensor(local, device=acc.device), "sum")) / acc.num_processes

    def _loss_scale(self, rolls: list[Rollout]) -> float:
        return 1.0 if self.cfg.train.loss_type == "dapo" else 1.0 / len(rolls)

    def _loss_step(self, r: Rollout, iteration: int, num_tokens: Optional[float]) -> tuple[torch.Tensor, dict]:
        return micro_loss(self.model, r, self.signals, self.cfg.train, first_iteration=iteration == 0,
                          num_tokens=num_tokens)

    def _step_metrics(self, rolls: list[Rollout], stats: dict[str, list[float]]) -> dict[str, float]:
        m = rollout_metrics(rolls, self.signals)
        m.update({k: float(np.mean(v)) for k, v in stats.items() if k != "num_tokens"})
        m["skipped_items"] = float(len(self.skipped))
        m["encoder_clips"] = float(self.model.encoder_clips - self.encoder_clips)  # audio encodings this step (all phases)
        return m

    def _row_position(self) -> dict:
        return {"epoch": self.stream.epoch_of(self.position - 1)}

    def _completion_rows(self, rolls: list[Rollout]) -> tuple[list[str], list[list]]:
        """The first micro-batch's completions (TRL's ``log_completions``): one row per sample, with its
        answer, the target it was checked against, reward, advantage and the teacher's clean answer; a run
        that samples nothing logs, per item, the clean teacher's answer it distills toward."""
        r = rolls[0]
        ta = r.teacher_answer
        teacher = self.model.decode(ta.ids, ta.mask) if ta is not None else [None] * len(r.examples)
        head = ["id", "question", "noise_type", "snr"]
        if not r.sampled:
            rows = [[e.item.id, e.item.question, e.noise_type, round(e.snr, 2), t,
                     None if r.kd_items is None else bool(r.kd_items[i])] for i, (e, t) in enumerate(zip(r.examples, teacher))]
            return head + ["teacher_answer", "distilled"], rows
        G = self.signals.G
        adv = r.advantages if r.advantages.dim() == 1 else \
            (r.advantages * r.mask).sum(1) / r.mask.sum(1).clamp(min=1)  # per-token credit: its mean

        def shown(e: Example, a: Any) -> Any:  # a choice index as its text
            return e.choices[a] if isinstance(a, int) and e.choices else a

        rows = []
        for n, text in enumerate(r.texts):
            i = n // G
            e = r.examples[i]
            rows.append([e.item.id, e.item.question, e.noise_type, round(e.snr, 2), text,
                         shown(e, R.read_answer(text, e.choices, r.response_format)), shown(e, r.targets[i]),
                         round(float(r.rewards["total"][n]), 4), round(float(adv[n]), 4), teacher[i]])
        return head + ["completion", "answer", "target", "reward", "advantage", "teacher_answer"], rows

    def _progress_postfix(self, m: dict) -> dict:
        """The terms this run trains: reward and accuracy when it samples (policy loss, KL when beta > 0),
        the signals' losses (KD, clean KL); the label-free val agreement when there is one."""
        out = {}
        if self.signals.samples:
            out.update(reward=f"{m['reward_total_mean']:.3f}", acc=f"{m['reward_accuracy_mean']:.2f}",
                       policy=f"{m['policy']:.4f}")
            if self.cfg.train.beta > 0:
                out["kl"] = f"{m['kl']:.4f}"
        out.update({k: f"{m[k]:.4f}" for k in ("kd", "clean_kl") if k in m})
        if "val_teacher_agreement" in m:
            out["val_agree"] = f"{m['val_teacher_agreement']:.2f}"
        return out


def run_train(cfg, resume: bool = False) -> Path:
    """Train ``cfg.train.variant`` on ``cfg.data.train_manifest``; return ``<output_dir>/final``."""
    from .plugins import load_reward_plugins
    load_reward_plugins(cfg)  # the one command that runs plug-in code: import now, fail before the model loads
    return GRPORecipe(cfg, resume=resume).setup().train()


__all__ = ["run_train", "Rollout", "rollout", "teacher_phase", "prepare", "compute_rewards", "compute_advantages",
           "micro_loss", "rollout_metrics", "GRPORecipe"]
