"""Manifests: three readers (ours, the paper release's rows, MMAU/MMAR JSON) and a writer.

The item schema they yield (``Item``, ``Row``, ``Issue``, ``ManifestError``, ``resolve_path``,
``item_issues``) is in ``data/items.py`` and re-exported here.

Our format is JSONL, one item per line::

    {"id": "q1", "audio": "audio/q1.wav", "question": "...", "choices": ["a", "b"], "target": "a",
     "task": "speaker_count", "split": "train",
     "noisy_audio": null, "noise_type": null, "snr": null, "meta": {}, "evidence": "..."}

``evidence`` (optional, any format): what the clip contains in words, read by the reasoning format.

``choices`` left out (or ``[]``): an open-ended question; ``target`` left out: an unlabeled item (both in
every format).

Relative audio paths resolve against the manifest's folder, after an optional ``path_map``
({old_prefix: new_prefix}) has rewritten foreign prefixes (``/data/mmau/`` -> ``/mnt/mmau/``).

Two layers, so that ``echodistill data check`` can report *every* problem while training code gets
one clear error:

* ``iter_rows(path, fmt, path_map)`` is lenient: it yields ``Row(line, item | None, issues)`` for every
  line/element, with structural problems (bad JSON, non-UTF-8, missing or ill-typed fields) and
  per-item problems (target not in choices, too few or duplicate choices) as ``Issue`` values.
* ``read_manifest`` is strict: it raises ``ManifestError`` naming ``file:line`` at the first issue.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence, TypeVar

from . import hf
# The item schema lives in data/items.py (hf.py builds the same Items); its names stay importable from here.
from .items import Issue, Item, ManifestError, Row, item_issues, resolve_path, stored_index

T = TypeVar("T")


def seeded_subset(entries: Sequence[T], n: int, seed: int, key: Callable[[T], str] = lambda e: e.id) -> list[T]:
    """At most ``n`` entries chosen by a seeded hash of their id, returned in their original order.

    Independent of file order (manifests are often sorted by task, so "the first n" would cover one
    or two tasks only) and stable across processes. ``n <= 0`` keeps everything.
    """
    if n <= 0 or n >= len(entries):
        return list(entries)
    rank = sorted(range(len(entries)), key=lambda i: hashlib.sha256(f"{seed}\x00{key(entries[i])}".encode()).hexdigest())
    keep = set(rank[:n])
    return [e for i, e in enumerate(entries) if i in keep]

FORMATS = ("auto", "echodistill", "release", "mmau", "hf")  # hf: a Hugging Face dataset (data/hf.py)


# ---------------------------------------------------------------- paths
def _relative_if_under(p: str, base_dir: Path) -> str:
    """``p`` relative to ``base_dir`` when it lies under it, else unchanged (portable manifests)."""
    try:
        return Path(os.path.abspath(p)).relative_to(base_dir.resolve()).as_posix()
    except ValueError:
        return p


# ---------------------------------------------------------------- raw reading (lenient)
MAX_LINE_BYTES = 4 << 20  # one item per line: a longer line is reported, never held in memory


def _lines(f) -> Iterator[tuple[int, Optional[bytes]]]:
    """(line_no, bytes) per line, or (line_no, None) for a line over MAX_LINE_BYTES (skipped in chunks)."""
    n = 0
    while True:
        raw = f.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        n += 1
        if len(raw) > MAX_LINE_BYTES:
            while raw and not raw.endswith(b"\n"):
                raw = f.readline(MAX_LINE_BYTES)
            yield n, None
            continue
        yield n, raw


def _decode_lines(path: Path) -> Iterator[tuple[int, Optional[str], Optional[Issue]]]:
    """Yield (line_no, text | None, issue | None) for each non-blank line; bad UTF-8 skips only that line."""
    with open(path, "rb") as f:
        for n, raw in _lines(f):
            if raw is None:
                yield n, None, Issue("line_too_long", n, f"the line is longer than {MAX_LINE_BYTES >> 20} MiB",
                                     "one item per line; move large data (audio, features) out of the manifest")
                continue
            if n == 1 and raw.startswith(b"\xef\xbb\xbf"):  # BOM written by some Windows editors
                raw = raw[3:]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield n, None, Issue("non_utf8", n, f"byte {e.start} of the line is not UTF-8 "
                                     f"({raw[e.start:e.start + 4]!r})",
                                     "re-save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)")
                continue
            if text.strip():
                yield n, text, None


def _json_elements(path: Path) -> Iterator[tuple[int, Any, Optional[Issue]]]:
    """Yield (line_no, element, issue) for a JSON list file, with each element's starting line.

    The list is walked element by element with ``raw_decode`` so that errors and items carry line
    numbers (``json.load`` would give neither).
    """
    if path.stat().st_size > 64 * MAX_LINE_BYTES:
        yield 1, None, Issue("line_too_long", 1, f"a {path.stat().st_size >> 20} MiB JSON list is read whole",
                             "convert it to JSONL (one item per line), which is read line by line")
        return
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        yield line, None, Issue("non_utf8", line, f"byte {e.start} of the file is not UTF-8 "
                                f"({data[e.start:e.start + 4]!r}); bad characters were replaced to read on",
                                "re-save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)")
        text = data.decode("utf-8", errors="replace")
    dec = json.JSONDecoder()

    def line_of(pos: int) -> int:
        return text.count("\n", 0, pos) + 1

    def skip_ws(pos: int) -> int:
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        return pos

    pos = skip_ws(0)
    if pos < len(text) and text[pos] == "{":
        # {"data": [...]} or {id: {...}, ...} wrappers: accept a dict of items or one list value
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            yield e.lineno, None, Issue("malformed_json", e.lineno, f"invalid JSON: {e.msg} (column {e.colno})",
                                        "fix the JSON syntax at that line")
            return
        except RecursionError:
            yield 1, None, _too_deep(1)
            return
        lists = [v for v in obj.values() if isinstance(v, list)]
        if len(lists) == 1:
            obj = lists[0]
        elif all(isinstance(v, dict) for v in obj.values()):
            obj = [{"id": k, **v} for k, v in obj.items()]
        else:
            yield 1, None, Issue("malformed_json", 1, "expected a JSON list of items",
                                 "wrap the items in [ ... ] (MMAU/MMAR style)")
            return
        for el in obj:
            yield 1, el, None  # positions are lost inside wrappers; the item id still locates it
        return
    if pos >= len(text) or text[pos] != "[":
        yield line_of(pos), None, Issue("malformed_json", line_of(pos), "expected a JSON list of items ('[')",
                                        "use a JSON list (MMAU/MMAR style) or JSONL, one item per line")
        return
    pos = skip_ws(pos + 1)
    if pos < len(text) and text[pos] == "]":
        return
    while pos < len(text):
        try:
            el, end = dec.raw_decode(text, pos)
        except RecursionError:
            yield line_of(pos), None, _too_deep(line_of(pos))
            return
        except json.JSONDecodeError as e:
            yield e.lineno, None, Issue("malformed_json", e.lineno, f"invalid JSON: {e.msg} (column {e.colno}); "
                                        "the rest of the file could not be read",
                                        "fix the JSON syntax at that line")
            return
        yield line_of(pos), el, None
        pos = skip_ws(end)
        if pos < len(text) and text[pos] == ",":
            pos = skip_ws(pos + 1)
        elif pos < len(text) and text[pos] == "]":
            return
        else:
            yield line_of(pos), None, Issue("malformed_json", line_of(pos), "expected ',' or ']' after an item; "
                                            "the rest of the file could not be read", "fix the JSON syntax at that line")
            return
    yield line_of(pos), None, Issue("malformed_json", line_of(pos), "the JSON list is not closed with ']'",
                                    "the file looks truncated; re-export it")


def detect_format(path: Path) -> str:
    """``mmau`` for a ``.json`` file or one starting with '[' / '{' spanning lines; else JSONL (per-row schema)."""
    if path.suffix.lower() == ".json":
        return "mmau"
    with open(path, "rb") as f:
        head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    return "mmau" if head.startswith(b"[") else "jsonl"


def _row_format(d: dict, fmt: str) -> str:
    """Per-row schema for JSONL under ``auto``: the release's rows carry ``prompt`` and ``*_audio_path``."""
    if fmt != "auto":
        return fmt
    if "clean_audio_path" in d or "noisy_audio_path" in d or ("prompt" in d and "question" not in d):
        return "release"
    if "audio" not in d and ("audio_id" in d or "audio_path" in d or "answer" in d):
        return "mmau"
    return "echodistill"


