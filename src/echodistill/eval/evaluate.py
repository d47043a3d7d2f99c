"""`echodistill eval`: greedy answers on clean, noisy (noise types x SNR) and silent audio; metrics.json.

Conditions per item (METHOD.md section 3):

* ``clean`` -- the clean clip, cropped to the model window (``data.max_duration_s``);
* ``noisy`` -- for each ``eval.noise_types`` x ``eval.snr_levels`` the clean clip mixed online with
  ``seeded_rng(eval.noise_seed, item id, noise type, snr)`` (so a clip's noise does not depend on
  which other items or conditions are evaluated, nor on batch order); or, when the manifest's rows
  carry a pre-mixed ``noisy_audio`` (``data mix`` output, the paper release's rows), those clips with
  their own noise type and SNR;
* ``silent`` -- zeros of the clean clip's length (the no-audio control), when ``eval.no_audio``.

Prompts are the training prompts (``format_question`` over ``ordered_choices(item, data.choice_seed)`` in
``data.response_format``); answers are greedy (``do_sample=False``, ``eval.max_new_tokens``) and mapped to
a choice by the one shared parser (``data.answers.extract_answer``: in the reasoning format the answer
span only). Reasoning rows also carry the stated ``evidence`` (None: broken format), the item's
``evidence_target`` and ``well_formed``, which the evidence metrics read.

Methods: ``model`` (the checkpoint as is: base directory, warm-up checkpoint or trained adapter),
``enhance`` (DeepFilterNet3 in front of the model, ``eval/enhance.py``; also ``eval.enhance=true``),
``cascade`` (Whisper tiny.en transcribes, the closest choice is picked; speech tasks only,
``eval/cascade.py``).

Resumable: ``<out>/predictions.jsonl`` is appended batch by batch (flushed and fsynced); a re-run reads
it, keys rows by (item id, condition, noise type, snr) and computes only what is missing. A truncated
last line (a killed run) is dropped. ``<out>/eval_state.json`` records, by content, what the predictions
depend on: the sha256 of the manifest bytes, the resolved audio paths (after the path map) with their size
and mtime, the sha256 of every weight file the checkpoint loads, the noise files, and every setting that
changes an answer (dtype, attention, device, batch size, seeds, max_new_tokens, window, limits). A re-run
whose key differs is refused with the list of what changed, never mixed; the noise grid and the item
subset are part of each row's key, so a larger grid only adds rows. ``<out>/.eval.lock`` (an ``flock``,
released by the kernel even on kill -9) keeps a second eval out of a folder in use. ``metrics.json`` is
written last and atomically, computed from the rows of the current job set only (so a smaller
``eval.max_items`` in a re-run reports that subset), and records the code version and weights sha256.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter, OrderedDict
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np

from ..audio.io import SAMPLE_RATE, AudioError, fit_length
from ..audio.noise import NoiseBank, mix_at_snr, seeded_rng
from ..data.manifest import Item, read_manifest, seeded_subset
from ..data.prompts import format_question, ordered_choices
from ..data.validate import Limits, limits_from_config, noisy_length_problem, prompt_problem, read_clip
from ..errors import UserError, disk_full
from ..provenance import (code_version, content_key, content_stamps, file_stamps, sha256_file, verify_weights,
                          weights_sha256, weights_sha256_v1)
from ..data.answers import extract_answer, free_answer, is_correct, parse_response
from .metrics import GSR_DEFINITION, compute_metrics

METHODS = ("model", "enhance", "cascade")
PREDICTIONS = "predictions.jsonl"
METRICS = "metrics.json"
STATE = "eval_state.json"


# ------------------------------------------------------------------ conditions and jobs
@dataclass(frozen=True)
class Condition:
    """One evaluation condition: ``clean``, ``silent``, or ``noisy`` with its noise type and SNR (dB).

    ``path``: a pre-mixed noisy clip (None: mix online)."""

    kind: str
    noise_type: Optional[str] = None
    snr: Optional[float] = None
    path: Optional[str] = None


def grid_conditions(noise_types: Sequence[str], snr_levels: Sequence[float], no_audio: bool = True,
                    clean: bool = True) -> list[Condition]:
    """clean, then every noise type x SNR (online mixing), then silent."""
    out = [Condition("clean")] if clean else []
    out += [Condition("noisy", str(t), float(s)) for t in noise_types for s in snr_levels]
    if no_audio:
        out.append(Condition("silent"))
    return out


def row_key(item_id: str, condition: str, noise_type: Optional[str] = None, snr: Optional[float] = None) -> tuple:
    """The identity of one prediction: (clean item id, condition, noise type, snr)."""
    if condition != "noisy":
        return (str(item_id), condition, None, None)
    return (str(item_id), condition, str(noise_type), round(float(snr), 6))


@dataclass
class EvalGroup:
    """One question (clean item) with the pre-mixed noisy rows of the manifest that belong to it."""

    id: str
    item: Item
    premixed: list = field(default_factory=list)  # [(noise_type, snr, path)]


def clean_id_of(item: Item) -> str:
    """The clean item's id: ``meta['clean_id']`` for `data mix` rows, else the id itself."""
    if item.meta and item.meta.get("clean_id") is not None:
        return str(item.meta["clean_id"])
    return str(item.id)


