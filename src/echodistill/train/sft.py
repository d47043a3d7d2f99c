"""Supervised warm-up (clean) and the ``sft-noisy`` baseline: ``echodistill warmup``.

Teacher-forced cross-entropy on the completion tokens only. The completion is
``target_text(target, evidence, data.response_format)`` followed by the backbone's end-of-turn token
(``adapter.end_of_turn_id``): the target choice's text (``answer`` format), or
``<think>EVIDENCE</think><answer>TARGET</answer>`` (``reasoning``: the item's evidence, what the clean clip
contains; items without one are left out). The prompt is built exactly as at RL and evaluation time
(``format_question(question, ordered_choices(item, data.choice_seed), data.response_format)`` in the
adapter's chat template, from ``build_inputs``), so the warmed-up model answers in the format the
shared parser reads.

Trainable: projector + language model (audio encoder frozen), or with ``model.lora.enabled`` the LoRA
parameters only.

Speed: the frozen encoder's output is **cached per clip** (``warmup.cache_audio``; needs a family with
a separate projector, else it encodes each batch) in the model's feature-cache service
(``adapter.features``, pinned: kept every epoch), the store the RL teacher reads its clean clips
from: clean warm-up encodes each distinct clip once, then only the projector and the LM run. ``warmup.noisy=true`` (sft-noisy)
trains on noisy mixes (type from ``noise.train_types``, SNR uniform in ``noise.train_snr_min..max``),
seeded per (run.seed, item, version) with ``version = epoch % warmup.noise_versions``: K pre-drawn
noisy versions per item, each encoded once (``noise_versions=0``: a fresh draw every epoch, no cache).

The loop, schedule, evaluation, logging and checkpoints are ``train/loop.py``'s skeleton (shared with
GRPO); this module holds what differs: the data rows, the audio cache and the per-batch loss.

Output in ``run.output_dir``: ``config.yaml`` (resolved), ``metrics.jsonl`` (rows every
``warmup.logging_steps`` steps; greedy val accuracy clean and noisy on the fixed val examples every
``warmup.eval_steps`` steps and at step 0), ``checkpoint-<step>/`` every ``warmup.save_steps`` steps and
at the end (``run_warmup(cfg, resume=True)`` / ``echodistill warmup --resume`` continue from the
newest), ``final/`` (the adapter's HF-format save), ``summary.json``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..audio.noise import NoiseBank, draw_noisy, seeded_rng
from ..data.labels import select_items, write_label_sheet
from ..data.manifest import Item, read_manifest
from ..data.prompts import format_question, ordered_choices, target_text
from ..data.validate import usable_training_items
from ..errors import UserError
from ..models.audio_path import encoder_fingerprint
from .data import load_clip
from .loop import PhaseTimer, Recipe, val_examples


# ---------------------------------------------------------------- small helpers
def item_prompt(item: Item, choice_seed: int, response_format: str = "answer") -> tuple[str, list[str]]:
    """(user text, shown choices) exactly as at RL / evaluation time."""
    choices = ordered_choices(item, choice_seed)
    return format_question(item.question, choices, response_format), choices


def completion_ids(adapter: Any, target: str) -> list[int]:
    """Token ids of the supervised completion: the target text (``target_text``) + the end-of-turn token."""
    ids = adapter.tokenizer(target, add_special_tokens=False)["input_ids"]
    return list(ids) + [int(adapter.end_of_turn_id)]


class AudioCache:
    """What the warm-up remembers per row, beside the model's feature cache (which holds the encodings).

    ``prompt[item_id]``: unpadded prompt token ids (list[int]); ``clip[row clip key]``: the row's
    audio in the model's feature cache (``adapter.features.clips`` key; its encoder output frames
    [n, H] are pinned there). ``encoded``: number of clips put through the encoder.
    """

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.prompt: dict[str, list[int]] = {}
        self.clip: dict[Any, tuple[str, str]] = {}
        self.encoded = 0

    def hidden(self, adapter: Any, row_key: Any) -> Optional[torch.Tensor]:
        """The encoder output [n, H] of the row's clip, or None when not encoded yet."""
        key = self.clip.get(row_key)
        return adapter.features.clips.get(key) if key is not None else None