# ---------------------------------------------------------------- row -> item
class _Bad(Exception):
    """Internal: a structural problem in one row (becomes a ``missing_field`` or ``bad_field`` Issue)."""


def _first(d: dict, names: tuple[str, ...], what: str, required: bool = True):
    for n in names:
        if n in d and d[n] is not None:
            return d[n]
    if required:
        raise _Bad(f"missing required field {' | '.join(repr(n) for n in names)} ({what})")
    return None


def _as_str(v, name: str, allow_int: bool = False) -> str:
    if isinstance(v, str):
        return v
    if allow_int and isinstance(v, int) and not isinstance(v, bool):
        return str(v)  # numeric ids are common in MMAU-style files
    raise _Bad(f"field {name!r} must be a string, got {type(v).__name__} ({v!r:.40})")


def _as_choices(v) -> list[str]:
    if not isinstance(v, list):
        raise _Bad(f"field 'choices' must be a list of strings, got {type(v).__name__}")
    out = []
    for c in v:
        if isinstance(c, bool) or not isinstance(c, (str, int, float)):
            raise _Bad(f"field 'choices' must hold strings, got {type(c).__name__} ({c!r:.40})")
        out.append(str(c).strip())
    return out


def _strip(v: Optional[str]) -> Optional[str]:
    return v.strip() if v is not None else None


