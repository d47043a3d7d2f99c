"""Supervised warm-up (clean) and the ``sft-noisy`` baseline: ``echodistill warmup``.

Teacher-forced cross-entropy on the answer tokens only. The completion is the target choice's text
followed by the end-of-turn token (``<|im_end|>``); the prompt is built exactly as at RL and
evaluation time (``format_question(question, ordered_choices(item, data.choice_seed))`` in the
adapter's chat template, from ``build_inputs``), so the warmed-up model answers in the answer format
the shared extractor reads.

Trainable: projector + language model (audio encoder frozen), or with ``model.lora.enabled`` the LoRA
parameters only.

Speed: the frozen encoder's output is **cached per clip** (``warmup.cache_audio``; needs the adapter's
``encode_audio_hidden`` / ``project_audio`` hooks, else it encodes each batch): clean warm-up encodes
each distinct clip once, then only the projector and the LM run. ``warmup.noisy=true`` (sft-noisy)
trains on noisy mixes (type from ``noise.train_types``, SNR uniform in ``noise.train_snr_min..max``),
seeded per (run.seed, item, version) with ``version = epoch % warmup.noise_versions``: K pre-drawn
noisy versions per item, each encoded once (``noise_versions=0``: a fresh draw every epoch, no cache).

Output in ``run.output_dir``: ``config.yaml`` (resolved), ``metrics.jsonl`` (train rows every
``warmup.logging_steps`` steps; eval rows every ``warmup.eval_steps`` steps: greedy val accuracy clean
and noisy at the fixed ``eval.noise_seed``), ``final/`` (the adapter's HF-format save + the optimizer
state in ``training_state.pt`` for ``run_warmup(cfg, resume=True)``), ``summary.json``.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..audio.io import load_audio
from ..audio.noise import NoiseBank, draw_noisy, seeded_rng
from ..config import ConfigError, save_config, to_dict
from ..data.labels import select_items, write_label_sheet
from ..data.manifest import Item, read_manifest
from ..data.prompts import format_question, ordered_choices
from ..data.validate import usable_training_items
from ..errors import UserError
from .data import load_clip
from .rewards import extract_choice

STATE_FILE = "training_state.pt"


# ---------------------------------------------------------------- small helpers
def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def item_prompt(item: Item, choice_seed: int) -> tuple[str, list[str]]:
    """(user text, shown choices) exactly as at RL / evaluation time."""
    choices = ordered_choices(item, choice_seed)
    return format_question(item.question, choices), choices


def completion_ids(adapter: Any, target: str) -> list[int]:
    """Token ids of the supervised completion: the target text + the end-of-turn token."""
    tok = adapter.tokenizer
    ids = tok(target, add_special_tokens=False)["input_ids"]
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    end = im_end if isinstance(im_end, int) and im_end in adapter.eos_token_ids else adapter.eos_token_ids[0]
    return list(ids) + [int(end)]


def lr_lambda(kind: str, warmup_steps: int, total_steps: int):
    """Linear warm-up to 1, then cosine / linear decay to 0 at ``total_steps`` (or constant)."""
    def f(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        if kind == "constant":
            return 1.0
        prog = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 0.5 * (1.0 + math.cos(math.pi * prog)) if kind == "cosine" else 1.0 - prog
    return f


class AudioCache:
    """Per-clip prompt ids and frozen-encoder outputs.

    ``prompt[item_id]``: unpadded prompt token ids (list[int]); ``hidden[clip_key]``: encoder output
    frames [n, H] (CPU) for one clip. ``encoded``: number of clips put through the encoder.
    """

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.prompt: dict[str, list[int]] = {}
        self.hidden: dict[Any, torch.Tensor] = {}
        self.encoded = 0


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
def _has_hooks(adapter: Any) -> bool:
    return adapter.has_separate_projector


def _encoder_frozen(adapter: Any) -> bool:
    return not any(p.requires_grad for p in adapter.audio_encoder(adapter.hf).parameters())


def prepare_rows(adapter: Any, rows: list[_Row], cache: AudioCache, choice_seed: int):
    """Prompt ids and cached encoder outputs for ``rows`` (every row has a clip key).

    One processor call for the rows whose prompt or clip is not cached yet; the encoder runs only on
    clips not seen before (a clip repeated within the step is encoded once).
    Returns (prompt_ids: list[list[int]], hidden: list[Tensor [n_i, H]]).
    """
    need, seen = [], set()
    for r in rows:
        k = (r.item.id, r.clip_key)
        if (r.item.id not in cache.prompt or r.clip_key not in cache.hidden) and k not in seen:
            seen.add(k)
            need.append(r)
    if need:
        prompts = [item_prompt(r.item, choice_seed)[0] for r in need]
        batch = adapter.build_inputs(prompts, [r.wav_fn() for r in need])
        am = batch["attention_mask"]
        for j, r in enumerate(need):
            cache.prompt[r.item.id] = batch["input_ids"][j][am[j].bool()].tolist()
        todo, keys = [], []
        for j, r in enumerate(need):
            if r.clip_key not in cache.hidden and r.clip_key not in keys:
                todo.append(j)
                keys.append(r.clip_key)
        if todo:
            sub = {"input_features": batch["input_features"][todo],
                   "feature_attention_mask": batch["feature_attention_mask"][todo]}
            n_ph = (batch["input_ids"][todo] == adapter.audio_token_id).sum(-1).tolist()
            with torch.no_grad():
                h = adapter.encode_audio_hidden(adapter.hf, sub).detach().cpu()
            cache.encoded += len(todo)
            adapter.encoder_clips += len(todo)
            for key, part in zip(keys, torch.split(h, n_ph)):
                cache.hidden[key] = part.clone()
    return [cache.prompt[r.item.id] for r in rows], [cache.hidden[r.clip_key] for r in rows]


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


# ---------------------------------------------------------------- evaluation
def evaluate_accuracy(adapter: Any, items: Sequence[Item], cfg: Any, *, noisy: bool = False,
                      noise_types: Optional[Sequence[str]] = None, snr: Optional[float] = None,
                      snr_range: Optional[tuple[float, float]] = None, bank: Optional[NoiseBank] = None,
                      wav_cache: Optional[dict] = None, batch_size: Optional[int] = None,
                      seed: Optional[int] = None) -> dict:
    """Greedy accuracy on ``items`` with the shared extractor.

    Clean, or noisy with a seeded draw per item (``seed`` default ``eval.noise_seed``): type from
    ``noise_types`` (default ``noise.train_types``), SNR fixed (``snr``) or uniform in ``snr_range``
    (default ``noise.train_snr_min..max``). Returns {acc, invalid, n, per_task}.
    """
    bs = batch_size or cfg.eval.batch_size
    seed = cfg.eval.noise_seed if seed is None else seed
    types = list(noise_types or cfg.noise.train_types)
    if noisy and bank is None:
        bank = NoiseBank(cfg.noise.noise_dir, extra_paths=list(cfg.noise.extra_noise_paths))
    wav_cache = {} if wav_cache is None else wav_cache
    correct = invalid = 0
    per_task: dict[str, list[int]] = {}
    for s in range(0, len(items), bs):
        chunk = items[s:s + bs]
        prompts, choices, wavs = [], [], []
        for it in chunk:
            p, ch = item_prompt(it, cfg.data.choice_seed)
            prompts.append(p)
            choices.append(ch)
            if it.audio not in wav_cache:
                wav_cache[it.audio] = load_audio(it.audio)
            w = wav_cache[it.audio]
            if noisy:
                rng = seeded_rng(seed, "eval-noise", it.id)
                kw = {"snr_levels": [snr]} if snr is not None else \
                    {"snr_range": snr_range or (cfg.noise.train_snr_min, cfg.noise.train_snr_max)}
                w = draw_noisy(w, bank, types, rng, **kw).noisy
            wavs.append(w)
        batch = adapter.build_inputs(prompts, wavs)
        out = adapter.generate(batch, 1, max_new_tokens=cfg.eval.max_new_tokens, do_sample=False)
        for it, ch, text in zip(chunk, choices, out.texts):
            k = extract_choice(text, ch)
            ok = int(k is not None and ch[k] == it.target)
            correct += ok
            invalid += int(k is None)
            per_task.setdefault(it.task, []).append(ok)
    n = max(1, len(items))
    return {"acc": correct / n, "invalid": invalid / n, "n": len(items),
            "per_task": {t: sum(v) / len(v) for t, v in sorted(per_task.items())}}


# ---------------------------------------------------------------- the loop
def _trainable_params(adapter: Any) -> list[torch.nn.Parameter]:
    return [p for p in adapter.model.parameters() if p.requires_grad]


def _eval_subset(items: list[Item], n: int, seed: int) -> list[Item]:
    if n <= 0 or n >= len(items):
        return list(items)
    rng = seeded_rng(seed, "warmup-eval-subset")
    idx = sorted(int(i) for i in rng.permutation(len(items))[:n])
    return [items[i] for i in idx]


def load_warmup_model(cfg: Any, path: Optional[str] = None) -> Any:
    from ..models import load_adapter

    src = path or cfg.warmup.init_from or cfg.model.path
    # Resuming this run's own adapter keeps training it; any other adapter is a finished stage to build on.
    adapter = load_adapter(cfg.model, path=src, train=True, fold_adapter=path is None)
    adapter.to(cfg.run.device if cfg.run.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    return adapter


def run_warmup(cfg: Any, resume: bool = False, *, progress: bool = True) -> dict:
    """Supervised warm-up (or sft-noisy with ``warmup.noisy``); returns the summary dict."""
    w = cfg.warmup
    out = Path(cfg.run.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    torch.set_num_threads(max(1, int(cfg.run.num_threads)))
    _seed_everything(int(cfg.run.seed))

    path_map = dict(cfg.data.path_map) if cfg.data.path_map else None
    all_items = read_manifest(cfg.data.train_manifest, path_map=path_map, columns=dict(cfg.data.columns))
    train_items = select_items(all_items, cfg, "labeled")  # the teacher-to-be sees only these labels
    if all_items:  # the checks `data check` makes: prompts that fit, long clips counted (data/validate.py)
        train_items = usable_training_items(train_items, cfg, cfg.data.train_manifest, model_path=w.init_from or None)
    if cfg.data.labeled_fraction < 1:
        write_label_sheet(out, all_items, cfg, "labeled")
    if not train_items:
        raise UserError(f"{cfg.data.train_manifest}: no training items")
    val_items = []
    if w.eval_steps > 0 and cfg.data.val_manifest and Path(cfg.data.val_manifest).exists():
        val_items = _eval_subset(read_manifest(cfg.data.val_manifest, path_map=path_map, columns=dict(cfg.data.columns)), w.eval_items,
                                 int(cfg.run.seed))

    state_path = out / "final" / STATE_FILE
    resume = bool(resume) and state_path.is_file()
    adapter = load_warmup_model(cfg, str(out / "final") if resume else None)
    params = _trainable_params(adapter)
    if not params:
        raise ConfigError("warmup: no trainable parameter (everything frozen?)")
    use_cache = bool(w.cache_audio) and _has_hooks(adapter) and _encoder_frozen(adapter) \
        and not (w.noisy and w.noise_versions <= 0)
    project_trains = any(p.requires_grad for mod in adapter.audio_modules(adapter.hf)[1:] for p in mod.parameters())

    opt = torch.optim.AdamW(params, lr=w.learning_rate, weight_decay=w.weight_decay)
    warm_steps = int(round(w.warmup_ratio * w.max_steps))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(w.lr_scheduler_type, warm_steps, w.max_steps))
    step, epoch, pos = 0, 0, 0
    if resume:
        st = torch.load(state_path, map_location="cpu", weights_only=False)
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        step, epoch, pos = st["step"], st["epoch"], st["pos"]
        torch.set_rng_state(st["torch_rng"])

    data = WarmupData(cfg, train_items)
    cache = AudioCache(use_cache)
    targets = {it.id: completion_ids(adapter, it.target) for it in train_items}
    missing = [it for it in train_items if not Path(it.audio).is_file()]
    if missing:  # fail before training, not after minutes of it
        raise UserError(f"{cfg.data.train_manifest}: {len(missing)} item(s) have no audio file (first: {missing[0].id}: "
                        f"{missing[0].audio}); run `echodistill data check` or fix data.path_map")
    for it in train_items:
        if it.target not in it.choices:
            raise UserError(f"{cfg.data.train_manifest}: item {it.id}: target {it.target!r} is not a choice")
    eval_bank = NoiseBank(cfg.noise.noise_dir, extra_paths=list(cfg.noise.extra_noise_paths)) \
        if val_items and w.eval_noisy else None
    eval_wavs: dict = {}

    metrics_f = open(out / "metrics.jsonl", "a" if resume else "w", encoding="utf-8")

    def log(row: dict) -> None:
        metrics_f.write(json.dumps(row) + "\n")
        metrics_f.flush()

    t0 = time.time()
    eval_time = 0.0
    history: list[dict] = []

    def do_eval() -> dict:
        nonlocal eval_time
        te = time.time()
        row = {"type": "eval", "step": step, "time_s": round(time.time() - t0, 2),
               "train_time_s": round(time.time() - t0 - eval_time, 2)}
        clean = evaluate_accuracy(adapter, val_items, cfg, wav_cache=eval_wavs)
        row.update(val_clean_acc=clean["acc"], val_clean_invalid=clean["invalid"], n=clean["n"])
        if w.eval_noisy:
            noisy = evaluate_accuracy(adapter, val_items, cfg, noisy=True, bank=eval_bank, wav_cache=eval_wavs)
            row.update(val_noisy_acc=noisy["acc"], val_noisy_invalid=noisy["invalid"])
        eval_time += time.time() - te
        row["eval_s"] = round(time.time() - te, 2)
        log(row)
        history.append(row)
        return row

    try:
        from tqdm.auto import tqdm
        bar = tqdm(total=w.max_steps, initial=step, disable=not progress, dynamic_ncols=True,
                   desc="sft-noisy" if w.noisy else "warmup")
    except ImportError:  # pragma: no cover
        bar = None

    order = data.order(epoch)
    recent_loss: list[float] = []
    recent_acc: list[float] = []
    samples = 0
    stopped = "max_steps"
    last_eval = None
    if val_items and step == 0:
        last_eval = do_eval()
    while step < w.max_steps:
        if w.max_minutes > 0 and (time.time() - t0) / 60.0 >= w.max_minutes:
            stopped = "max_minutes"
            break
        idx = []
        while len(idx) < w.prompts_per_device:
            if pos >= len(order):
                epoch += 1
                pos = 0
                order = data.order(epoch)
            take = order[pos:pos + w.prompts_per_device - len(idx)]
            idx.extend(take)
            pos += len(take)
        rows = [data.row(train_items[i], epoch) for i in idx]
        if use_cache:
            prompt_ids, hidden = prepare_rows(adapter, rows, cache, cfg.data.choice_seed)
            feats = adapter.project_audio(adapter.active_model, torch.cat(hidden, 0).to(adapter.device))
        else:  # encode this step's batch (with gradients where the audio path trains)
            prompts = [item_prompt(r.item, cfg.data.choice_seed)[0] for r in rows]
            batch = adapter.build_inputs(prompts, [r.wav_fn() for r in rows])
            am = batch["attention_mask"]
            prompt_ids = [batch["input_ids"][j][am[j].bool()].tolist() for j in range(len(rows))]
            feats = adapter.audio_features(batch)
            cache.encoded += len(rows)
        loss, ok = sft_forward(adapter, prompt_ids, [targets[r.item.id] for r in rows], feats)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if w.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, w.max_grad_norm)
        opt.step()
        sched.step()
        step += 1
        samples += len(rows)
        recent_loss = (recent_loss + [float(loss.detach())])[-20:]
        recent_acc = (recent_acc + [float(ok.float().mean())])[-20:]
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(recent_loss):.3f}", acc=f"{np.mean(recent_acc):.2f}",
                            val=f"{last_eval['val_clean_acc']:.2f}" if last_eval else "-")
        if step % max(1, w.logging_steps) == 0 or step == 1:
            train_s = time.time() - t0 - eval_time
            log({"type": "train", "step": step, "epoch": epoch, "time_s": round(time.time() - t0, 2),
                 "loss": float(loss.detach()), "loss_avg": float(np.mean(recent_loss)),
                 "train_acc": float(np.mean(recent_acc)), "lr": sched.get_last_lr()[0],
                 "samples_per_s": round(samples / max(1e-9, train_s), 2), "clips_encoded": cache.encoded})
        if val_items and w.eval_steps > 0 and step % w.eval_steps == 0:
            last_eval = do_eval()
    if bar is not None:
        bar.close()
    if val_items and (last_eval is None or last_eval["step"] != step):
        last_eval = do_eval()

    final = out / "final"
    adapter.save(final)
    torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "step": step, "epoch": epoch,
                "pos": pos, "torch_rng": torch.get_rng_state()}, final / STATE_FILE)
    wall = time.time() - t0
    train_s = wall - eval_time
    summary = {"mode": "sft-noisy" if w.noisy else "warmup", "steps": step, "stopped": stopped,
               "epochs": epoch + pos / max(1, len(train_items)), "wall_s": round(wall, 1),
               "train_s": round(train_s, 1), "eval_s": round(eval_time, 1), "samples": samples,
               "samples_per_s": round(samples / max(1e-9, train_s), 2), "clips_encoded": cache.encoded,
               "audio_cache": use_cache, "projector_trains": project_trains, "lora": adapter.peft is not None,
               "trainable_params": int(sum(p.numel() for p in params)),
               "final_loss": float(np.mean(recent_loss)) if recent_loss else None,
               "final_eval": last_eval, "checkpoint": str(final)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    from ..card import write_model_card
    write_model_card(final, cfg, summary)  # final/README.md: base model as given, data, budget, reproduce
    log({"type": "summary", **{k: v for k, v in summary.items() if k != "final_eval"}})
    metrics_f.close()
    return summary


__all__ = ["run_warmup", "evaluate_accuracy", "sft_forward", "prepare_rows", "completion_ids", "item_prompt",
           "AudioCache", "WarmupData", "lr_lambda", "load_warmup_model", "STATE_FILE"]