def group_items(items: Iterable[Item]) -> list[EvalGroup]:
    """Group manifest rows by clean item id (first-seen order); pre-mixed rows become noisy conditions."""
    groups: "OrderedDict[Any, EvalGroup]" = OrderedDict()
    for it in items:
        cid = clean_id_of(it)
        # The release's rows have one id per (clip, noise condition) and no clean id: rows sharing the
        # clean clip and the question are one item (named by its first row's id).
        key = cid if (cid != str(it.id) or not it.noisy_audio) else \
            ("release", it.audio, it.question, tuple(sorted(it.choices)), it.target)
        g = groups.get(key)
        if g is None:
            g = groups[key] = EvalGroup(cid, it)
        if it.noisy_audio:
            if it.noise_type is None or it.snr is None:
                raise UserError(f"item {it.id}: a pre-mixed noisy clip needs noise_type and snr in the manifest "
                                "(evaluation reports accuracy per noise type and SNR); add them")
            g.premixed.append((str(it.noise_type), float(it.snr), it.noisy_audio))
    return list(groups.values())


def subset(groups: Sequence[EvalGroup], max_items: int, seed: int) -> list[EvalGroup]:
    """At most ``max_items`` groups, chosen by a seeded hash of their id (independent of file order),
    returned in manifest order. 0 = all."""
    return seeded_subset(groups, max_items, seed)


@dataclass
class Job:
    group: EvalGroup
    cond: Condition

    @property
    def key(self) -> tuple:
        return row_key(self.group.id, self.cond.kind, self.cond.noise_type, self.cond.snr)


def build_jobs(groups: Sequence[EvalGroup], conditions: Sequence[Condition]) -> list[Job]:
    """Item-major jobs. A group with pre-mixed rows uses them instead of the online noisy grid."""
    jobs = []
    for g in groups:
        for c in conditions:
            if c.kind == "noisy" and g.premixed:
                continue
            jobs.append(Job(g, c))
            if c.kind == "clean" and g.premixed:
                jobs += [Job(g, Condition("noisy", t, s, p)) for t, s, p in g.premixed]
        if g.premixed and not any(c.kind == "clean" for c in conditions):
            jobs += [Job(g, Condition("noisy", t, s, p)) for t, s, p in g.premixed]
    seen, out = set(), []
    for j in jobs:  # a release may repeat a row: keep the first
        if j.key not in seen:
            seen.add(j.key)
            out.append(j)
    return out


# ------------------------------------------------------------------ audio
class ClipLoader:
    """Loads each job's waveform: clean crop, online or pre-mixed noisy of the same length, silence.

    Clips are read and validated by ``data/validate.py``'s ``read_clip`` with ``limits`` (the checks of
    ``data check``); ids of clean clips cut to the window are collected in ``truncated``."""

    def __init__(self, cfg: Any, bank: Optional[NoiseBank] = None, cache_items: int = 256,
                 limits: Optional[Limits] = None):
        self.cfg = cfg
        self.bank = bank
        self.limits = limits if limits is not None else limits_from_config(cfg)
        self._clean: "OrderedDict[str, Any]" = OrderedDict()  # group id -> validate.Clip
        self._limit = cache_items
        self.truncated: set = set()

    def clean_clip(self, group: EvalGroup) -> Any:
        clip = self._clean.get(group.id)
        if clip is None:
            clip = read_clip(group.item.audio, self.limits)
            if clip.truncated:
                self.truncated.add(group.id)
            self._clean[group.id] = clip
            while len(self._clean) > self._limit:
                self._clean.popitem(last=False)
        return clip

    def clean(self, group: EvalGroup) -> np.ndarray:
        return self.clean_clip(group).wav

    def __call__(self, job: Job) -> np.ndarray:
        clean = self.clean(job.group)
        c = job.cond
        if c.kind == "clean":
            return clean
        if c.kind == "silent":
            return np.zeros_like(clean)
        if c.path:  # same rule as `data check`: a pre-mixed clip of another length is not padded into use
            noisy = read_clip(c.path, self.limits, clean=False)
            msg = noisy_length_problem(self.clean_clip(job.group), noisy, job.group.item.audio, c.path)
            if msg:
                raise AudioError(f"{c.path}: {msg}", "noisy_length_mismatch")
            return fit_length(noisy.wav, clean.size).astype(np.float32)
        if self.bank is None:
            raise ValueError("online noisy conditions need a NoiseBank")
        rng = seeded_rng(self.cfg.eval.noise_seed, job.group.id, c.noise_type, float(c.snr))
        noise = self.bank.sample(c.noise_type, clean.size, rng)
        return mix_at_snr(clean, noise, float(c.snr)).astype(np.float32)