def _as_evidence(v) -> Optional[str]:
    """The optional evidence text; blank counts as absent."""
    return None if v is None else (_as_str(v, "evidence").strip() or None)


def _as_snr(v) -> Optional[float]:
    if v is None:
        return None
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v.lower().replace("db", "").strip())
        except ValueError:
            pass
    raise _Bad(f"field 'snr' must be a number of dB, got {v!r:.40}")


def _split_from_name(path: Path) -> Optional[str]:
    """``train.jsonl`` -> train, ``foo_val.json`` -> val: the release keeps one file per split."""
    stem = path.stem.lower()
    for name, canon in (("train", "train"), ("validation", "val"), ("valid", "val"), ("val", "val"),
                        ("dev", "val"), ("test", "test")):
        if stem == name or stem.endswith(("_" + name, "-" + name)) or stem.startswith((name + "_", name + "-")):
            return canon
    return None


@dataclass(frozen=True)
class _Source:
    """Where one required text field comes from in a row: keys tried in order, then the message words."""

    keys: tuple[str, ...]  # the first key present with a non-null value wins
    what: str  # "missing required field 'a' | 'b' (<what>)"
    name: str  # "field '<name>' must be a string, ..."


@dataclass(frozen=True)
class _Schema:
    """How one row format maps onto ``Item``. ``choices`` and ``split`` are read alike in every format."""

    id: _Source
    audio: _Source
    question: _Source
    target: _Source
    task_keys: tuple[str, ...]  # optional; the first non-null one, else task_default
    task_default: str
    noisy_key: Optional[str] = None  # the pre-mixed noisy clip; a format with one also reads noise_type and snr
    own_meta: bool = False  # the row's "meta" object is ours (our format); elsewhere it is dropped

    def used_keys(self) -> set[str]:
        """The keys read into Item fields; every other key (but "meta") is kept in item.meta."""
        used = {"choices", "split", "evidence", *self.task_keys}
        for src in (self.id, self.audio, self.question, self.target):
            used.update(src.keys)
        if self.noisy_key:
            used.update((self.noisy_key, "noise_type", "snr"))
        return used


