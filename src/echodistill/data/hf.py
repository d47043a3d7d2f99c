"""Hugging Face ``datasets`` input: an ``Audio`` column plus question / choices / answer columns.

Sources (``is_hf_source``): a ``save_to_disk`` folder (one split: ``dataset_info.json`` + ``state.json``;
a ``DatasetDict`` root asks for its split's subfolder), a local ``.parquet`` / ``.arrow`` file, or a
JSON/JSONL file read with ``fmt="hf"``. ``pip install 'echodistill[hf]'`` brings ``datasets``.

Audio is never decoded by ``datasets`` (the column is cast to ``Audio(decode=False)``): embedded bytes
are written once to a content-addressed cache (``$ECHODISTILL_CACHE/hf_audio``, default
``~/.cache/echodistill``; parquet/JSON conversions go to ``.../datasets``) and stored paths are resolved like manifest paths (``path_map`` first, then
relative to the dataset folder). Every clip is then read by ``audio.io.load_audio``: the same soundfile
decoding and soxr resampling to 16 kHz mono as every other clip, whatever rate the dataset stored.

Columns: ``data.columns`` maps our fields to the dataset's names (``{question: prompt, target: label}``;
``answer`` is read as the old name of ``target``, the label, as stored configs spell it);
unmapped fields are found by their usual names (below), the audio column by its ``Audio`` type. The
answer may be the choice's text or its index (an int or a ``ClassLabel``); without a choices column (or
with ``[]`` in a row) the question is open-ended and the answer its reference text; without an answer
column (or with null in a row) the item is unlabeled. TRL's conventions are read too: a conversational
``prompt`` column (``[{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": ...}]}]``:
the user text is the question, the audio part names the clip when there is no audio column; system
messages are ignored) and a ``solution`` column (``<answer>...</answer>`` tags are stripped). Rows become ``Row``/``Item``
exactly like manifest lines (``line`` = 1-based row number), so ``data check``, ``train`` and ``eval``
take a dataset wherever they take a manifest.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any, Iterator, Optional

from .items import Issue, Item, ManifestError, Row, item_issues, resolve_path, stored_index

FIELDS = ("id", "question", "audio", "choices", "target", "task", "split", "evidence")  # question first: see resolve_columns
OLD_FIELD_NAMES = {"answer": "target"}  # data.columns keys of stored configs: the label was "answer"
DEFAULT_NAMES = {
    "id": ("id", "question_id", "uid", "qid"),
    "audio": ("audio", "audio_path", "file", "path"),
    "question": ("question", "prompt", "instruction", "query"),
    "choices": ("choices", "options", "candidates"),
    "target": ("answer", "target", "label", "correct_answer", "solution"),  # solution: TRL's reasoning datasets
    "task": ("task", "category", "subset"),
    "split": ("split",),
    "evidence": ("evidence",),  # what the clip contains, in words (optional; the reasoning format)
}
REQUIRED = ("audio", "question")  # no choices: open-ended; no target: unlabeled
HF_FILE_SUFFIXES = (".parquet", ".arrow")
_AUDIO_EXT = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".opus")


def is_hf_source(path: str | Path) -> bool:
    """A ``save_to_disk`` folder (or DatasetDict root) or a parquet/arrow file."""
    p = Path(path)
    if p.is_dir():
        return any((p / f).is_file() for f in ("dataset_info.json", "state.json", "dataset_dict.json"))
    return p.suffix.lower() in HF_FILE_SUFFIXES


def cache_root() -> Path:
    return Path(os.environ.get("ECHODISTILL_CACHE") or Path.home() / ".cache" / "echodistill")


def _require_datasets():
    try:
        import datasets  # noqa: F401
    except ImportError:
        raise ManifestError("reading a Hugging Face dataset needs the `datasets` package: "
                            "pip install 'echodistill[hf]' (or pip install datasets)") from None
    return datasets


def load_dataset_any(path: str | Path) -> Any:
    """The ``datasets.Dataset`` at ``path`` (save_to_disk folder, parquet/arrow, JSON/JSONL file)."""
    datasets = _require_datasets()
    p = Path(path)
    if not p.exists():
        raise ManifestError(f"{p}: dataset not found; check the path")
    try:
        if p.is_dir():
            if (p / "dataset_dict.json").is_file():
                splits = sorted(d.name for d in p.iterdir() if (d / "dataset_info.json").is_file())
                raise ManifestError(f"{p}: a DatasetDict with splits {', '.join(splits) or '?'}; point at one split's "
                                    f"folder, e.g. {p / (splits[0] if splits else 'train')}")
            return datasets.load_from_disk(str(p), keep_in_memory=False)
        suffix = p.suffix.lower()
        cache = str(cache_root() / "datasets")  # datasets converts these to Arrow: keep that with our cache
        if suffix == ".parquet":
            return datasets.Dataset.from_parquet(str(p), cache_dir=cache)
        if suffix == ".arrow":
            return datasets.Dataset.from_file(str(p))
        if suffix in (".json", ".jsonl"):
            return datasets.Dataset.from_json(str(p), cache_dir=cache)
    except ManifestError:
        raise
    except Exception as e:  # pyarrow / datasets errors on corrupt or foreign files
        raise ManifestError(f"{p}: cannot read it as a Hugging Face dataset ({type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''}); re-export it with save_to_disk or "
                            "to_parquet") from None
    raise ManifestError(f"{p}: not a Hugging Face dataset (a save_to_disk folder, .parquet, .arrow, .json or .jsonl)")


def _evidence_text(value: Any) -> Optional[str]:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"evidence must be a string, got {type(value).__name__}")
    return value.strip() or None


def resolve_columns(features: dict, columns: Optional[dict], source: Path) -> dict[str, Optional[str]]:
    """Our field -> the dataset's column (None when an optional field is absent)."""
    columns = {OLD_FIELD_NAMES.get(str(k), str(k)): str(v) for k, v in (columns or {}).items()}
    unknown = sorted(set(columns) - set(FIELDS))
    if unknown:
        raise ManifestError(f"data.columns has unknown field(s) {unknown}; map these fields: {', '.join(FIELDS)}")
    names = list(features)
    out: dict[str, Optional[str]] = {}
    for f in FIELDS:
        if f in columns:
            if columns[f] not in features:
                raise ManifestError(f"{source}: data.columns maps {f} to {columns[f]!r}, which is not a column "
                                    f"(columns: {', '.join(names)})")
            out[f] = columns[f]
            continue
        found = None
        if f == "audio":  # the Audio-typed column first: its name varies ("audio", "clip", "speech", ...)
            found = next((n for n in names if type(features[n]).__name__ == "Audio"), None)
        found = found or next((n for n in DEFAULT_NAMES[f] if n in features), None)
        if found is None and f == "audio" and out.get("question") and _is_list(features[out["question"]]):
            out[f] = None  # a conversational prompt: its audio part names the clip (checked per row)
            continue
        if found is None and f in REQUIRED:
            raise ManifestError(f"{source}: no column for {f} (looked for {', '.join(DEFAULT_NAMES[f])}"
                                f"{' or an Audio column' if f == 'audio' else ''}; columns: {', '.join(names)}); "
                                f"map it in the config: data.columns.{f}=<column>")
        out[f] = found
    return out


