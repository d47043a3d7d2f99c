"""`echodistill predict`: ask a trained model a question about audio files; the answer per file.

Inputs (``gather_queries``): one audio file, a folder of audio files (searched recursively), or a
manifest (our JSONL, the release's rows, MMAU JSON, a Hugging Face dataset: each item brings its own question
and choices). With ``choices`` the model picks one (shown in the same seeded order as in training and
evaluation, mapped back by the shared extractor); without, the answer is the model's free text.

``noise_type`` + ``snr`` mix each clip with that noise at exactly that SNR first (seeded per file by
``eval.noise_seed``), to hear how an answer holds up. Clips are cropped to the model window
(``data.max_duration_s``), as in evaluation. Answers are greedy, ``batch_size`` clips per forward.
A file that cannot be used gets a row with ``error`` (one line naming the file) instead of stopping
the others.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from .audio.io import AudioError
from .audio.noise import AUDIO_SUFFIXES, NoiseBank, mix_at_snr, seeded_rng
from .data.manifest import Item, read_manifest
from .data.validate import Limits, limits_from_config, prompt_problem, read_clip
from .data.prompts import format_question, ordered_choices
from .errors import UserError
from .data.answers import extract_answer, parse_response

MANIFEST_SUFFIXES = (".jsonl", ".json", ".parquet", ".arrow")


@dataclass
class Query:
    """One question about one clip. ``choices`` empty = free answer."""

    id: str
    audio: str
    question: str
    choices: list[str]


def gather_queries(source: str | Path, question: Optional[str] = None, choices: Optional[Sequence[str]] = None,
                   path_map: Optional[dict] = None, columns: Optional[dict] = None) -> list[Query]:
    """Queries for a file, a folder of audio files, or a manifest / dataset.

    For a file or folder ``question`` is required (``choices`` optional). For a manifest each item's own
    question and choices are used unless ``question`` / ``choices`` are given, which then apply to all.
    """
    from .data.hf import is_hf_source

    source = Path(source)
    choices = [str(c) for c in choices] if choices else []
    if source.is_dir() and not is_hf_source(source):
        files = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
        if not files:
            raise UserError(f"{source}: no audio files ({', '.join(sorted(AUDIO_SUFFIXES))}) in this folder")
        paths = files
    elif source.is_file() and source.suffix.lower() in AUDIO_SUFFIXES:
        paths = [source]
    elif (source.suffix.lower() in MANIFEST_SUFFIXES and source.is_file()) or is_hf_source(source):
        items = read_manifest(source, path_map=path_map, columns=columns)
        return [Query(it.id, it.audio, question or it.question, choices or list(it.choices)) for it in items]
    elif not source.exists():
        raise UserError(f"{source}: not found; pass an audio file, a folder of audio files or a manifest")
    else:
        raise UserError(f"{source}: not an audio file ({', '.join(sorted(AUDIO_SUFFIXES))}), a folder or a "
                        f"manifest ({', '.join(MANIFEST_SUFFIXES)})")
    if not question:
        raise UserError("--question is required for audio files and folders (a manifest brings its own)")
    return [Query(p.name if len(paths) == 1 else str(p.relative_to(source)), str(p), question, choices)
            for p in paths]


def _prompt(q: Query, choice_seed: int, response_format: str = "answer") -> tuple[str, list[str]]:
    """(user text, choices in shown order): the training prompt, or for a free answer the bare question
    (the ``reasoning`` format: with its free-form instruction)."""
    if not q.choices:
        return format_question(q.question, [], response_format), []  # the bare question (reasoning: + tags)
    shown = ordered_choices(Item(q.id, q.audio, q.question, list(q.choices), q.choices[0]), choice_seed)
    return format_question(q.question, shown, response_format), shown


def load_query_audio(q: Query, cfg: Any, bank: Optional[NoiseBank], noise_type: Optional[str],
                     snr: Optional[float], limits: Optional[Limits] = None) -> np.ndarray:
    """The clip [S] as the model hears it: 16 kHz mono, cropped to the window, optionally mixed. Only
    the window is decoded (``read_clip``, as evaluation reads clips): a 2-hour file costs a window."""
    wav = read_clip(q.audio, limits or limits_from_config(cfg)).wav
    if noise_type is None:
        return wav
    noise = bank.sample(noise_type, wav.size, seeded_rng(cfg.eval.noise_seed, q.id, noise_type, float(snr)))
    return mix_at_snr(wav, noise, float(snr)).astype(np.float32)


def _check_noise_args(noise_type: Optional[str], snr: Optional[float]) -> None:
    if (noise_type is None) != (snr is None):
        raise UserError("--noise and --snr go together: pass both (e.g. --noise white --snr 0) or neither")


def predict_queries(model: Any, queries: Sequence[Query], cfg: Any, *, noise_type: Optional[str] = None,
                    snr: Optional[float] = None, batch_size: Optional[int] = None,
                    max_new_tokens: Optional[int] = None) -> list[dict]:
    """Greedy answers, one row per query: ``{id, audio, question, choices, noise_type, snr, response,
    answer, error}`` (+ ``evidence`` in the ``reasoning`` format: what the model says it hears, None when
    its tags are broken). ``answer`` is the chosen choice's text (None if the response names none), or
    the stripped answer text for a free answer. ``model``: an ``AudioLLM`` (``load_adapter(..., train=False)``)."""
    _check_noise_args(noise_type, snr)
    bank = None
    if noise_type is not None:
        bank = NoiseBank(cfg.noise.noise_dir if Path(str(cfg.noise.noise_dir)).is_dir() else None,
                         list(cfg.noise.extra_noise_paths))
        bank.check([noise_type])
    bs = int(batch_size or cfg.eval.batch_size)
    fmt = str(cfg.data.response_format)
    max_new = int(max_new_tokens or cfg.eval.max_new_tokens)
    # evaluation's limits: the window, data.long_audio, data.max_prompt_tokens counted by the model's tokenizer
    limits = limits_from_config(cfg, getattr(model, "tokenizer", None), max_new_tokens=max_new)
    rows: list[dict] = []
    pending: list[tuple[dict, str, list[str], np.ndarray]] = []

    def flush():
        if not pending:
            return
        batch = model.build_inputs([p[1] for p in pending], [p[3] for p in pending])
        comp = model.generate(batch, 1, max_new_tokens=max_new, do_sample=False)
        for (row, _, shown, _), text in zip(pending, comp.texts):
            parsed = parse_response(text, fmt)
            if shown:
                idx = extract_answer(text, shown, fmt)
                row["answer"] = shown[idx] if idx is not None else None
            else:
                row["answer"] = parsed.answer.strip() if parsed.answer is not None else None
            row["response"] = text
            if fmt != "answer":
                row["evidence"] = parsed.evidence
        pending.clear()

    for q in queries:
        row = {"id": q.id, "audio": q.audio, "question": q.question, "choices": list(q.choices),
               "noise_type": noise_type, "snr": None if snr is None else float(snr),
               "response": None, "answer": None, "error": None}
        rows.append(row)
        why = prompt_problem(Item(q.id, q.audio, q.question, list(q.choices), q.choices[0] if q.choices else None),
                             limits, int(cfg.data.choice_seed))
        if why:
            row["error"] = f"{q.id}: {why}"
            continue
        try:
            wav = load_query_audio(q, cfg, bank, noise_type, snr, limits)
        except AudioError as e:
            row["error"] = str(e)
            continue
        prompt, shown = _prompt(q, int(cfg.data.choice_seed), fmt)
        pending.append((row, prompt, shown, wav))
        if len(pending) >= bs:
            flush()
    flush()
    return rows


from .run_config import config_for_checkpoint  # noqa: E402  (the one rule; kept importable from here)


def run_predict(cfg: Any, checkpoint: str | Path, source: str | Path, question: Optional[str] = None,
                choices: Optional[Sequence[str]] = None, *, noise_type: Optional[str] = None,
                snr: Optional[float] = None, out: Optional[str | Path] = None,
                batch_size: Optional[int] = None, path_map: Optional[dict] = None) -> list[dict]:
    """Load ``checkpoint``, answer every query of ``source``, print ``id<TAB>answer`` lines (the reasoning
    format: ``id<TAB>answer<TAB>heard: evidence``) and, with ``out``, write the rows as JSONL. Returns the rows."""
    import torch

    from .models import load_adapter

    _check_noise_args(noise_type, snr)  # before the model loads: mistakes fail fast
    queries = gather_queries(source, question, choices, path_map=path_map, columns=dict(cfg.data.columns) or None)
    if str(cfg.run.device) == "cpu":
        torch.set_num_threads(max(1, int(cfg.run.num_threads)))
    model = load_adapter(cfg.model, path=checkpoint, train=False)
    if str(cfg.run.device) in ("cuda", "auto") and torch.cuda.is_available():
        model.to("cuda")
    rows = predict_queries(model, queries, cfg, noise_type=noise_type, snr=snr, batch_size=batch_size)
    for r in rows:
        shown = r["error"] if r["error"] else (r["answer"] if r["answer"] is not None
                                               else f"(no choice named) {r['response']!r}")
        heard = f"\theard: {r['evidence'] if r['evidence'] is not None else '(no evidence: format broken)'}" \
            if "evidence" in r and not r["error"] else ""  # the reasoning format: what the model says it hears
        print(f"{r['id']}\t{shown}{heard}")
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8",
                       errors="backslashreplace")  # a lone surrogate in a question: written as its \u escape
        print(f"predict: wrote {len(rows)} row(s) to {out}")
    return rows


__all__ = ["Query", "gather_queries", "predict_queries", "run_predict", "config_for_checkpoint",
           "load_query_audio"]