@dataclass
class _Row:
    item: Item
    clip_key: Any  # key of the audio actually heard: ("clean", path) or ("noisy", path, id, version)
    wav_fn: Any  # () -> np.ndarray waveform heard


class WarmupData:
    """Turns items into the rows of one step: clean or noisy audio, seeded per item and version."""

    def __init__(self, cfg: Any, items: list[Item]):
        self.cfg = cfg
        self.items = items
        self.noisy = bool(cfg.warmup.noisy)
        self._wav: dict[str, np.ndarray] = {}
        self.bank: Optional[NoiseBank] = None
        if self.noisy:
            self.bank = NoiseBank(cfg.noise.noise_dir, extra_paths=list(cfg.noise.extra_noise_paths))
            self.bank.check(list(cfg.noise.train_types))

    def clean(self, item: Item) -> np.ndarray:
        if item.audio not in self._wav:
            self._wav[item.audio] = load_clip(item.audio, self.cfg.data.min_duration_s, self.cfg.data.max_duration_s,
                                              self.cfg.data.long_audio)  # the shared check (data/validate.py)
        return self._wav[item.audio]

    def noisy_wav(self, item: Item, version: int) -> np.ndarray:
        c = self.cfg
        rng = seeded_rng(c.run.seed, "sft-noisy", item.id, version)
        return draw_noisy(self.clean(item), self.bank, list(c.noise.train_types), rng,
                          snr_range=(c.noise.train_snr_min, c.noise.train_snr_max)).noisy

    def row(self, item: Item, epoch: int) -> _Row:
        if not self.noisy:
            return _Row(item, ("clean", item.audio), lambda: self.clean(item))
        k = self.cfg.warmup.noise_versions
        version = epoch % k if k > 0 else epoch
        key = ("noisy", item.audio, item.id, version)
        return _Row(item, key, lambda: self.noisy_wav(item, version))

    def order(self, epoch: int) -> list[int]:
        rng = seeded_rng(self.cfg.run.seed, "warmup-order", epoch)
        return [int(i) for i in rng.permutation(len(self.items))]


# ---------------------------------------------------------------- the forward pass
def _encoder_frozen(adapter: Any) -> bool:
    return not any(p.requires_grad for p in adapter.family.audio_encoder(adapter.hf).parameters())


def prepare_rows(adapter: Any, rows: list[_Row], cache: AudioCache, choice_seed: int, response_format: str = "answer"):
    """Prompt ids and cached encoder outputs for ``rows`` (every row has a clip key).

    One processor call for the rows whose prompt or clip is not cached yet; the encoder runs only on
    clips not seen before (a clip repeated within the step is encoded once).
    Returns (prompt_ids: list[list[int]], hidden: list[Tensor [n_i, H]]).
    """
    hidden = {r.clip_key: cache.hidden(adapter, r.clip_key) for r in rows}
    need, seen = [], set()
    for r in rows:
        k = (r.item.id, r.clip_key)
        if (r.item.id not in cache.prompt or hidden[r.clip_key] is None) and k not in seen:
            seen.add(k)
            need.append(r)
    if need:
        prompts = [item_prompt(r.item, choice_seed, response_format)[0] for r in need]
        batch = adapter.build_inputs(prompts, [r.wav_fn() for r in need])
        am = batch["attention_mask"]
        for j, r in enumerate(need):
            cache.prompt[r.item.id] = batch["input_ids"][j][am[j].bool()].tolist()
        todo, keys = [], []
        for j, r in enumerate(need):
            if hidden[r.clip_key] is None and r.clip_key not in keys:
                todo.append(j)
                keys.append(r.clip_key)
        if todo:  # into the model's feature cache, pinned: the RL teacher reuses these encodings (clean clips)
            cache.encoded += len(todo)
            encoder_key = encoder_fingerprint(adapter.family, adapter.features, adapter.hf)
            clip_keys = adapter.features.clip_keys(batch)
            for j, key, part in zip(todo, keys, adapter.encoder_output(batch, todo, pin=True)):
                cache.clip[key] = (encoder_key, clip_keys[j])
                hidden[key] = cache.hidden(adapter, key)
    return [cache.prompt[r.item.id] for r in rows], [hidden[r.clip_key] for r in rows]