def _is_list(feature: Any) -> bool:
    """A list-valued column (``datasets`` List / Sequence, or a plain list in older versions)."""
    return isinstance(feature, list) or type(feature).__name__ in ("List", "Sequence", "LargeList")


_CHAT_AUDIO_KEYS = ("audio", "audio_url", "path", "url")


def read_conversation(messages: Any) -> tuple[str, Optional[Any]]:
    """TRL's conversational prompt -> (question text, the audio part's clip or None).

    ``messages``: ``[{"role": "system"|"user", "content": str | [{"type": "text"|"audio", ...}]}]``.
    The user messages' text parts are the question; system messages are ignored (the backbone's own
    template applies); an assistant turn (a few-shot prompt) and a second clip are refused."""
    if not isinstance(messages, (list, tuple)) or not all(isinstance(m, dict) for m in messages):
        raise ValueError("a conversational prompt must be a list of {role, content} messages")
    texts, clips = [], []
    for m in messages:
        role = m.get("role")
        if role == "system":
            continue
        if role != "user":
            raise ValueError(f"a {role!r} turn in the prompt: only user turns (and system) are read; "
                             "put one question per row")
        content = m.get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(parts, (list, tuple)):
            raise ValueError(f"message content must be a string or a list of parts, got {type(content).__name__}")
        for part in parts:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"].strip())
            elif kind == "audio":
                clips.append(next((part[k] for k in _CHAT_AUDIO_KEYS if part.get(k)), None))
            elif kind is not None and kind != "text":
                raise ValueError(f"a {kind!r} part in the prompt: only text and audio parts are read")
    if len(clips) > 1:
        raise ValueError(f"{len(clips)} audio parts in the prompt: one clip per item")
    if not clips:
        raise ValueError("the conversational prompt has no audio part ({\"type\": \"audio\"})")
    question = " ".join(t for t in texts if t)
    if not question:
        raise ValueError("the conversational prompt has no text part: no question to ask")
    return question, clips[0]


_ANSWER_TAG = re.compile(r"^\s*<answer>(.*?)</answer>\s*$", re.S)


def _ext(name: Optional[str]) -> str:
    ext = Path(name or "").suffix.lower()
    return ext if ext in _AUDIO_EXT else ".wav"