# ------------------------------------------------------------------ predictors
Predictor = Callable[[list, list, list], list]  # (prompts, choices lists, wavs) -> [(response, idx|None)]


def model_predictor(adapter: Any, max_new_tokens: int, enhancer: Optional[Callable] = None,
                    response_format: str = "answer") -> Predictor:
    """Greedy answers of an ``AudioLLM``, read in ``response_format``; ``enhancer`` (wav -> wav) is
    applied to every clip first."""

    def predict(prompts, choices, wavs):
        if enhancer is not None:
            wavs = [enhancer(w) for w in wavs]
        batch = adapter.build_inputs(list(prompts), list(wavs))
        comp = adapter.generate(batch, 1, max_new_tokens=int(max_new_tokens), do_sample=False)
        return [(t, extract_answer(t, ch, response_format)) for t, ch in zip(comp.texts, choices)]

    return predict


def cascade_predictor(cascade: Any) -> Predictor:
    """Whisper transcript -> closest choice (``eval/cascade.py``); the response is the transcript."""
    from .cascade import closest_choice

    def predict(prompts, choices, wavs):
        texts = cascade.transcribe(list(wavs))
        return [(t, closest_choice(t, ch)) for t, ch in zip(texts, choices)]

    return predict


def answer_of(choices: list, response: str, idx: Optional[int], response_format: str = "answer") -> Optional[str]:
    """The answer a response gives: the choice ``idx`` names, or, for an open-ended question (no choices),
    the normalised response (``answers.free_answer``; the reasoning format: its answer span); None = invalid."""
    if choices:
        return choices[idx] if idx is not None else None
    return free_answer(response if response_format == "answer" else parse_response(response, response_format).answer)


def make_row(job: Job, choices: list, response: str, idx: Optional[int], split: Optional[str] = None,
             response_format: str = "answer") -> dict:
    """One prediction row. Open-ended items (no choices): the answer is the normalised response (in the
    reasoning format its answer span), correct when it equals the normalised target; unlabeled items:
    ``correct`` None (label-free metrics only). Reasoning-format rows also carry the stated ``evidence``,
    the item's ``evidence_target`` and ``well_formed`` (the answer format's rows stay as they were)."""
    item, c = job.group.item, job.cond
    answer = answer_of(choices, response, idx, response_format)
    row = {"id": job.group.id, "task": item.task, "condition": c.kind,
           "noise_type": c.noise_type if c.kind == "noisy" else None,
           "snr": float(c.snr) if c.kind == "noisy" else None,
           "response": response, "answer": answer, "target": item.target,
           "correct": is_correct(answer, item.target, not choices), "invalid": answer is None,
           "voice": (item.meta or {}).get("voice"), "split": split or item.split}
    if response_format != "answer":
        parsed = parse_response(response, response_format)
        row.update(evidence=parsed.evidence, evidence_target=item.evidence, well_formed=parsed.well_formed)
    return row


def run_jobs(jobs: Sequence[Job], predict: Predictor, loader: ClipLoader, *, batch_size: int, choice_seed: int,
             on_rows: Optional[Callable[[list], None]] = None, bad: Optional[dict] = None,
             split: Optional[str] = None, progress: Optional[Any] = None,
             response_format: str = "answer") -> list[dict]:
    """Predict ``jobs`` in batches; rows are passed to ``on_rows`` after every batch and returned.

    A job whose audio cannot be used (AudioError) is skipped and recorded in ``bad`` as
    ``{item id: {"kind", "message", "conditions"}}``; an item whose clean clip fails loses every condition.
    """
    bad = {} if bad is None else bad
    out: list[dict] = []
    pending: list = []

    def flush():
        if not pending:
            return
        res = predict([p[1] for p in pending], [p[2] for p in pending], [p[3] for p in pending])
        rows = [make_row(job, ch, resp, idx, split, response_format)
                for (job, _, ch, _), (resp, idx) in zip(pending, res)]
        cut = getattr(loader, "truncated", ())
        for r in rows:  # recorded per row, so a resumed evaluation still reports the clips it cut earlier
            if r["id"] in cut:
                r["truncated"] = True
        out.extend(rows)
        if on_rows is not None:
            on_rows(rows)
        if progress is not None:
            progress.update(len(rows))
        pending.clear()

    prompts: dict[str, tuple[str, list]] = {}
    limits = getattr(loader, "limits", None)
    for job in jobs:
        g = job.group
        if g.id not in bad and g.id not in prompts and limits is not None:
            why = prompt_problem(g.item, limits, choice_seed)  # the check `data check` makes, same limits
            if why:
                bad[g.id] = {"kind": "prompt_too_long", "message": f"item {g.id}: {why}", "conditions": ["all"],
                             "clean_failed": True}
        if g.id in bad and bad[g.id].get("clean_failed"):
            if progress is not None:
                progress.update(1)
            continue
        try:
            wav = loader(job)
        except AudioError as e:
            rec = bad.setdefault(g.id, {"kind": e.kind, "message": str(e), "conditions": []})
            failed_clean = job.cond.kind == "clean" or g.id not in loader._clean
            rec["clean_failed"] = rec.get("clean_failed", False) or failed_clean
            rec["conditions"].append(job.cond.kind if job.cond.kind != "noisy"
                                     else f"noisy/{job.cond.noise_type}/{job.cond.snr:g}")
            if progress is not None:
                progress.update(1)
            continue
        if g.id not in prompts:
            ch = ordered_choices(g.item, choice_seed)
            prompts[g.id] = (format_question(g.item.question, ch, response_format), ch)
        prompt, ch = prompts[g.id]
        pending.append((job, prompt, ch, wav))
        if len(pending) >= batch_size:
            flush()
    flush()
    return out


