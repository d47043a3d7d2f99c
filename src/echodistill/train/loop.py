"""One training skeleton for every kind of training: the supervised warm-up / sft-noisy and the GRPO variants.

torchtune's recipe shape. ``Recipe.setup()`` runs the ``_setup_*`` steps in one fixed order,
``Recipe.train()`` runs the loop, and a recipe (``sft.SFTRecipe``, ``trainer.GRPORecipe``) fills in only
what differs between kinds of training:

    _setup_data()                    training items, their batch stream, the val examples
    _setup_model()                   the adapter to train (which weights it starts from)
    _next_batches(timer)             the micro-batches of one optimizer step (GRPO: noise, rollout,
                                     teacher scoring, rewards, advantages)
    _loss_step(batch, it, ctx)       the per-batch loss, with gradients -> (loss, stats)
    _step_metrics(batches, stats)    what a metrics row reports about the step
    state_dict() / load_state_dict() the recipe's data position (JSON), for exact resume

Everything else lives here once: accelerate, seeding, AdamW on the trainable parameters, the LR
schedule (transformers' ``get_scheduler``, for every recipe), the update (``num_iterations`` passes over the step's micro-batches,
gradients averaged over micro-batches and ranks, clipping), periodic greedy evaluation
(``greedy_accuracy``: the eval command's predictor), metrics.jsonl + tracker + tqdm, atomic checkpoints
and resume through ``checkpoint.py``, the final save and ``summary.json``.

Exact resume: every random draw of a recipe is a pure function of (seed, position, rank), the RNG
states, optimizer and schedule are in the checkpoint, so a killed-and-resumed run ends with the
same weights as an uninterrupted one (tests/test_resume.py, for GRPO and the warm-up).

Faults: an update whose loss or gradient norm is not finite changes no weight (skipped, counted in
the metrics row as ``nonfinite_skipped``); ``run.max_nonfinite_updates`` in a row stop the run with one
line, and a checkpoint is never written from non-finite weights. SIGTERM (what a scheduler sends
before it kills) finishes the current step, saves a checkpoint, says which step ``--resume``
continues from and exits with 143.

Distributed (``distributed.Engine``): one process, DDP (accelerate's ``prepare``) or FSDP2 (our
``fully_shard``). Every loss with gradients runs through the prepared module's forward
(``engine.loss``), gradients are synced on the last micro-batch of an update (``engine.no_sync``),
clipped over all shards; no-grad phases (rollout, teacher, evaluation) run inside
``engine.inference()`` (FSDP2: all-gathered once, nothing collective inside, so ranks may decode
different numbers of tokens); checkpoints under FSDP2 keep the optimizer in per-rank shards.
DeepSpeed is refused (configs/accelerate/deepspeed_zero2.yaml says why).
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from ..config import ConfigError, save_config, to_dict
from ..errors import UserError, disk_full
from ..tracking import tracker_scalars
from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .data import Example
from .distributed import Engine, load_sharded_checkpoint, save_sharded_checkpoint


# ================================================================== pure pieces
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


# ================================================================== distributed helpers
def make_accelerator(cfg: Any, gradient_accumulation_steps: int = 1):
    from accelerate import Accelerator

    from ..tracking import resolve_log_with

    log_with = resolve_log_with(cfg.run)  # run.log_with: tensorboard (default) | wandb | trackio, or several
    # The loop accumulates micro-batches itself (loss scale per micro-batch) and counts optimizer
    # steps globally: accelerate must neither divide the loss again nor step the schedule per process.
    acc = Accelerator(gradient_accumulation_steps=gradient_accumulation_steps, log_with=log_with,
                      project_dir=cfg.run.output_dir, cpu=cfg.run.device == "cpu",
                      step_scheduler_with_optimizer=False)
    if acc.distributed_type.value in ("DEEPSPEED", "MEGATRON_LM", "XLA"):
        raise ConfigError(f"accelerate distributed_type {acc.distributed_type.value} is not supported by the trainer "
                          "yet; use configs/accelerate/ddp_gpu.yaml (LoRA) or fsdp2_gpu.yaml (full fine-tuning)")
    return acc


def any_rank(accelerator, flag: bool) -> bool:
    """True on every rank when ``flag`` is True on any rank (collective: every rank must call it)."""
    if accelerator.num_processes == 1:
        return bool(flag)
    return bool(accelerator.gather(torch.tensor([int(flag)], device=accelerator.device)).max().item())


def mean_over_ranks(accelerator, values: dict[str, float]) -> dict[str, float]:
    """Average a dict of floats over ranks (same keys on every rank; NaN-aware)."""
    if accelerator.num_processes == 1 or not values:
        return values
    keys = sorted(values)
    x = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=accelerator.device)
    g = accelerator.gather(x.unsqueeze(0)).reshape(accelerator.num_processes, -1)
    return {k: float(np.nanmean(g[:, i].cpu().numpy())) if not torch.isnan(g[:, i]).all() else float("nan")
            for i, k in enumerate(keys)}


# ================================================================== periodic evaluation
def greedy_accuracy(model, examples: Sequence[Example], cfg, accelerator, *, noisy: bool = True,
                    teacher_cache: Optional[dict] = None) -> dict[str, float]:
    """Greedy val metrics, clean (and noisy), sharded over ranks; labels where there are some, label-free always.

    * ``val_clean_acc`` / ``val_noisy_acc``: accuracy over the labeled examples (NaN when none is);
      ``val_clean_invalid`` / ``val_noisy_invalid``: answers naming no choice (open-ended: empty);
    * label-free (with ``noisy``): ``val_consistency``, the student's noisy answer equal to its own clean
      answer; with ``teacher_cache`` (a dict the caller keeps: the frozen teacher's clean answers are
      computed once per run) ``val_teacher_agreement``, the student's noisy answer equal to the clean
      teacher's; both also per 5-dB SNR band (``..._snr<low edge>``).

    Answers come from the eval command's predictor (``eval.evaluate.model_predictor``: greedy decoding + the
    shared extractor) and are compared as the eval command compares them (``evaluate.answer_of``), so
    training curves and ``echodistill eval`` read answers alike. ``examples``: fixed val examples
    (``data.eval_examples``: the same noisy draw at every evaluation).
    """
    from ..data.answers import is_correct
    from ..eval.evaluate import answer_of, model_predictor

    predict = model_predictor(model, cfg.eval.max_new_tokens, response_format=cfg.data.response_format)
    rank, world = accelerator.process_index, accelerator.num_processes
    mine = list(range(len(examples)))[rank::world]
    bands = sorted({snr_band(e.snr) for e in examples})  # every rank the same layout
    # n, labeled, clean ok, noisy ok, clean invalid, noisy invalid, consistent, teacher agrees; per band: n, cons, agrees
    counts = torch.zeros(8 + 3 * len(bands), dtype=torch.float64, device=accelerator.device)
    bs = max(1, cfg.eval.batch_size)
    for i in range(0, len(mine), bs):
        chunk = [examples[k] for k in mine[i:i + bs]]
        prompts, choices = [e.prompt for e in chunk], [e.choices for e in chunk]

        def answers(wavs, by=predict):
            return [answer_of(e.choices, text, idx, cfg.data.response_format)
                    for e, (text, idx) in zip(chunk, by(prompts, choices, wavs))]

        clean = answers([e.clean for e in chunk])
        noisy_ans = answers([e.noisy for e in chunk]) if noisy else [None] * len(chunk)
        if teacher_cache is not None and noisy:
            todo = [k for k in mine[i:i + bs] if k not in teacher_cache]
            if todo:
                with model.teacher() as teacher:  # the read-only teacher view answers
                    got = answers([e.clean for e in chunk], model_predictor(teacher, cfg.eval.max_new_tokens))
                teacher_cache.update(zip(mine[i:i + bs], got))
        for k, e, a, z in zip(mine[i:i + bs], chunk, clean, noisy_ans):
            ok_clean, ok_noisy = is_correct(a, e.item.target, not e.choices), is_correct(z, e.item.target, not e.choices)
            counts[0] += 1
            if ok_clean is not None:
                counts[1] += 1
                counts[2] += float(ok_clean)
                counts[3] += float(bool(ok_noisy))
            counts[4] += float(a is None)
            counts[5] += float(z is None)
            b = 8 + 3 * bands.index(snr_band(e.snr))
            consistent = float(z is not None and z == a)
            agrees = float(teacher_cache is not None and z is not None and z == teacher_cache.get(k))
            counts[6] += consistent
            counts[7] += agrees
            counts[b:b + 3] += torch.tensor([1.0, consistent, agrees], dtype=counts.dtype, device=counts.device)
    if world > 1:
        counts = accelerator.reduce(counts, reduction="sum")
    c = counts.tolist()
    n, labeled = max(c[0], 1.0), c[1]
    acc = (lambda ok: ok / labeled) if labeled else (lambda ok: float("nan"))
    out = {"val_clean_acc": acc(c[2]), "val_clean_invalid": c[4] / n}
    if noisy:
        out.update(val_noisy_acc=acc(c[3]), val_noisy_invalid=c[5] / n, val_consistency=c[6] / n)
        if teacher_cache is not None:
            out["val_teacher_agreement"] = c[7] / n
        for j, band in enumerate(bands):
            m = max(c[8 + 3 * j], 1.0)
            out[f"val_consistency_snr{band:g}"] = c[9 + 3 * j] / m
            if teacher_cache is not None:
                out[f"val_teacher_agreement_snr{band:g}"] = c[10 + 3 * j] / m
    out["val_items"], out["val_labeled_items"] = c[0], labeled
    return out


def snr_band(snr: float, width: float = 5.0) -> float:
    """The low edge of the ``width``-dB band an SNR falls in (-3.2 -> -5, 0 -> 0, 4.9 -> 0)."""
    return float(width * math.floor(float(snr) / width))


def val_examples(cfg, eval_items: int, bank) -> list[Example]:
    """The fixed val examples of a run: a seeded subset across tasks (``eval_items``, 0 = all) of the
    val split, noisy versions drawn once with ``eval.noise_seed`` (train noise types and SNR band)."""
    from ..data.manifest import read_manifest, seeded_subset
    from .data import eval_examples

    items = seeded_subset(read_manifest(cfg.data.val_manifest, path_map=dict(cfg.data.path_map),
                                        columns=dict(cfg.data.columns)),
                          eval_items, cfg.eval.noise_seed)  # every task, not the file's first ones
    return eval_examples(items, cfg, bank, cfg.eval.noise_seed)


# ================================================================== the skeleton
class Recipe:
    """Setup, loop, evaluation, logging and checkpoints shared by every kind of training.

    ``args`` is the config section of the training kind (``cfg.warmup`` or ``cfg.train``); both
    carry the same keys for the same ideas (max_steps, max_minutes, learning_rate,
    lr_scheduler_type, warmup_ratio, weight_decay, max_grad_norm, save_steps, eval_steps,
    eval_items, logging_steps, init_from).
    """

    name = "train"  # progress-bar label and summary "mode"
    num_iterations = 1  # optimizer updates per step over the same micro-batches (GRPO's mu)
    gradient_accumulation_steps = 1  # micro-batches per optimizer update
    eval_at_start = False  # evaluate the initial model (step 0) before training
    eval_noisy = True  # periodic evaluation on noisy audio too
    val_teacher = False  # + the label-free agreement of the noisy student with the clean teacher (RL recipes)
    summed_keys: tuple = ()  # metrics that are counts: summed over ranks instead of averaged

    def __init__(self, cfg: Any, args: Any, *, resume: bool = False, progress: bool = True):
        self.cfg, self.args, self.resume, self.progress = cfg, args, resume, progress
        self.out = Path(cfg.run.output_dir)
        self.step = 0  # optimizer steps done (one step = num_iterations updates)
        self.val: list[Example] = []
        self.history: list[dict] = []
        self.stopped = "max_steps"
        self.nonfinite_skipped = 0  # updates skipped for a non-finite loss or gradient (this process's run)
        self.nonfinite_streak = 0  # ... in a row, up to the last update
        self.sigterm = False  # set by the SIGTERM handler; acted on at the end of the step
        self.teacher_val_cache: Optional[dict] = {} if self.val_teacher else None  # val index -> clean answer
        self.best: Optional[dict] = None  # {metric, value, step} of best/ (args.metric_for_best_model)

    # ------------------------------------------------------------ what a recipe provides
    def _setup_data(self) -> None:
        raise NotImplementedError

    def _setup_model(self) -> Any:
        raise NotImplementedError

    def _next_batches(self, timer: PhaseTimer) -> list:
        """The micro-batches of one optimizer step (each a recipe-defined record)."""
        raise NotImplementedError

    def _loss_step(self, batch: Any, iteration: int, ctx: Any) -> tuple[torch.Tensor, dict]:
        """Loss of one micro-batch (with gradients) and float stats to average into the metrics row."""
        raise NotImplementedError

    def _update_context(self, batches: list) -> Any:
        """Computed once per step before the update (e.g. GRPO-DAPO's global token count)."""
        return None

    def _loss_scale(self, batches: list) -> float:
        """Weight of each micro-batch's loss in the accumulated gradient (default: their mean)."""
        return 1.0 / len(batches)

    def _step_metrics(self, batches: list, stats: dict[str, list[float]]) -> dict[str, float]:
        """The step's metrics row (before ``mean_over_ranks``); default: mean of each stat."""
        return {k: float(np.mean(v)) for k, v in stats.items()}

    def _progress_postfix(self, m: dict) -> dict:
        return {}

    def _completion_rows(self, batches: list) -> tuple[list[str], list[list]]:
        """(columns, rows) of what the model produced this step (TRL's log_completions); none by default."""
        return [], []

    def state_dict(self) -> dict:
        """The recipe's data position (JSON-serialisable), saved in trainer_state.json."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def summary(self) -> dict:
        """Extra fields of summary.json."""
        return {}

    # ------------------------------------------------------------ setup
    def setup(self) -> "Recipe":
        from accelerate.utils import set_seed

        self.accelerator = make_accelerator(self.cfg)  # accumulation: our loop (_update), not accelerate's
        if self.accelerator.device.type == "cpu":
            torch.set_num_threads(max(1, int(self.cfg.run.num_threads)))
        ckpt = self._setup_output()
        set_seed(int(self.cfg.run.seed))  # LoRA init and anything else drawn at load time: the same on every rank
        self._setup_data()
        self.model = self._setup_model()
        if self.cfg.model.device_map is None:
            self.model.to(self.accelerator.device)
        # plain | ddp | fsdp2 (shards in place)
        self.engine = Engine.setup(self.accelerator, self.model, fsdp=bool(self.cfg.run.fsdp))
        if self.accelerator.num_processes > 1:
            self._log(f"{self.accelerator.num_processes} processes, student {self.engine.kind}, "
                      f"mixed precision {self.accelerator.mixed_precision}")
        self.params = self.model.trainable_parameters()
        if not self.params:
            raise ConfigError("the model has no trainable parameter (everything frozen?): check model.lora and "
                              "model.freeze_audio_encoder")
        self.optimizer = self._setup_optimizer()
        self.scheduler = self._setup_lr_scheduler()
        if not self.engine.sharded:  # FSDP2 params are our own DTensor shards: plain optimizer (bf16, no scaler)
            self.optimizer, self.scheduler = self.accelerator.prepare(self.optimizer, self.scheduler)
        if ckpt is not None:
            load = load_sharded_checkpoint if self.engine.sharded else load_checkpoint
            state = load(ckpt, accelerator=self.accelerator, model=self.model.model,
                         optimizer=self.optimizer, scheduler=self.scheduler)
            self.step = int(state["step"])
            self.load_state_dict(state)
            if (self.out / "best.json").is_file():  # the best evaluation so far stays the one to beat
                self.best = json.loads((self.out / "best.json").read_text())
            self._log(f"resumed from {ckpt} (step {self.step})")
        self._setup_logging()
        return self

    def _setup_output(self) -> Optional[Path]:
        """Refuse to mix two runs in one folder; write the resolved config; the checkpoint to resume."""
        out, acc = self.out, self.accelerator
        ckpt = latest_checkpoint(out) if self.resume else None
        if not self.resume and latest_checkpoint(out) is not None:
            raise UserError(f"{out} already holds checkpoints: pass --resume to continue that run, "
                            "or set run.output_dir to a new folder")
        if self.resume and ckpt is None and (out / "final").is_dir():
            self._log(f"--resume: {out} has a final/ but no checkpoint-<step>/ (a run from before mid-run "
                      "checkpoints): starting from step 0")
        elif self.resume and ckpt is None:
            self._log(f"--resume: no checkpoint in {out}; starting from step 0")
        if acc.is_main_process:
            out.mkdir(parents=True, exist_ok=True)
            save_config(self.cfg, out / "config.yaml")
        return ckpt

    def _setup_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.params, lr=self.args.learning_rate, weight_decay=self.args.weight_decay)

    def _setup_lr_scheduler(self):
        """Any transformers scheduler by name; warm-up steps ``ceil(warmup_ratio * updates)`` (TRL's): the
        ramp is step/W, so the first update runs at LR 0 (warm-ups before this used (step+1)/W with
        W = round(ratio * steps): the same LR after the ramp, one update's worth less LR in total)."""
        from transformers import get_scheduler

        total = self.args.max_steps * self.num_iterations
        return get_scheduler(self.args.lr_scheduler_type, self.optimizer,
                             num_warmup_steps=math.ceil(self.args.warmup_ratio * total), num_training_steps=total)

    def _setup_logging(self) -> None:
        from ..progress import progress

        self.metrics_path = self.out / "metrics.jsonl"
        if self.accelerator.is_main_process:
            truncate_metrics(self.metrics_path, self.step)
        if self.accelerator.log_with:
            from ..tracking import start_trackers
            start_trackers(self.accelerator, self.cfg.run, flat_hparams(to_dict(self.cfg)))
        # a bar on a terminal, a plain line per interval in a log (progress.py)
        self.bar = progress(self.args.max_steps, self.name, "step", initial=self.step,
                            disable=not (self.progress and self.accelerator.is_main_process))

    # ------------------------------------------------------------ the loop
    def train(self) -> Path:
        """Run to ``max_steps`` (or ``max_minutes``); checkpoints, the final model; returns ``final/``."""
        a = self.args
        self.started = time.time()
        self.eval_seconds = 0.0
        if self.eval_at_start and self.step == 0 and self._eval_due(0):
            self._write({"step": 0, **self._evaluate()})
        with self._on_sigterm():
            self._loop()
        self.bar.close()
        return self._finish()

    @contextmanager
    def _on_sigterm(self):
        """While training, SIGTERM sets a flag (the loop saves and exits at the end of the step)."""
        def handler(signum, frame):
            self.sigterm = True
            self._log(f"SIGTERM: finishing step {self.step + 1}, then saving a checkpoint (killed before that, "
                      f"--resume continues from {latest_checkpoint(self.out) or 'step 0'})")
        try:
            previous = signal.signal(signal.SIGTERM, handler)
        except ValueError:  # not the main thread: leave signals to the caller
            yield
            return
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)

    def _loop(self) -> None:
        a, acc = self.args, self.accelerator
        while self.step < a.max_steps:
            timer = PhaseTimer()
            with self.engine.inference():  # no-grad phases: FSDP2 all-gathered once, autocast
                batches = self._next_batches(timer)
            with timer("update"):
                stats = self._update(batches)
            self.step += 1
            m = mean_over_ranks(acc, self._step_metrics(batches, stats) | {f"time_{k}": v for k, v in timer.seconds.items()})
            for k in self.summed_keys:
                m[k] *= acc.num_processes
            m.update(step=self.step, lr=self.scheduler.get_last_lr()[0], nonfinite_skipped=self.nonfinite_skipped,
                     **self._row_position(),
                     time_step=sum(timer.seconds.get(k, 0.0) for k in timer.seconds))
            out_of_time = a.max_minutes > 0 and (time.time() - self.started) / 60 > a.max_minutes
            stop = any_rank(acc, out_of_time)
            last = self.step == a.max_steps or stop
            if self._eval_due(self.step) or (last and self.val):
                m.update(self._evaluate())
            if self.step % max(1, a.logging_steps) == 0 or self.step == 1 or last:
                self._write(m)
                if getattr(a, "log_completions", False):
                    self._log_completions(batches)
            if acc.log_with:
                acc.log(tracker_scalars(m), step=self.step)  # train/... and eval/..., as TRL groups them
            self.bar.set_postfix(**self._progress_postfix(m), refresh=False)
            self.bar.update(1)
            terminate = any_rank(acc, self.sigterm)
            if self.step % max(1, a.save_steps) == 0 or last or terminate:
                self._checkpoint()
            if terminate:
                self.bar.close()
                self._log(f"SIGTERM: saved {self.out / f'checkpoint-{self.step}'}; `--resume` (resume=True) "
                          f"continues from step {self.step} of {a.max_steps}; exiting")
                acc.end_training()
                raise SystemExit(143)  # 128 + SIGTERM, what the scheduler expects
            if stop:
                self.stopped = "max_minutes"
                self._log(f"max_minutes={a.max_minutes} reached at step {self.step}; stopping")
                break

    def _update(self, batches: list) -> dict[str, list[float]]:
        """``num_iterations`` passes: backward of every micro-batch's loss (weighted by ``_loss_scale``),
        gradients averaged over ranks, clipped (``max_grad_norm`` > 0), one optimizer + schedule step."""
        ctx = self._update_context(batches)
        stats: dict[str, list[float]] = {"loss": [], "grad_norm": []}
        scale = self._loss_scale(batches)
        for it in range(self.num_iterations):
            for i, b in enumerate(batches):
                # through the prepared module's forward (DDP / FSDP2 hooks); gradient sync on the last one
                with self.engine.no_sync(last=i == len(batches) - 1):
                    loss, s = self.engine.loss(lambda: self._loss_step(b, it, ctx))
                    self.accelerator.backward(loss * scale)
                stats["loss"].append(float(loss.detach()))
                for k, v in s.items():
                    stats.setdefault(k, []).append(v)
            clip = self.args.max_grad_norm if self.args.max_grad_norm > 0 else float("inf")  # inf: norm only
            norm = self.engine.clip_grad_norm_(self.params, clip)
            stats["grad_norm"].append(norm)
            losses = stats["loss"][-len(batches):]
            if any_rank(self.accelerator, not (math.isfinite(norm) and all(map(math.isfinite, losses)))):
                self._skip_nonfinite(losses, norm)
            else:
                self.nonfinite_streak = 0
                self.optimizer.step()
                self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        return stats

    def _skip_nonfinite(self, losses: list[float], norm: float) -> None:
        """A non-finite loss or gradient: no weight changes; ``run.max_nonfinite_updates`` in a row stop the run."""
        self.nonfinite_skipped += 1
        self.nonfinite_streak += 1
        limit = int(self.cfg.run.max_nonfinite_updates)
        self._log(f"step {self.step + 1}: non-finite loss {losses} or gradient norm {norm}: update skipped "
                  f"({self.nonfinite_streak} in a row, {self.nonfinite_skipped} in all; {limit} in a row stop the run)")
        if self.nonfinite_streak >= limit:
            last = latest_checkpoint(self.out)
            raise UserError(f"{limit} updates in a row had a non-finite loss or gradient (step {self.step + 1}); "
                            f"stopped before saving non-finite weights ({last or 'no checkpoint yet'} is the last "
                            "saved state): check reward plug-ins (train.reward_funcs) and lower the learning rate, "
                            "or raise run.max_nonfinite_updates")

    def _row_position(self) -> dict:
        """Where the data stream is (e.g. ``epoch``)."""
        return {}

    def _eval_due(self, step: int) -> bool:
        return bool(self.val) and self.args.eval_steps > 0 and step % self.args.eval_steps == 0

    def _evaluate(self) -> dict:
        t0 = time.perf_counter()
        with self.engine.inference():
            m = greedy_accuracy(self.model, self.val, self.cfg, self.accelerator, noisy=self.eval_noisy,
                                teacher_cache=self.teacher_val_cache)
        self._keep_best(m)
        m["time_eval"] = time.perf_counter() - t0
        self.eval_seconds += m["time_eval"]
        self.history.append({"step": self.step, **m})
        return m

    def _keep_best(self, m: dict) -> None:
        """Checkpoint selection (``metric_for_best_model``, TRL/transformers' name): the weights of the best
        evaluation so far in ``<output_dir>/best/`` (loadable like final/), its step and value in best.json."""
        key, acc = str(self.args.metric_for_best_model or ""), self.accelerator
        if not key:
            return
        if key not in m:
            section = "train" if self.args is self.cfg.train else "warmup"
            raise ConfigError(f"{section}.metric_for_best_model={key!r} is not a validation metric of this run; "
                              f"choose one of {', '.join(sorted(k for k in m if k.startswith('val_')))}")
        value = float(m[key])
        better = self.best is None or (value > self.best["value"] if self.args.greater_is_better
                                       else value < self.best["value"])
        if not math.isfinite(value) or not better:
            return
        self.best = {"metric": key, "value": value, "step": self.step}
        best, partial = self.out / "best", self.out / "best.partial"
        with self.engine.full_weights():
            if acc.is_main_process:
                shutil.rmtree(partial, ignore_errors=True)
                self.model.save(partial)
                shutil.rmtree(best, ignore_errors=True)
                partial.rename(best)
                (self.out / "best.json").write_text(json.dumps(self.best, indent=1))
        acc.wait_for_everyone()

    def _log_completions(self, batches: list) -> None:
        """This process's completions of the step to ``completions.jsonl`` (main process) and the trackers."""
        from ..tracking import log_table

        columns, rows = self._completion_rows(batches)
        if not rows:
            return
        if self.accelerator.is_main_process:
            with open(self.out / "completions.jsonl", "a") as f:
                for row in rows:
                    f.write(json.dumps({"step": self.step, **dict(zip(columns, row))}) + "\n")
        if self.accelerator.log_with:
            log_table(self.accelerator, "completions", ["step", *columns], [[self.step, *r] for r in rows], self.step)

    def _write(self, row: dict) -> None:
        if self.accelerator.is_main_process:
            with open(self.metrics_path, "a") as f:
                f.write(json.dumps(row) + "\n")

    def _checkpoint(self) -> None:
        local = [getattr(p, "to_local", lambda: p)().detach() for p in self.params]  # FSDP2: this rank's shards
        if any_rank(self.accelerator, not all(bool(torch.isfinite(t).all()) for t in local)):
            raise UserError(f"step {self.step}: the weights hold NaN or inf; not saving them over "
                            f"{latest_checkpoint(self.out) or 'nothing'}: lower the learning rate and resume")
        last = latest_checkpoint(self.out)
        with disk_full(self.out, f"checkpoint-{self.step}", [self.out / f".tmp-checkpoint-{self.step}"],
                       f"--resume continues from {last.name if last else 'step 0'}"):
            self._save_checkpoint()

    def _save_model(self, folder: Path) -> None:
        """The HF-format model of a checkpoint, its metadata with ``${oc.env:...}`` values masked."""
        from ..card import _mask_meta
        self.model.save(folder)
        _mask_meta(Path(folder))

    def _save_checkpoint(self) -> None:
        if self.engine.sharded:  # full weights gathered for model/ and trainable.safetensors, optimizer in shards
            with self.engine.full_weights():
                save_sharded_checkpoint(self.out, self.step, accelerator=self.accelerator, model=self.model.model,
                                        save_model=self._save_model, optimizer=self.optimizer,
                                        scheduler=self.scheduler, state=self.state_dict(), keep=2)
            return
        save_checkpoint(self.out, self.step, accelerator=self.accelerator, model=self.model.model,
                        save_model=self._save_model, optimizer=self.optimizer, scheduler=self.scheduler,
                        state=self.state_dict(), keep=2)

    def _finish(self) -> Path:
        """The final loadable model dir (adapter or full weights, HF format) and summary.json."""
        # written aside and renamed when complete: a kill during the save never leaves a partial final/
        final, partial = self.out / "final", self.out / "final.partial"
        acc = self.accelerator
        self.final_summary = None  # summary.json's content, on the main process (other ranks: None)
        with self.engine.full_weights(), disk_full(self.out, "final/", [partial], "rerun with --resume"):
            if acc.is_main_process:  # FSDP2: every rank gathers, the main process writes
                shutil.rmtree(partial, ignore_errors=True)
                self.model.save(partial)
        if acc.is_main_process:
            wall = time.time() - self.started
            summary = {"mode": self.name, "steps": self.step, "stopped": self.stopped, "wall_s": round(wall, 1),
                       "train_s": round(wall - self.eval_seconds, 1), "eval_s": round(self.eval_seconds, 1),
                       "trainable_params": int(sum(p.numel() for p in self.params)),
                       "lora": self.model.peft is not None, **self.summary(),
                       "final_eval": self.history[-1] if self.history else None, "checkpoint": str(final),
                       **({"best": {**self.best, "checkpoint": str(self.out / "best")}} if self.best else {})}
            from ..card import write_model_card
            write_model_card(partial, self.cfg, summary)  # final/README.md: base model as given, data, budget
            if final.exists():  # a rerun's final/ (os.replace cannot replace a non-empty folder)
                shutil.rmtree(final)
            partial.rename(final)
            (self.out / "summary.json").write_text(json.dumps(summary, indent=2))
            self.final_summary = summary
        acc.wait_for_everyone()
        acc.end_training()
        return final

    def _log(self, msg: str) -> None:
        if self.accelerator.is_main_process:
            bar = getattr(self, "bar", None)  # above the progress bar, not through it
            if bar is not None and not getattr(bar, "disable", True):
                bar.write(f"[echodistill] {msg}")
            else:
                print(f"[echodistill] {msg}", file=sys.stderr, flush=True)


# ================================================================== metrics file helpers
def truncate_metrics(path: Path, step: int) -> None:
    """On resume, drop metric rows past the checkpoint (they are recomputed); on a fresh run, start empty."""
    if step == 0 or not path.is_file():
        path.unlink(missing_ok=True)
        return
    keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line).get("step", 0) <= step]
    path.write_text("".join(line + "\n" for line in keep))


def flat_hparams(d: dict, prefix: str = "") -> dict:
    """TensorBoard hparams take scalars only: flatten nested keys, stringify lists and None."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat_hparams(v, key + "."))
        elif isinstance(v, (int, float, str, bool)):
            out[key] = v
        else:
            out[key] = str(v)
    return out


__all__ = ["Recipe", "PhaseTimer", "greedy_accuracy", "val_examples", "make_accelerator",
           "any_rank", "mean_over_ranks", "truncate_metrics", "flat_hparams"]