# One table instead of one Item(...) block per format, so that the three readers cannot drift
# apart; the keys, their order and the words of every error message are the readers' contract
# (tests compare the messages word for word).
_SCHEMAS = {
    "release": _Schema(  # the paper release's rows
        id=_Source(("id",), "item id", "id"),
        audio=_Source(("clean_audio_path",), "the clean clip", "clean_audio_path"),
        question=_Source(("prompt", "question"), "the question text", "prompt"),
        target=_Source(("target",), "the correct choice text", "target"),
        task_keys=("task",), task_default="release",
        noisy_key="noisy_audio_path",
    ),
    "mmau": _Schema(  # MMAU/MMAR JSON
        id=_Source(("id", "question_id"), "item id", "id"),
        audio=_Source(("audio_id", "audio_path", "audio"), "the audio clip", "audio_id"),
        question=_Source(("question",), "the question text", "question"),
        target=_Source(("answer",), "the correct choice text", "answer"),
        task_keys=("task", "category", "sub-category"), task_default="default",
    ),
    "echodistill": _Schema(  # ours (also any other row format name: the fallback)
        id=_Source(("id",), "item id", "id"),
        audio=_Source(("audio",), "the clean clip", "audio"),
        question=_Source(("question",), "the question text", "question"),
        target=_Source(("target",), "the correct choice text", "target"),
        task_keys=("task",), task_default="default",
        noisy_key="noisy_audio", own_meta=True,
    ),
}


def _build_item(d: dict, rfmt: str, path: Path, path_map: Optional[dict]) -> Item:
    s = _SCHEMAS.get(rfmt, _SCHEMAS["echodistill"])
    base = path.parent
    default_split = _split_from_name(path) or ("test" if rfmt == "mmau" else "unspecified")
    meta = {}
    if s.own_meta:  # checked before the fields: a bad meta is the error reported
        meta = d.get("meta") or {}
        if not isinstance(meta, dict):
            raise _Bad(f"field 'meta' must be an object, got {type(meta).__name__}")

    def text(src: _Source, allow_int: bool = False, required: bool = True) -> Optional[str]:
        value = _first(d, src.keys, src.what, required=required)
        return None if value is None else _as_str(value, src.name, allow_int=allow_int)

    noisy = d.get(s.noisy_key) if s.noisy_key else None
    noise_type = d.get("noise_type") if s.noisy_key else None
    item = Item(  # keyword order = check order: the first bad field is the one reported
        id=text(s.id, allow_int=True),
        audio=resolve_path(text(s.audio), base, path_map),
        question=text(s.question),
        choices=_as_choices(_first(d, ("choices",), "the answer options", required=False) or []),  # none: open-ended
        target=_strip(text(s.target, required=False)),  # optional: an unlabeled item
        task=_as_str(_first(d, s.task_keys, "", required=False) or s.task_default, "task"),
        split=_as_str(d.get("split") or default_split, "split"),
        noisy_audio=resolve_path(_as_str(noisy, s.noisy_key), base, path_map) if noisy else None,
        noise_type=_as_str(noise_type, "noise_type") if noise_type is not None else None,
        snr=_as_snr(d.get("snr")) if s.noisy_key else None,
        meta=dict(meta),
        evidence=_as_evidence(d.get("evidence")),
    )
    # Unknown keys are kept (a release's or benchmark's extra columns are often useful in reports).
    used = s.used_keys()
    item.meta.update({k: v for k, v in d.items() if k not in used and k != "meta"})
    return item


def iter_rows(path: str | Path, fmt: str = "auto", path_map: Optional[dict] = None,
              columns: Optional[dict] = None) -> Iterator[Row]:
    """Lenient reader: one ``Row`` per line/element, never raising for bad content.

    Raises ``ManifestError`` only when the file itself cannot be opened or ``fmt`` is unknown.
    A Hugging Face dataset (``fmt="hf"``, a save_to_disk folder, .parquet/.arrow) goes to ``data/hf.py``
    with ``columns`` (``data.columns``: our field -> its column).
    """
    path = Path(path)
    if fmt not in FORMATS:
        raise ManifestError(f"unknown manifest format {fmt!r}; use one of {', '.join(FORMATS)}")
    if fmt == "hf" or (fmt == "auto" and hf.is_hf_source(path)):
        yield from hf.iter_hf_rows(path, columns, path_map)
        return
    if not path.is_file():
        what = " (it is a folder)" if path.is_dir() else " (it is not a regular file)" if path.exists() else ""
        raise ManifestError(f"{path}: manifest not found{what}; check the path")
    try:
        file_fmt = "mmau" if fmt == "mmau" else detect_format(path)
        if file_fmt == "mmau":
            source: Iterator = ((n, el, iss) for n, el, iss in _json_elements(path))
        else:
            source = _jsonl_values(path)
        for n, d, issue in source:
            if issue is not None:
                yield Row(n, None, [issue])
                continue
            yield _row_from_value(n, d, fmt if fmt != "auto" else ("mmau" if file_fmt == "mmau" else "auto"),
                                  path, path_map)
    except OSError as e:
        raise ManifestError(f"{path}: cannot read the manifest ({e.strerror or e}); check permissions") from None


