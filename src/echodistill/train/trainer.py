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
uninterrupted one. Distributed: the model is not wrapped in DDP (sampling, teacher and evaluation
call the plain module, and rank-local calls must never enter a collective); gradients are averaged
with one all-reduce per update instead, which is what DDP does. FSDP/DeepSpeed are not supported yet.
"""

from __future__ import annotations

import json
import math
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from ..config import ConfigError, save_config, to_dict
from ..errors import UserError
from . import grpo, rewards as R
from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .data import Example, ItemStream, eval_examples, load_examples


# ================================================================== one micro-batch, phase by phase
@dataclass
class Rollout:
    """Everything one micro-batch of B examples produces before the update (N = B*G rows)."""

    examples: list[Example]
    noisy_batch: Any  # model inputs built from the noisy clips (student)
    ids: torch.Tensor  # [N, T] sampled completion tokens
    mask: torch.Tensor  # [N, T]
    texts: list[str]
    behaviour_logp: torch.Tensor  # [N, T] student log-probs at sampling time (lS_old)
    teacher_logp: Optional[torch.Tensor] = None  # [N, T] teacher on the clean clip (lT)
    noaudio_logp: Optional[torch.Tensor] = None  # [N, T] teacher on silent audio (l0)
    ref_logp: Optional[torch.Tensor] = None  # [N, T] initial model on the noisy clip (beta KL)
    kd: Optional[dict] = None  # teacher's greedy clean answer yT and its logits (lambda_kd)
    rewards: dict = field(default_factory=dict)  # name -> [N]
    advantages: Optional[torch.Tensor] = None  # [N] or [N, T]


def _generator(device: torch.device, *keys: Any) -> torch.Generator:
    """A torch generator seeded from (seed, position, rank, ...) so sampling never depends on history."""
    from ..audio.noise import seeded_rng

    g = torch.Generator(device=device)
    g.manual_seed(int(seeded_rng(*keys).integers(2 ** 62)))
    return g


def rollout(model, examples: list[Example], cfg, generator: torch.Generator) -> Rollout:
    """The student samples G completions per item on the noisy clip."""
    t = cfg.train
    batch = model.build_inputs([e.prompt for e in examples], [e.noisy for e in examples])
    comp = model.generate(batch, t.num_generations, max_new_tokens=t.max_completion_length, do_sample=True,
                          temperature=t.temperature, top_p=t.top_p, generator=generator)
    return Rollout(examples, batch, comp.ids, comp.mask, comp.texts, comp.logprobs)


def completion_logits(model, batch, ids: torch.Tensor, mask: torch.Tensor, num_samples: int,
                      with_grad: bool) -> torch.Tensor:
    """Full next-token logits [N, T, V] at the completion positions (for KD and teacher argmax)."""
    return model.completion_logits(batch, ids, mask, num_samples=num_samples, with_grad=with_grad)


def teacher_scoring(model, r: Rollout, cfg) -> None:
    """The frozen teacher scores every candidate under the CLEAN clip (+ optional extra passes)."""
    tc, t, G = cfg.teacher, cfg.train, cfg.train.num_generations
    prompts = [e.prompt for e in r.examples]
    need_teacher = tc.enabled or tc.token_credit or tc.lambda_g > 0
    with model.teacher():
        clean = model.build_inputs(prompts, [e.clean for e in r.examples]) \
            if need_teacher or tc.lambda_kd > 0 else None
        if need_teacher:
            if tc.consistency == "argmax_agree":
                logits = completion_logits(model, clean, r.ids, r.mask, G, with_grad=False)
                r.teacher_logp = (logits.gather(-1, r.ids.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)) * r.mask
                r.rewards["_argmax_match"] = (logits.argmax(-1) == r.ids) & r.mask.bool()
            else:
                r.teacher_logp = model.token_logprobs(clean, r.ids, r.mask, num_samples=G)
        if tc.lambda_g > 0:  # text prior: the same teacher with the audio silenced
            silent = model.build_inputs(prompts, [np.zeros_like(e.clean) for e in r.examples])
            r.noaudio_logp = model.token_logprobs(silent, r.ids, r.mask, num_samples=G)
        if t.beta > 0:  # reference = the initial model on the NOISY clip (the student's input)
            r.ref_logp = model.token_logprobs(r.noisy_batch, r.ids, r.mask, num_samples=G)
        if tc.lambda_kd > 0:  # the teacher's greedy answer on clean audio, and its distributions
            yT = model.generate(clean, 1, max_new_tokens=t.max_completion_length, do_sample=False)
            r.kd = {"ids": yT.ids, "mask": yT.mask,
                    "teacher_logits": completion_logits(model, clean, yT.ids, yT.mask, 1, with_grad=False)}


def compute_rewards(r: Rollout, cfg) -> None:
    """Per-candidate rewards [N]: accuracy, format, consistency, grounding, SNR weight, total."""
    tc, t, G = cfg.teacher, cfg.train, cfg.train.num_generations
    choices = [e.choices for e in r.examples]
    acc = R.accuracy_rewards(r.texts, choices, [e.target for e in r.examples], G, wrong=t.wrong_answer_reward)
    fmt = R.format_rewards(r.texts, choices, G, fmt=t.answer_format)
    cons = ground = None
    if tc.enabled and r.teacher_logp is not None:
        cons = R.consistency(r.teacher_logp, r.mask, tc.consistency,
                             teacher_argmax_match=r.rewards.pop("_argmax_match", None),
                             logprob_clip=tc.logprob_clip)
    if tc.enabled and r.noaudio_logp is not None:
        ground = R.grounding(r.teacher_logp, r.noaudio_logp, r.mask, tc.grounding_clip)
    w = R.expand_per_item(R.snr_weight([e.snr for e in r.examples], tc.w0, tc.snr_lo, tc.snr_hi, tc.w_min,
                                       tc.shaping), G)
    total = R.total_rewards(acc, fmt, cons, ground, w, dict(t.reward_weights), tc.lambda_g)
    r.rewards.update(accuracy=acc, format=fmt, snr_weight=w, total=total)
    if cons is not None:
        r.rewards["consistency"] = cons
    if ground is not None:
        r.rewards["grounding"] = ground


def compute_advantages(r: Rollout, cfg) -> None:
    """Group-relative advantages [N]; [N, T] with per-token teacher credit."""
    tc, G = cfg.teacher, cfg.train.num_generations
    adv = grpo.group_advantages(r.rewards["total"].view(-1, G), cfg.train.scale_rewards).reshape(-1)
    if tc.token_credit and r.teacher_logp is not None:
        adv = grpo.token_advantages(adv, r.teacher_logp, r.behaviour_logp, r.mask, tc.eta, tc.token_clip)
    r.advantages = adv


def micro_loss(model, r: Rollout, cfg, *, first_iteration: bool, num_tokens: Optional[float]) -> tuple[torch.Tensor, dict]:
    """Loss of one micro-batch for one update (with grad): PPO-clip (+ beta k3 KL) (+ lambda_kd KD)."""
    t, tc, G = cfg.train, cfg.teacher, cfg.train.num_generations
    logp, ent = model.token_logprobs(r.noisy_batch, r.ids, r.mask, num_samples=G, with_grad=True, return_entropy=True)
    # One update per rollout: the behaviour policy is the current one (ratio 1, as TRL does).
    old = None if t.num_iterations == 1 else r.behaviour_logp
    # distill-only has all-zero rewards, hence zero advantages: the PPO term is 0, beta KL still applies.
    loss, stats = grpo.policy_loss(logp, old, r.advantages, r.mask, t.epsilon, t.epsilon_high, t.loss_type,
                                   t.max_completion_length, t.beta, r.ref_logp, num_tokens)
    if r.kd is not None:
        student = completion_logits(model, r.noisy_batch, r.kd["ids"], r.kd["mask"], 1, with_grad=True)
        kd = grpo.kd_loss(r.kd["teacher_logits"], student, r.kd["mask"])
        loss = loss + tc.lambda_kd * kd
        stats["kd"] = float(kd.detach())
    if first_iteration:
        m = r.mask.float()
        stats["entropy"] = float((ent.detach() * m).sum() / m.sum().clamp(min=1))
    return loss, stats


# ================================================================== helpers: distributed, metrics, eval
def _all_reduce_grads(accelerator, params: list[torch.nn.Parameter]) -> None:
    """Average gradients over ranks in one collective (what DDP would do)."""
    if accelerator.num_processes == 1:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    flat /= accelerator.num_processes
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset:offset + n].view_as(g).clone()
        offset += n


def _any_rank(accelerator, flag: bool) -> bool:
    """True on every rank when ``flag`` is True on any rank (collective: every rank must call it)."""
    if accelerator.num_processes == 1:
        return bool(flag)
    return bool(accelerator.gather(torch.tensor([int(flag)], device=accelerator.device)).max().item())


def _mean_over_ranks(accelerator, values: dict[str, float]) -> dict[str, float]:
    """Average a dict of floats over ranks (same keys on every rank; NaN-aware)."""
    if accelerator.num_processes == 1 or not values:
        return values
    keys = sorted(values)
    x = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=accelerator.device)
    g = accelerator.gather(x.unsqueeze(0)).reshape(accelerator.num_processes, -1)
    return {k: float(np.nanmean(g[:, i].cpu().numpy())) if not torch.isnan(g[:, i]).all() else float("nan")
            for i, k in enumerate(keys)}


def _mean_std(prefix: str, x: torch.Tensor) -> dict[str, float]:
    x = x.float()
    return {f"{prefix}_mean": float(x.mean()), f"{prefix}_std": float(x.std()) if x.numel() > 1 else 0.0}


def rollout_metrics(rolls: list[Rollout], cfg) -> dict[str, float]:
    """Reward components, where GRPO alone has no signal, and what the teacher does there."""
    G = cfg.train.num_generations
    out: dict[str, float] = {}
    names = sorted({k for r in rolls for k in r.rewards if not k.startswith("_")})
    for k in names:
        out.update(_mean_std(f"reward_{k}", torch.cat([r.rewards[k] for r in rolls])))
    acc = torch.cat([r.rewards["accuracy"] for r in rolls]).view(-1, G)
    equal = (acc.max(1).values - acc.min(1).values) == 0
    out["frac_groups_acc_equal"] = float(equal.float().mean())
    # The teacher's share of the update: its reward bonus (total minus the answer rewards), plus the
    # per-token credit. In all-equal groups GRPO has no signal; does the teacher term still vary?
    w = cfg.train.reward_weights
    total = torch.cat([r.rewards["total"] for r in rolls]).view(-1, G)
    fmt = torch.cat([r.rewards["format"] for r in rolls]).view(-1, G)
    bonus = total - float(w.get("accuracy", 0)) * acc - float(w.get("format", 0)) * fmt
    varies = bonus.std(1) > 1e-6
    if cfg.teacher.token_credit and rolls[0].teacher_logp is not None:
        credit = torch.cat([((r.teacher_logp - r.behaviour_logp) * r.mask).sum(1) / r.mask.sum(1).clamp(min=1)
                            for r in rolls]).view(-1, G)
        varies = varies | (credit.std(1) > 1e-6)
    teacher_used = cfg.teacher.enabled or cfg.teacher.token_credit
    out["frac_equal_groups_teacher_varies"] = (float(varies[equal].float().mean()) if teacher_used and equal.any()
                                               else float("nan"))
    if "consistency" in rolls[0].rewards:
        c = torch.cat([r.rewards["consistency"] for r in rolls]).view(-1, G)
        out["consistency_within_group_std"] = float(c.std(1).mean())
    lengths = torch.cat([r.mask.sum(1).float() for r in rolls])
    out["completion_length"] = float(lengths.mean())
    out["snr_mean"] = float(np.mean([e.snr for r in rolls for e in r.examples]))
    return out


def greedy_eval(model, examples: list[Example], cfg, accelerator) -> dict[str, float]:
    """Clean and noisy greedy accuracy (and invalid share) on fixed val examples, sharded over ranks."""
    mine = examples[accelerator.process_index::accelerator.num_processes]
    counts = torch.zeros(5, dtype=torch.float64, device=accelerator.device)  # n, clean ok, noisy ok, clean inv, noisy inv
    bs = max(1, cfg.eval.batch_size)
    for i in range(0, len(mine), bs):
        chunk = mine[i:i + bs]
        prompts = [e.prompt for e in chunk]
        for j, wavs in ((1, [e.clean for e in chunk]), (2, [e.noisy for e in chunk])):
            comp = model.generate(model.build_inputs(prompts, wavs), 1, max_new_tokens=cfg.eval.max_new_tokens,
                                  do_sample=False)
            for e, text in zip(chunk, comp.texts):
                ans = R.extract_choice(text, e.choices)
                counts[j] += float(ans == e.target)
                counts[j + 2] += float(ans is None)
        counts[0] += len(chunk)
    if accelerator.num_processes > 1:
        counts = accelerator.reduce(counts, reduction="sum")
    n = max(float(counts[0]), 1.0)
    return {"val_clean_acc": float(counts[1]) / n, "val_noisy_acc": float(counts[2]) / n,
            "val_clean_invalid": float(counts[3]) / n, "val_noisy_invalid": float(counts[4]) / n,
            "val_items": float(counts[0])}


class PhaseTimer:
    """Seconds per named phase, summed over the micro-batches of one step."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0