def materialize_audio(value: Any, base_dir: Path, path_map: Optional[dict]) -> str:
    """An ``Audio(decode=False)`` value ({bytes, path}) or a path string -> a local file path.

    Embedded bytes are written to ``cache_root()/hf_audio/<sha1><ext>`` (once: content-addressed)."""
    if isinstance(value, str):
        return resolve_path(value, base_dir, path_map)
    if not isinstance(value, dict):
        raise ValueError(f"audio value must be a path or {{bytes, path}}, got {type(value).__name__}")
    data, name = value.get("bytes"), value.get("path")
    if data:
        digest = hashlib.sha1(data).hexdigest()
        out = cache_root() / "hf_audio" / f"{digest}{_ext(name)}"
        if not out.is_file() or out.stat().st_size != len(data):
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(out.name + f".{os.getpid()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, out)
        return str(out)
    if name:
        return resolve_path(name, base_dir, path_map)
    raise ValueError("audio value has neither bytes nor a path")


def _answer_text(value: Any, choices: list[str], names: Optional[list]) -> Optional[str]:
    """The answer as a choice's text: a string as is (TRL's ``<answer>...</answer>`` tags stripped); an int
    is an index (into ClassLabel names when the column is one, else into the choices; the number itself
    for an open-ended question); None: unlabeled."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"answer must be a choice's text or index, got {value!r}")
    if isinstance(value, int):
        if not names and not choices:
            return str(value)  # an open-ended question's numeric answer ("how many speakers?" -> 3)
        pool = names if names else choices
        if not 0 <= value < len(pool):
            raise ValueError(f"answer index {value} is out of range for {len(pool)} choices")
        return str(pool[value]).strip()
    if isinstance(value, str):
        tagged = _ANSWER_TAG.match(value)
        return (tagged.group(1) if tagged else value).strip()
    raise ValueError(f"answer must be a choice's text or index, got {type(value).__name__}")


def iter_hf_rows(path: str | Path, columns: Optional[dict] = None, path_map: Optional[dict] = None) -> Iterator[Row]:
    """Lenient, like ``manifest.iter_rows``: one ``Row`` per dataset row (``line`` = row number, 1-based)."""
    path = Path(path)
    ds = load_dataset_any(path)  # first: a missing `datasets` package is one line, not an ImportError
    from datasets import Audio, ClassLabel

    cols = resolve_columns(ds.features, columns, path)
    audio_col = cols["audio"]
    if audio_col and isinstance(ds.features[audio_col], Audio):
        ds = ds.cast_column(audio_col, Audio(decode=False))  # bytes/path only: our loader decodes and resamples
    answer_feat = ds.features.get(cols["target"]) if cols["target"] else None
    label_names = list(answer_feat.names) if isinstance(answer_feat, ClassLabel) else None
    base_dir = path if path.is_dir() else path.parent
    split_default = path.name if path.is_dir() else path.stem
    for i, rec in enumerate(ds, start=1):
        raw_id = rec.get(cols["id"]) if cols["id"] else None
        iid = str(raw_id) if raw_id is not None else f"{split_default}-{i - 1}"
        try:
            choices = rec[cols["choices"]] if cols["choices"] else None
            choices = [] if choices is None else choices  # none: an open-ended question
            if not isinstance(choices, (list, tuple)) or not all(isinstance(c, (str, int, float)) for c in choices):
                raise ValueError(f"choices must be a list of strings, got {choices!r:.60}")
            choices = [str(c).strip() for c in choices]
            question, clip = rec[cols["question"]], None
            if isinstance(question, (list, tuple)):  # TRL's conversational prompt
                question, clip = read_conversation(question)
            if not isinstance(question, str):
                raise ValueError(f"question must be a string, got {type(question).__name__}")
            audio = rec[audio_col] if audio_col else clip
            if audio is None:
                raise ValueError("no audio: the dataset has no audio column and the prompt's audio part names "
                                 "no clip (add {\"type\": \"audio\", \"audio\": <path>} or an Audio column)")
            item = Item(
                id=iid,
                audio=materialize_audio(audio, base_dir, path_map),
                question=question,
                choices=choices,
                target=_answer_text(rec[cols["target"]], choices, label_names) if cols["target"] else None,
                task=str(rec.get(cols["task"]) or "default") if cols["task"] else "default",
                split=str(rec.get(cols["split"]) or split_default) if cols["split"] else split_default,
                meta={"source_row": i - 1},
                evidence=_evidence_text(rec.get(cols["evidence"])) if cols["evidence"] else None,
            )
        except (ValueError, TypeError, KeyError) as e:
            yield Row(i, None, [Issue("malformed_row", i, f"row index {i - 1}: {e}",
                                      "fix the row, or map the right columns with data.columns", iid)])
            continue
        yield Row(i, item, item_issues(item, i), stored_index(item))


__all__ = ["is_hf_source", "iter_hf_rows", "load_dataset_any", "resolve_columns", "materialize_audio", "cache_root",
           "read_conversation",
           "FIELDS", "DEFAULT_NAMES"]