def _jsonl_values(path: Path) -> Iterator[tuple[int, Any, Optional[Issue]]]:
    for n, text, issue in _decode_lines(path):
        if issue is not None:
            yield n, None, issue
            continue
        try:
            value = json.loads(text)
        except RecursionError:
            yield n, None, _too_deep(n)
            continue
        except json.JSONDecodeError as e:
            yield n, None, Issue("malformed_json", n, f"invalid JSON: {e.msg} (column {e.colno})",
                                 "fix the JSON syntax on that line (one complete object per line)")
            continue
        yield n, value, None


def _too_deep(line: int) -> Issue:
    return Issue("malformed_json", line, "JSON nested too deeply to read (thousands of levels)",
                 "an item is a flat object: id, audio, question, choices, target (+ meta)")


def _row_from_value(n: int, d: Any, fmt: str, path: Path, path_map: Optional[dict]) -> Row:
    if not isinstance(d, dict):
        return Row(n, None, [Issue("malformed_json", n, f"expected a JSON object, got {type(d).__name__}",
                                   "each item must be an object with id, audio, question, choices, target")])
    item_id = d.get("id", d.get("question_id"))
    item_id = str(item_id) if isinstance(item_id, (str, int)) and not isinstance(item_id, bool) else None
    rfmt = _row_format(d, fmt)
    try:
        item = _build_item(d, rfmt, path, path_map)
    except _Bad as e:
        fields = {"release": "id, prompt, clean_audio_path (+ choices, target when it has them)",
                  "mmau": "id, audio_id, question (+ choices, answer when it has them)"}.get(
            rfmt, "id, audio, question (+ choices, target when it has them)")
        # valid JSON with a field missing or of the wrong type: named as such, not as broken JSON
        kind = "missing_field" if str(e).startswith("missing required field") else "bad_field"
        return Row(n, None, [Issue(kind, n, f"{e} [{rfmt} schema]",
                                   f"every item needs {fields} with the right types", item_id)])
    return Row(n, item, item_issues(item, n), stored_index(item))


# ---------------------------------------------------------------- strict API
def read_manifest(path: str | Path, path_map: Optional[dict] = None, fmt: str = "auto",
                  columns: Optional[dict] = None) -> list[Item]:
    """Read every item; raise ``ManifestError`` at the first unusable row (file:line, item id, fix).

    Duplicate ids are an error too (ids key predictions, splits and noise draws). Audio is not opened
    here; ``echodistill data check`` does that.
    """
    items, seen = [], {}
    for row in iter_rows(path, fmt, path_map, columns):
        if row.issues:
            i = row.issues[0]
            where = f"{path}:{i.line}" + (f" (item {i.item_id})" if i.item_id else "")
            raise ManifestError(f"{where}: {i.kind}: {i.message}; fix: {i.fix}. "
                                f"Run `echodistill data check {path}` to list every problem")
        item = row.item
        if item.id in seen:
            raise ManifestError(f"{path}:{row.line} (item {item.id}): duplicate_id: id also used on line "
                                f"{seen[item.id]}; fix: give every item a unique id")
        seen[item.id] = row.line
        items.append(item)
    return items


def write_manifest(path: str | Path, items: list[Item]) -> None:
    """Write our JSONL schema; audio paths under the manifest's folder are stored relative to it.

    Written to a temporary file and renamed, so a crash never leaves half a manifest behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = path.parent
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for it in items:
            d = it.to_dict()
            d["audio"] = _relative_if_under(it.audio, base)
            if it.noisy_audio:
                d["noisy_audio"] = _relative_if_under(it.noisy_audio, base)
            f.write(json.dumps(d, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