def evaluate_items(adapter: Any, items: Sequence[Item], conditions: Sequence[Condition], cfg: Any, *,
                   bank: Optional[NoiseBank] = None, batch_size: Optional[int] = None,
                   max_new_tokens: Optional[int] = None, enhancer: Optional[Callable] = None,
                   progress: bool = False) -> tuple[list[dict], dict]:
    """Greedy prediction rows for ``items`` x ``conditions`` (no files written): the trainer's val hook.

    ``conditions``: e.g. ``grid_conditions(types, snrs, no_audio)`` or
    ``[Condition("clean"), Condition("noisy", "white", 0.0)]``; noisy ones are mixed online
    (``seeded_rng(cfg.eval.noise_seed, id, type, snr)``) unless an item carries a pre-mixed clip.
    Returns ``(rows, bad)``; ``compute_metrics(rows, ...)`` turns rows into figures.
    """
    groups = group_items(items)
    needs_bank = any(c.kind == "noisy" for c in conditions) and any(not g.premixed for g in groups)
    if needs_bank and bank is None:
        bank = NoiseBank(cfg.noise.noise_dir, list(cfg.noise.extra_noise_paths))
    jobs = build_jobs(groups, conditions)
    bad: dict = {}
    bar = None
    limits = limits_from_config(cfg, getattr(adapter, "tokenizer", None),
                                max_new_tokens=int(max_new_tokens or cfg.eval.max_new_tokens))
    if progress:
        from ..progress import progress as progress_bar
        bar = progress_bar(len(jobs), "eval", "clip")
    try:
        fmt = str(cfg.data.response_format)
        rows = run_jobs(jobs, model_predictor(adapter, max_new_tokens or cfg.eval.max_new_tokens, enhancer, fmt),
                        ClipLoader(cfg, bank, limits=limits), batch_size=int(batch_size or cfg.eval.batch_size),
                        choice_seed=int(cfg.data.choice_seed), bad=bad, progress=bar, response_format=fmt)
    finally:
        if bar is not None:
            bar.close()
    return rows, bad