def _log(accelerator, msg: str) -> None:
    if accelerator.is_main_process:
        print(f"[echodistill] {msg}", file=sys.stderr, flush=True)


def _make_accelerator(cfg):
    from accelerate import Accelerator

    log_with = cfg.run.log_with or None
    if log_with == "tensorboard":
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            log_with = None
    acc = Accelerator(gradient_accumulation_steps=cfg.train.gradient_accumulation_steps, log_with=log_with,
                      project_dir=cfg.run.output_dir, cpu=cfg.run.device == "cpu")
    if acc.distributed_type.value in ("FSDP", "DEEPSPEED", "MEGATRON_LM", "XLA"):
        raise ConfigError(f"accelerate distributed_type {acc.distributed_type.value} is not supported by the trainer "
                          "yet; use a DDP config (configs/accelerate/ddp_cpu.yaml or ddp_gpu.yaml), with LoRA for "
                          "large models")
    return acc


# ================================================================== the loop
def run_train(cfg, resume: bool = False) -> Path:
    """Train ``cfg.train.variant`` on ``cfg.data.train_manifest``; return ``<output_dir>/final``."""
    from accelerate.utils import set_seed
    from transformers import get_scheduler
    from tqdm.auto import tqdm

    from ..audio.noise import NoiseBank
    from ..data.manifest import read_manifest, seeded_subset
    from ..models import load_adapter

    t, out = cfg.train, Path(cfg.run.output_dir)
    accelerator = _make_accelerator(cfg)
    rank, world = accelerator.process_index, accelerator.num_processes
    if accelerator.device.type == "cpu":
        torch.set_num_threads(max(1, int(cfg.run.num_threads)))

    # ---- setup: resolved config, data, noise, model, optimizer, schedule
    ckpt = latest_checkpoint(out) if resume else None
    if not resume and latest_checkpoint(out) is not None:
        raise UserError(f"{out} already holds checkpoints: pass --resume to continue that run, "
                        "or set run.output_dir to a new folder")
    if resume and ckpt is None:
        _log(accelerator, f"--resume: no checkpoint in {out}; starting from step 0")
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    set_seed(cfg.run.seed)  # LoRA init and anything else drawn at load time: the same on every rank
    train_items = read_manifest(cfg.data.train_manifest, path_map=dict(cfg.data.path_map))
    bank = NoiseBank(cfg.noise.noise_dir if Path(cfg.noise.noise_dir).is_dir() else None,
                     list(cfg.noise.extra_noise_paths))
    bank.check(list(cfg.noise.train_types))
    stream = ItemStream(train_items, t.prompts_per_device, world, rank, cfg.run.seed)
    val_examples: list[Example] = []
    if t.eval_steps > 0 and t.eval_items > 0 and Path(cfg.data.val_manifest).is_file():
        val_items = seeded_subset(read_manifest(cfg.data.val_manifest, path_map=dict(cfg.data.path_map)),
                                  t.eval_items, cfg.eval.noise_seed)  # every task, not the file's first ones
        val_examples = eval_examples(val_items, cfg, bank, cfg.eval.noise_seed)

    model = load_adapter(cfg.model, path=t.init_from or None, train=True)
    model.gradient_checkpointing = bool(t.gradient_checkpointing)
    if cfg.model.device_map is None:
        model.to(accelerator.device)
    params = model.trainable_parameters()
    if not params:
        raise ConfigError("the model has no trainable parameter (everything frozen?): check model.lora and "
                          "model.freeze_audio_encoder")
    optimizer = torch.optim.AdamW(params, lr=t.learning_rate, weight_decay=t.weight_decay)
    total_updates = t.max_steps * t.num_iterations
    scheduler = get_scheduler(t.lr_scheduler_type, optimizer, num_warmup_steps=math.ceil(t.warmup_ratio * total_updates),
                              num_training_steps=total_updates)

    step, position = 0, 0  # optimizer steps done; micro-batches of the item stream consumed
    if ckpt is not None:
        state = load_checkpoint(ckpt, accelerator=accelerator, model=model.model, optimizer=optimizer, scheduler=scheduler)
        step, position = int(state["step"]), int(state["position"])
        _log(accelerator, f"resumed from {ckpt} (step {step})")
    metrics_path = out / "metrics.jsonl"
    if accelerator.is_main_process:
        _truncate_metrics(metrics_path, step)
    if accelerator.log_with:
        accelerator.init_trackers("tensorboard", config=_flat_hparams(to_dict(cfg)))

    def checkpoint():
        save_checkpoint(out, step, accelerator=accelerator, model=model.model, save_model=model.save,
                        optimizer=optimizer, scheduler=scheduler, state={"position": position}, keep=2)

    bar = tqdm(total=t.max_steps, initial=step, disable=not accelerator.is_main_process, desc=t.variant,
               dynamic_ncols=True)
    started = time.time()
    while step < t.max_steps:
        timer = PhaseTimer()
        rolls: list[Rollout] = []
        skipped: list[str] = []
        encoder_clips, empty_in_a_row = model.encoder_clips, 0
        while len(rolls) < t.gradient_accumulation_steps:
            # ---- phase 1: noise (load clips, draw noise); all ranks agree before any skip
            with timer("noise"):
                examples, bad = load_examples(stream.batch(position), cfg, bank, position)
                skipped += bad
                skip = _any_rank(accelerator, len(examples) == 0)
            position += 1
            if skip:  # some rank has nothing usable: every rank drops this micro-batch together
                empty_in_a_row += 1
                if empty_in_a_row > max(100, len(train_items)):  # the same decision on every rank
                    raise UserError(f"{cfg.data.train_manifest}: {empty_in_a_row} micro-batches in a row had no "
                                    f"usable audio (last: {bad[-1] if bad else '?'}); run `echodistill data check`")
                continue
            empty_in_a_row = 0
            # ---- phase 2: rollout (student, noisy audio)
            with timer("rollout"):
                r = rollout(model, examples, cfg, _generator(model.device, cfg.run.seed, "rollout", position, rank))
            # ---- phase 3: teacher scoring (frozen teacher, clean audio)
            with timer("teacher"):
                teacher_scoring(model, r, cfg)
            # ---- phase 4: rewards and advantages
            with timer("rewards"):
                compute_rewards(r, cfg)
                compute_advantages(r, cfg)
            rolls.append(r)
        for msg in skipped:
            print(f"[echodistill] rank {rank}: skipped bad item {msg}", file=sys.stderr, flush=True)

        # ---- phase 5: update (num_iterations passes; accumulation over micro-batches; ranks averaged)
        with timer("update"):
            num_tokens = None
            if t.loss_type == "dapo":  # global token count (all ranks and micro-batches), per rank share
                local = sum(float(r.mask.sum()) for r in rolls)
                num_tokens = float(accelerator.reduce(torch.tensor(local, device=accelerator.device), "sum")) / world
            stats: dict[str, list[float]] = {}
            grad_norms, losses = [], []
            for it in range(t.num_iterations):
                for r in rolls:
                    loss, s = micro_loss(model, r, cfg, first_iteration=it == 0, num_tokens=num_tokens)
                    scale = 1.0 if t.loss_type == "dapo" else 1.0 / len(rolls)
                    (loss * scale).backward()
                    losses.append(float(loss.detach()))
                    for k, v in s.items():
                        stats.setdefault(k, []).append(v)
                _all_reduce_grads(accelerator, params)
                grad_norms.append(float(torch.nn.utils.clip_grad_norm_(params, t.max_grad_norm)))
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
        step += 1

        # ---- what users watch: metrics JSONL, TensorBoard, progress bar, periodic val eval
        m = rollout_metrics(rolls, cfg)
        m.update({k: float(np.mean(v)) for k, v in stats.items() if k != "num_tokens"})
        m.update(loss=float(np.mean(losses)), grad_norm=float(np.mean(grad_norms)))
        m.update({f"time_{k}": v for k, v in timer.seconds.items()})
        m["skipped_items"] = float(len(skipped))
        m["encoder_clips"] = float(model.encoder_clips - encoder_clips)  # audio encodings this step (all phases)
        m = _mean_over_ranks(accelerator, m)
        m["skipped_items"] *= world  # a count: summed over ranks, not averaged
        m.update(step=step, epoch=stream.epoch_of(position - 1), lr=scheduler.get_last_lr()[0],
                 time_step=sum(timer.seconds[k] for k in ("noise", "rollout", "teacher", "rewards", "update")
                               if k in timer.seconds))
        if val_examples and (step % t.eval_steps == 0 or step == t.max_steps):
            t0 = time.perf_counter()
            m.update(greedy_eval(model, val_examples, cfg, accelerator))
            m["time_eval"] = time.perf_counter() - t0
        if accelerator.is_main_process and (step % max(1, t.logging_steps) == 0 or step == t.max_steps):
            with open(metrics_path, "a") as f:
                f.write(json.dumps(m) + "\n")
        if accelerator.log_with:
            accelerator.log({k: v for k, v in m.items() if isinstance(v, (int, float)) and math.isfinite(v)}, step=step)
        bar.set_postfix(reward=f"{m['reward_total_mean']:.3f}", acc=f"{m['reward_accuracy_mean']:.2f}",
                        refresh=False)
        bar.update(1)

        # ---- checkpoints (atomic); a wall-clock cap stops every rank at the same step
        out_of_time = t.max_minutes > 0 and (time.time() - started) / 60 > t.max_minutes
        stop = _any_rank(accelerator, out_of_time)
        if step % max(1, t.save_steps) == 0 or step == t.max_steps or stop:
            checkpoint()
        if stop:
            _log(accelerator, f"train.max_minutes={t.max_minutes} reached at step {step}; stopping")
            break
    bar.close()

    # ---- final: a loadable model dir (adapter or full weights, HF format)
    final = out / "final"
    if accelerator.is_main_process:
        model.save(final)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return final


def _truncate_metrics(path: Path, step: int) -> None:
    """On resume, drop metric rows past the checkpoint (they are recomputed); on a fresh run, start empty."""
    if step == 0 or not path.is_file():
        path.unlink(missing_ok=True)
        return
    keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line).get("step", 0) <= step]
    path.write_text("".join(line + "\n" for line in keep))


def _flat_hparams(d: dict, prefix: str = "") -> dict:
    """TensorBoard hparams take scalars only: flatten nested keys, stringify lists and None."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat_hparams(v, key + "."))
        elif isinstance(v, (int, float, str, bool)):
            out[key] = v
        else:
            out[key] = str(v)
    return out


__all__ = ["run_train", "Rollout", "rollout", "teacher_scoring", "compute_rewards", "compute_advantages",
           "micro_loss", "greedy_eval", "rollout_metrics", "completion_logits"]