def sft_forward(adapter: Any, prompt_ids: list[list[int]], targets: list[list[int]],
                audio_feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher-forced loss on the completion tokens.

    ``prompt_ids``: B unpadded prompts (with their audio placeholders); ``targets``: B completion ids;
    ``audio_feats``: projected features [n_placeholders_total, D] in prompt order.
    Returns (mean token cross-entropy, per-row exact-match [B] bool of the argmax on every token).
    """
    m = adapter.active_model
    dev = adapter.device
    seqs = [p + t for p, t in zip(prompt_ids, targets)]
    length = max(len(s) for s in seqs)
    pad = adapter.pad_token_id
    ids = torch.full((len(seqs), length), pad, dtype=torch.long)
    am = torch.zeros((len(seqs), length), dtype=torch.long)
    lab = torch.zeros((len(seqs), length), dtype=torch.bool)  # positions whose token is supervised
    for i, (s, t) in enumerate(zip(seqs, targets)):
        ids[i, length - len(s):] = torch.tensor(s)
        am[i, length - len(s):] = 1
        lab[i, length - len(t):] = True
    ids, am, lab = ids.to(dev), am.to(dev), lab.to(dev)
    emb = adapter.text_model(m).get_input_embeddings()(ids)
    ph = ids == adapter.audio_token_id
    if int(ph.sum()) != audio_feats.shape[0]:
        raise ValueError(f"audio placeholders ({int(ph.sum())}) and features ({audio_feats.shape[0]}) differ")
    emb = emb.masked_scatter(ph.unsqueeze(-1), audio_feats.to(emb.dtype))
    h = adapter.hidden_states(emb, am)
    sel = lab[:, 1:]  # hidden at t-1 predicts token t
    logits = adapter.lm_head(m)(h[:, :-1][sel]).float()
    gold = ids[:, 1:][sel]
    loss = F.cross_entropy(logits, gold)
    with torch.no_grad():
        ok = (logits.argmax(-1) == gold).long()
        per_row = torch.zeros(len(seqs), dtype=torch.long, device=dev)
        rows = sel.nonzero()[:, 0]
        per_row.index_add_(0, rows, 1 - ok)
    return loss, per_row == 0


def _with_evidence(items: list[Item], manifest: str, log: Any) -> list[Item]:
    """The items that carry evidence (the reasoning format's target states it); none is a UserError."""
    kept = [it for it in items if it.evidence]
    if not kept:
        raise UserError(f"{manifest}: no item has an `evidence` field (what the clip contains), which the "
                        "reasoning format's warm-up teaches the model to state; add it to the manifest (`echodistill "
                        "data build` writes it) or train with data.response_format=answer")
    if len(kept) < len(items):
        log(f"warmup: {len(items) - len(kept)} of {len(items)} items have no evidence and are left out "
            f"(first: {next(it.id for it in items if not it.evidence)})")
    return kept


# ---------------------------------------------------------------- the recipe on the shared skeleton
def load_warmup_model(cfg: Any) -> Any:
    """The adapter a warm-up starts from: ``warmup.init_from`` (a finished stage's adapter is folded
    into the weights and a fresh one trained), else ``model.path``."""
    from ..models import load_adapter

    adapter = load_adapter(cfg.model, path=cfg.warmup.init_from or cfg.model.path, train=True)
    adapter.to(cfg.run.device if cfg.run.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    return adapter


class SFTRecipe(Recipe):
    """Teacher-forced cross-entropy on the answer tokens, on ``train/loop.py``'s skeleton.

    A step is one micro-batch of ``warmup.prompts_per_device`` items per rank (clean, or noisy with
    ``warmup.noisy``), drawn from a seeded order per epoch; rank ``r`` takes its slice of the
    ``B * world`` items of the step. The data position (epoch, pos) is the resume state.
    """

    eval_at_start = True  # the warm-up's curve starts at the initial model

    def __init__(self, cfg: Any, resume: bool = False, progress: bool = True):
        super().__init__(cfg, cfg.warmup, resume=resume, progress=progress)
        self.name = "sft-noisy" if cfg.warmup.noisy else "warmup"
        self.eval_noisy = bool(cfg.warmup.eval_noisy)
        self.epoch, self.pos = 0, 0  # data position: epoch, items of its order consumed
        self.samples = 0  # items trained on by this process (this session)
        self.recent_loss: list[float] = []
        self.recent_acc: list[float] = []

    def _setup_data(self) -> None:
        cfg, w = self.cfg, self.cfg.warmup
        path_map = dict(cfg.data.path_map) if cfg.data.path_map else None
        all_items = read_manifest(cfg.data.train_manifest, path_map=path_map, columns=dict(cfg.data.columns))
        # labeled: the teacher-to-be sees only these labels
        items = select_items(all_items, cfg, w.sft_items, supervised=True)
        if all_items:  # the checks `data check` makes: prompts that fit, long clips counted (data/validate.py)
            items = usable_training_items(items, cfg, cfg.data.train_manifest, model_path=w.init_from or None)
        if cfg.data.labeled_fraction < 1 and self.accelerator.is_main_process:
            write_label_sheet(self.out, all_items, cfg, w.sft_items)
        if not items:
            raise UserError(f"{cfg.data.train_manifest}: no training items")
        missing = [it for it in items if not Path(it.audio).is_file()]
        if missing:  # fail before training, not after minutes of it
            raise UserError(f"{cfg.data.train_manifest}: {len(missing)} item(s) have no audio file (first: "
                            f"{missing[0].id}: {missing[0].audio}); run `echodistill data check` or fix data.path_map")
        for it in items:
            if it.choices and it.target not in it.choices:  # open-ended: the target is the answer's text
                raise UserError(f"{cfg.data.train_manifest}: item {it.id}: target {it.target!r} is not a choice")
        if cfg.data.response_format == "reasoning":  # the completion states the evidence: items need one
            items = _with_evidence(items, cfg.data.train_manifest, self._log)
        self.train_items = items
        self.data = WarmupData(cfg, items)
        if w.eval_steps > 0 and cfg.data.val_manifest and Path(cfg.data.val_manifest).exists():
            bank = NoiseBank(cfg.noise.noise_dir if Path(cfg.noise.noise_dir).is_dir() else None,
                             list(cfg.noise.extra_noise_paths))
            self.val = val_examples(cfg, w.eval_items, bank)

    def _setup_model(self) -> Any:
        w = self.cfg.warmup
        adapter = load_warmup_model(self.cfg)
        self.use_cache = bool(w.cache_audio) and adapter.has_separate_projector and _encoder_frozen(adapter) \
            and not (w.noisy and w.noise_versions <= 0)
        self.cache = AudioCache(self.use_cache)
        fmt = self.cfg.data.response_format
        self.targets = {it.id: completion_ids(adapter, target_text(it.target, it.evidence, fmt))
                        for it in self.train_items}
        return adapter

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])

    def _next_batches(self, timer: PhaseTimer) -> list[list[_Row]]:
        """This rank's rows of the step: the next ``B * world`` items of the epoch order, its slice."""
        acc, B = self.accelerator, int(self.cfg.warmup.prompts_per_device)
        with timer("data"):
            order = self.data.order(self.epoch)
            idx = []
            while len(idx) < B * acc.num_processes:
                if self.pos >= len(order):
                    self.epoch += 1
                    self.pos = 0
                    order = self.data.order(self.epoch)
                take = order[self.pos:self.pos + B * acc.num_processes - len(idx)]
                idx.extend(take)
                self.pos += len(take)
            mine = idx[acc.process_index * B:(acc.process_index + 1) * B]
            return [[self.data.row(self.train_items[i], self.epoch) for i in mine]]

    def _loss_step(self, rows: list[_Row], iteration: int, ctx: Any) -> tuple[torch.Tensor, dict]:
        adapter, seed, fmt = self.model, self.cfg.data.choice_seed, self.cfg.data.response_format
        if self.use_cache:
            prompt_ids, hidden = prepare_rows(adapter, rows, self.cache, seed, fmt)
            feats = adapter.project_audio(adapter.active_model, torch.cat(hidden, 0).to(adapter.device))
        else:  # encode this step's batch (with gradients where the audio path trains)
            batch = adapter.build_inputs([item_prompt(r.item, seed, fmt)[0] for r in rows], [r.wav_fn() for r in rows])
            am = batch["attention_mask"]
            prompt_ids = [batch["input_ids"][j][am[j].bool()].tolist() for j in range(len(rows))]
            feats = adapter.audio_features(batch)
            self.cache.encoded += len(rows)
        loss, ok = sft_forward(adapter, prompt_ids, [self.targets[r.item.id] for r in rows], feats)
        self.samples += len(rows)
        self.recent_loss = (self.recent_loss + [float(loss.detach())])[-20:]
        self.recent_acc = (self.recent_acc + [float(ok.float().mean())])[-20:]
        return loss, {}

    def _step_metrics(self, batches: list, stats: dict[str, list[float]]) -> dict[str, float]:
        train_s = time.time() - self.started - self.eval_seconds
        return {"loss": float(np.mean(stats["loss"])), "grad_norm": float(np.mean(stats["grad_norm"])),
                "loss_avg": float(np.mean(self.recent_loss)), "train_acc": float(np.mean(self.recent_acc)),
                "samples_per_s": round(self.samples / max(1e-9, train_s), 2), "clips_encoded": self.cache.encoded}

    def _row_position(self) -> dict:
        return {"epoch": self.epoch}

    def _progress_postfix(self, m: dict) -> dict:
        last = self.history[-1]["val_clean_acc"] if self.history else None
        return {"loss": f"{m['loss_avg']:.3f}", "acc": f"{m['train_acc']:.2f}",
                "val": f"{last:.2f}" if last is not None else "-"}

    def summary(self) -> dict:
        train_s = time.time() - self.started - self.eval_seconds
        audio = self.model.family.audio_modules(self.model.hf)[1:]
        return {"epochs": self.epoch + self.pos / max(1, len(self.train_items)), "samples": self.samples,
                "samples_per_s": round(self.samples / max(1e-9, train_s), 2), "clips_encoded": self.cache.encoded,
                "audio_cache": self.use_cache,
                "projector_trains": any(p.requires_grad for mod in audio for p in mod.parameters()),
                "final_loss": float(np.mean(self.recent_loss)) if self.recent_loss else None}


def run_warmup(cfg: Any, resume: bool = False, *, progress: bool = True) -> dict:
    """Supervised warm-up (or sft-noisy with ``warmup.noisy``); returns summary.json's content.

    ``resume``: continue from the newest ``checkpoint-<step>/`` in ``run.output_dir`` (weights,
    optimizer, schedule, RNG, data position), as ``run_train`` does.
    """
    recipe = SFTRecipe(cfg, resume=resume, progress=progress).setup()
    recipe.train()
    return recipe.final_summary


__all__ = ["run_warmup", "SFTRecipe", "sft_forward", "prepare_rows", "completion_ids", "item_prompt",
           "AudioCache", "WarmupData", "load_warmup_model"]