# ------------------------------------------------------------------ predictions file
def read_existing(path: Path) -> list[dict]:
    """Rows already in ``path``; unparsable lines (a run killed mid-write) are dropped and the file
    rewritten without them."""
    if not path.is_file():
        return []
    rows, dropped = [], 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            s = line.strip()
            if not s:
                continue
            try:
                r = json.loads(s)
            except json.JSONDecodeError:
                dropped += 1
                continue
            if isinstance(r, dict) and "id" in r and "condition" in r:
                rows.append(r)
            else:
                dropped += 1
    if dropped:
        tmp = path.with_suffix(".jsonl.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
        print(f"eval: dropped {dropped} incomplete line(s) from {path} (an interrupted run); they are recomputed")
    return rows


class PredictionWriter:
    """Appends rows to predictions.jsonl, flushed and fsynced after every chunk."""

    def __init__(self, path: Path):
        self.path = path
        self.f = open(path, "ab", buffering=0)  # unbuffered: a failed chunk is cut off exactly (ftruncate)
        self.written = 0

    def __call__(self, rows: list) -> None:
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8", "backslashreplace")
        fd = self.f.fileno()
        start = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[self.f.write(view):]
            os.fsync(fd)
        except OSError:  # e.g. the disk is full: no half row stays behind
            os.ftruncate(fd, start)
            raise
        self.written += len(rows)

    def close(self) -> None:
        self.f.close()


STATE_FORMAT = 4  # eval_state.json with content keys (format 1 recorded paths only; 2: clips and noise files
# by path, size and mtime; 2-3: weights in weights_sha256_v1's form -- accepted when those still match, then
# rewritten as 4)


def _check_state(out_dir: Path, state: dict, legacy: Optional[Callable[[int], Optional[dict]]] = None) -> None:
    """Refuse to resume into ``out_dir`` unless its predictions were made from the same content; then
    record ``state``. ``state`` maps component -> value or hash (see ``_eval_state``); ``legacy(format)``:
    what an older format recorded for the keys whose recipe changed since (None: not accepted); a folder
    recorded then is accepted when they match."""
    p = out_dir / STATE
    old = None
    if p.is_file():
        try:
            old = json.loads(p.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            old = None
    has_rows = (out_dir / PREDICTIONS).is_file() and (out_dir / PREDICTIONS).stat().st_size > 0
    start_over = f"evaluate into a new --out folder, or delete {out_dir / PREDICTIONS} and {p} to start over"
    then = legacy(old.get("format")) if has_rows and isinstance(old, dict) and legacy is not None else None
    if then is not None and all(old.get(k) == v for k, v in then.items()):
        old = {**old, **{k: v for k, v in state.items() if k in then}, "format": STATE_FORMAT}
    if has_rows and not (isinstance(old, dict) and old.get("format") == STATE_FORMAT):
        raise UserError(f"{out_dir}: holds predictions whose inputs were not recorded by content (no or an older "
                        f"{STATE}); they cannot be checked against this evaluation: {start_over}")
    if has_rows:
        diff = sorted(k for k in set(state) | set(old) if state.get(k) != old.get(k))
        if diff:
            detail = "; ".join(_describe_change(k, old.get(k), state.get(k)) for k in diff)
            raise UserError(f"{out_dir}: holds predictions made from other inputs ({detail}); reusing them would "
                            f"report stale numbers: {start_over}")
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(state, indent=2), encoding="utf-8")
    os.replace(tmp, p)


def _describe_change(key: str, old: Any, new: Any) -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        return ", ".join(f"{key}.{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys)
    if isinstance(old, str) and isinstance(new, str) and len(old) == len(new) == 64:
        return f"{key} content changed"
    return f"{key}: {old!r} -> {new!r}"


class FolderLock:
    """An exclusive ``flock`` on ``<out>/.eval.lock`` for the whole evaluation (the kernel drops it when the
    process dies, so a killed run never leaves a stale lock)."""

    def __init__(self, out_dir: Path):
        self.path = out_dir / ".eval.lock"
        self.f = None

    def __enter__(self) -> "FolderLock":
        import fcntl
        self.f = open(self.path, "a+")
        try:
            fcntl.flock(self.f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.f.seek(0)
            who = self.f.read().strip() or "another process"
            self.f.close()
            raise UserError(f"{self.path.parent}: another `echodistill eval` ({who}) is writing into this folder; "
                            "wait for it to finish, or evaluate into another --out folder") from None
        self.f.seek(0)
        self.f.truncate()
        self.f.write(f"pid {os.getpid()}")
        self.f.flush()
        return self

    def __exit__(self, *exc) -> None:
        if self.f is not None:
            self.f.close()  # closing the file releases the lock


def _audio_paths(items: Sequence[Item]) -> list[str]:
    return sorted({it.audio for it in items} | {it.noisy_audio for it in items if it.noisy_audio})


def _format2_keys(items: Sequence[Item], bank: Optional[NoiseBank]) -> dict:
    """The keys format 2 recorded by path, size and mtime (to accept a folder evaluated before format 3)."""
    return {"audio_files": content_key(file_stamps(_audio_paths(items))),
            "noise_files": content_key(bank.path_stamps()) if bank is not None else None}


def _legacy_keys(fmt: Any, method: str, ckpt: str, base_path: str, items: Sequence[Item],
                 bank: Optional[NoiseBank]) -> Optional[dict]:
    """What format ``fmt`` recorded for the keys whose recipe changed since (``_check_state``'s ``legacy``)."""
    if fmt not in (2, 3):
        return None
    weights = {} if method == "cascade" else {"weights_sha256": weights_sha256_v1(ckpt, base_path)}
    return {**_format2_keys(items, bank), **weights} if fmt == 2 else weights


def _eval_state(cfg: Any, method: str, ckpt: str, manifest: Path, pmap: dict, items: Sequence[Item],
                bank: Optional[NoiseBank], device: str) -> dict:
    """Everything the predictions depend on, by content (hashes) or value (settings). ``items``: the whole
    manifest (the subset evaluated is part of each row's key, not of the folder's)."""
    audio = _audio_paths(items)
    cascade = method == "cascade"
    return {
        "format": STATE_FORMAT,
        "method": method,
        "checkpoint": "whisper-tiny.en" if cascade else str(Path(ckpt).resolve()),
        "weights_sha256": "whisper-tiny.en" if cascade else weights_sha256(ckpt, cfg.model.path),
        "manifest": str(manifest.resolve()),
        "manifest_sha256": sha256_file(manifest),
        "path_map": {str(k): str(v) for k, v in sorted(pmap.items())},
        "audio_files": content_key(content_stamps(audio)),
        "noise_files": content_key(bank.fingerprint()) if bank is not None else None,
        "settings": {
            "model.backbone": str(cfg.model.backbone), "model.dtype": str(cfg.model.dtype),
            "model.attn_implementation": str(cfg.model.attn_implementation), "device": device,
            "eval.batch_size": int(cfg.eval.batch_size), "eval.noise_seed": int(cfg.eval.noise_seed),
            "eval.max_new_tokens": int(cfg.eval.max_new_tokens), "data.choice_seed": int(cfg.data.choice_seed),
            "data.max_duration_s": float(cfg.data.max_duration_s),
            "data.min_duration_s": float(cfg.data.min_duration_s),
            # only when not the default, so that the answer format's earlier eval folders still resume
            **({"data.response_format": str(cfg.data.response_format)}
               if str(cfg.data.response_format) != "answer" else {}),
        },
    }


# ------------------------------------------------------------------ summary
def _pct(fig: Optional[dict]) -> str:
    if not fig or fig.get("value") is None:
        return "n/a"
    lo, hi = fig.get("ci_low"), fig.get("ci_high")
    ci = f" [{100 * lo:.1f}, {100 * hi:.1f}]" if lo is not None and hi is not None else ""
    return f"{100 * fig['value']:.1f}%{ci}"


def summary_text(meta: dict) -> str:
    m = meta["metrics"]
    n = m.get("counts", {}).get("items", 0)
    t = meta.get("timing", {})
    lines = [f"eval {meta['name']} ({meta.get('split') or '-'}, method {meta['method']}): {n} items, "
             f"{m.get('counts', {}).get('rows', 0)} predictions"
             + (f"; {t['new_predictions']} new in {t['seconds']:.1f} s ({t['clips_per_s']:.2f} clips/s, "
                f"{t['items_per_s']:.2f} items/s)" if t.get("new_predictions") else "")]
    lines.append("  " + "  ".join(f"{k} {_pct(m.get(k))}" for k in ("Acc", "Noisy", "StrongNoisy", "GSR")))
    lines.append("  " + "  ".join(f"{k} {_pct(m.get(k))}" for k in ("Consistency", "NoAudio", "Invalid")))
    lines.append(f"  GSR = {GSR_DEFINITION}; StrongNoisy: SNR <= {m['settings']['strong_snr_max']:g} dB; "
                 f"95% bootstrap CIs over items")
    labeled = m.get("counts", {}).get("labeled_items", n)
    if labeled < n:  # label-free figures: the student's clean-vs-noisy agreement per SNR, invalid answers
        scope = f"accuracies and GSR over the {labeled} labeled one(s)" if labeled else "no accuracy without labels"
        lines.append(f"  {n - labeled} unlabeled item(s): {scope}; label-free, Consistency (noisy answer = clean "
                     "answer) by SNR: "
                     + ", ".join(f"{k} dB {_pct(f)}" for k, f in m.get("consistency_by_snr", {}).items()))
    if meta.get("bad_items", {}).get("count"):
        b = meta["bad_items"]
        kinds = Counter(x["kind"] for x in b["items"])
        lines.append(f"  skipped {b['count']} item(s) ({', '.join(f'{k}: {n}' for k, n in sorted(kinds.items()))}): "
                     + ", ".join(x["id"] for x in b["items"][:10]) + (" ..." if b["count"] > 10 else ""))
    if meta.get("truncated", {}).get("count"):
        t = meta["truncated"]
        lines.append(f"  truncated {t['count']} clip(s) to their first {t['window_s']:g} s (data.long_audio=truncate): "
                     + ", ".join(t["ids"][:10]) + (" ..." if t["count"] > 10 else ""))
    if meta.get("skipped_tasks"):
        lines.append(f"  tasks not evaluated by this method: {meta['skipped_tasks']}")
    return "\n".join(lines)


# ------------------------------------------------------------------ entry point
def _resolve_device(device: str) -> str:
    import torch
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("run.device=cuda but no CUDA device is visible; use run.device=cpu")
    return device


def run_eval(cfg: Any, checkpoint: Optional[str | Path] = None, manifest: Optional[str | Path] = None,
             out_dir: str | Path = "runs/eval", method: str = "model", name: Optional[str] = None,
             split_name: Optional[str] = None, path_map: Optional[dict] = None, fmt: str = "auto") -> dict:
    """Evaluate one model (or baseline) on one manifest; writes predictions.jsonl and metrics.json.

    Returns the metrics.json content ``{"name", "split", "method", "checkpoint", "manifest",
    "metrics", "bad_items", "skipped_tasks", "timing", "provenance", ...}``.
    """
    if method not in METHODS:
        raise UserError(f"--method {method!r} is unknown; use one of {', '.join(METHODS)}")
    if method == "model" and bool(cfg.eval.enhance):
        method = "enhance"
    out_dir = Path(out_dir)
    manifest = Path(manifest if manifest is not None else cfg.data.test_manifest)
    if not manifest.exists():  # a file, or a dataset folder (save_to_disk)
        raise UserError(f"manifest {manifest} not found: pass --manifest, or set data.test_manifest (by default "
                        "<data.bench_dir>/test.jsonl; `echodistill data build` writes it)")
    pmap = dict(cfg.data.path_map or {})
    pmap.update(path_map or {})
    items = read_manifest(manifest, path_map=pmap or None, fmt=fmt, columns=dict(cfg.data.columns))
    if not items:
        raise UserError(f"{manifest}: the manifest has no items; fix the path or the file "
                        f"(`echodistill data check {manifest}`)")
    groups = subset(group_items(items), int(cfg.eval.max_items), int(cfg.eval.noise_seed))
    conditions = grid_conditions(list(cfg.eval.noise_types), [float(s) for s in cfg.eval.snr_levels],
                                 bool(cfg.eval.no_audio))
    skipped_tasks: dict = {}
    if method == "cascade":
        from .cascade import is_speech_task
        kept = []
        for g in groups:
            if is_speech_task(g.item.task):
                kept.append(g)
            else:
                skipped_tasks[g.item.task] = skipped_tasks.get(g.item.task, 0) + 1
        groups = kept
        if not groups:
            raise UserError(f"{manifest}: no speech task to evaluate with --method cascade (tasks: "
                            f"{sorted(skipped_tasks)}); the cascade baseline transcribes speech only")
    jobs = build_jobs(groups, conditions)
    bank = None
    if any(j.cond.kind == "noisy" and not j.cond.path for j in jobs):
        bank = NoiseBank(cfg.noise.noise_dir, list(cfg.noise.extra_noise_paths))
        bank.check(sorted({j.cond.noise_type for j in jobs if j.cond.kind == "noisy" and not j.cond.path}))

    ckpt = str(checkpoint) if checkpoint is not None else str(cfg.model.path)
    if method != "cascade":
        verify_weights(ckpt, cfg.model.path)  # a truncated download: one line now, not a traceback later
    device = _resolve_device(str(cfg.run.device))
    procs = eval_processes(device)  # under `accelerate launch`: the items are split over the processes
    main = procs is None or procs.is_main_process
    # this process's own GPU; the recorded state keeps the generic name (a 1-process rerun may resume)
    run_device = str(procs.device) if procs is not None and procs.device.type != "cpu" else device
    out_dir.mkdir(parents=True, exist_ok=True)
    partial = [out_dir / (METRICS + ".tmp"), out_dir / (STATE + ".tmp"), out_dir / (PREDICTIONS + ".tmp")]
    with disk_full(out_dir, "predictions or metrics", partial, "rerun the same command (complete rows are kept)"), \
            FolderLock(out_dir) if main else nullcontext():  # the main process owns the folder
        state = _eval_state(cfg, method, ckpt, manifest, pmap, items, bank, device)
        if main:
            _check_state(out_dir, state, lambda fmt: _legacy_keys(fmt, method, ckpt, str(cfg.model.path), items, bank))
        return _predict_and_report(cfg, out_dir, jobs, groups, conditions, bank, state, method=method, ckpt=ckpt,
                                   device=run_device, manifest=manifest, name=name, split_name=split_name,
                                   skipped_tasks=skipped_tasks, procs=procs)


def eval_processes(device: str) -> Any:
    """accelerate's ``PartialState`` when launched as several processes (``accelerate launch``), else None."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from accelerate import PartialState

    return PartialState(cpu=device == "cpu")



def _predict_and_report(cfg: Any, out_dir: Path, jobs: list, groups: list, conditions: list,
                        bank: Optional[NoiseBank], state: dict, *, method: str, ckpt: str, device: str,
                        manifest: Path, name: Optional[str], split_name: Optional[str], skipped_tasks: dict,
                        procs: Any = None) -> dict:
    """The rest of ``run_eval``, under the folder lock: predict the missing rows, write metrics.json.

    With ``procs`` (several processes): every process reads the rows already done, predicts the
    missing ones of its share of the items (item ``i`` -> process ``i % world``, all its conditions),
    and the main process gathers them, appends them to predictions.jsonl and writes metrics.json.
    """
    import torch

    main = procs is None or procs.is_main_process
    if procs is not None:
        procs.wait_for_everyone()  # the main process has checked the folder; nobody has appended yet
    pred_path = out_dir / PREDICTIONS
    existing = read_existing(pred_path)
    done = {}
    for r in existing:
        try:
            done[row_key(r["id"], r["condition"], r.get("noise_type"), r.get("snr"))] = r
        except (TypeError, ValueError):
            continue
    todo = [j for j in jobs if j.key not in done]
    if procs is not None:
        procs.wait_for_everyone()  # every process has read the same finished rows
        share = {g.id: i % procs.num_processes for i, g in enumerate(groups)}
        todo = [j for j in todo if share[j.group.id] == procs.process_index]

    if device == "cpu":
        torch.set_num_threads(max(1, int(cfg.run.num_threads)))
    bad: dict = {}
    loader = ClipLoader(cfg, bank)
    writer = PredictionWriter(pred_path) if main else None
    t0 = time.time()
    try:
        if todo:
            if method == "cascade":
                from .cascade import WhisperCascade
                predict = cascade_predictor(WhisperCascade(device=device))
                # Whisper reads no prompt: only the audio limits apply
                loader.limits = Limits(float(cfg.data.min_duration_s), float(cfg.data.max_duration_s),
                                       str(cfg.data.long_audio))
            else:
                from ..models import load_adapter
                enhancer = None
                if method == "enhance":
                    from .enhance import get_enhancer
                    enhancer = get_enhancer()
                adapter = load_adapter(cfg.model, path=ckpt, train=False)
                if device != "cpu":
                    adapter.to(device)
                predict = model_predictor(adapter, int(cfg.eval.max_new_tokens), enhancer,
                                          str(cfg.data.response_format))
                loader.limits = limits_from_config(cfg, adapter.tokenizer, model_path=ckpt,
                                                   max_new_tokens=int(cfg.eval.max_new_tokens))
            from ..progress import progress
            with progress(len(todo), f"eval {method}", "clip", disable=not main) as bar:
                new_rows = run_jobs(todo, predict, loader, batch_size=int(cfg.eval.batch_size),
                                    choice_seed=int(cfg.data.choice_seed), on_rows=writer, bad=bad,
                                    split=split_name, progress=bar, response_format=str(cfg.data.response_format))
        else:
            new_rows = []
        if procs is not None:  # the other processes' rows, skipped items and cut clips, to the main one
            from accelerate.utils import gather_object

            parts = gather_object([(procs.process_index, new_rows, bad, sorted(loader.truncated))])
            if main:
                new_rows = []
                for rank, rows, their_bad, cut in sorted(parts, key=lambda p: p[0]):
                    if rank != procs.process_index:
                        writer(rows)
                        loader.truncated.update(cut)
                        bad.update(their_bad)  # items are split whole: no item is in two shares
                    new_rows += rows
    finally:
        if writer is not None:
            writer.close()
    if not main:  # the main process reports; the others return what it wrote
        out = [None]
        torch.distributed.broadcast_object_list(out, src=0)
        return out[0]
    seconds = time.time() - t0
    for r in new_rows:
        done[row_key(r["id"], r["condition"], r.get("noise_type"), r.get("snr"))] = r
    rows = [done[j.key] for j in jobs if j.key in done]
    if not rows:
        raise UserError(f"{manifest}: no prediction could be made ({len(bad)} item(s) with unusable audio, e.g. "
                        f"{next(iter(bad.values()))['message'] if bad else '-'}); run `echodistill data check`")
    metrics = compute_metrics(rows, float(cfg.eval.strong_snr_max), int(cfg.eval.bootstrap), int(cfg.run.seed))
    n_new_items = len({r["id"] for r in new_rows})
    truncated = set(loader.truncated) | {r["id"] for r in rows if r.get("truncated")}
    bad_list = [{"id": k, "kind": v["kind"], "message": v["message"], "conditions": v["conditions"]}
                for k, v in bad.items()]
    from omegaconf import OmegaConf
    meta = {
        "name": name or out_dir.name,
        "split": split_name or (groups[0].item.split if groups else None),
        "method": method,
        "checkpoint": state["checkpoint"],
        "manifest": state["manifest"],
        # the noise bank the noisy clips were drawn from: the report's listening section rebuilds them from it
        "noise_dir": str(Path(str(cfg.noise.noise_dir)).resolve()) if bank is not None else None,
        "metrics": metrics,
        "bad_items": {"count": len(bad_list), "items": bad_list},
        # clean clips longer than the window, cut to it (data.long_audio=truncate), earlier runs' rows included
        "truncated": {"count": len(truncated), "ids": sorted(truncated)[:100],
                      "window_s": float(cfg.data.max_duration_s)},
        "skipped_tasks": skipped_tasks,
        "n_items": len(groups),
        "n_predictions": len(rows),
        "conditions": {"clean": any(c.kind == "clean" for c in conditions),
                       "noise_types": sorted({j.cond.noise_type for j in jobs if j.cond.kind == "noisy"}),
                       "snr_levels": sorted({float(j.cond.snr) for j in jobs if j.cond.kind == "noisy"}),
                       "premixed": any(j.cond.path for j in jobs), "silent": bool(cfg.eval.no_audio)},
        "timing": {"seconds": round(seconds, 3), "new_predictions": len(new_rows), "device": device,
                   "clips_per_s": round(len(new_rows) / seconds, 4) if seconds > 0 and new_rows else None,
                   "items_per_s": round(n_new_items / seconds, 4) if seconds > 0 and new_rows else None},
        "eval_config": OmegaConf.to_container(cfg.eval, resolve=True) if OmegaConf.is_config(cfg.eval)
        else dict(vars(cfg.eval)),
        # why a rerun may differ: the code and the exact weights and inputs these rows came from
        "provenance": {"code_version": code_version(), "weights_sha256": state["weights_sha256"],
                       "manifest_sha256": state["manifest_sha256"], "state_key": content_key(state)},
    }
    tmp = out_dir / (METRICS + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, out_dir / METRICS)
    print(summary_text(meta))
    print(f"  wrote {pred_path} and {out_dir / METRICS}")
    if procs is not None:
        torch.distributed.broadcast_object_list([meta], src=0)
    return meta


__all__ = ["run_eval", "evaluate_items", "Condition", "grid_conditions", "group_items", "build_jobs", "subset",
           "row_key", "run_jobs", "model_predictor", "cascade_predictor", "ClipLoader", "summary_text",
           "METHODS", "PREDICTIONS", "METRICS"]
