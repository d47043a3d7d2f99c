"""The item schema every reader yields: ``Item``, the ``Row`` / ``Issue`` records, the per-item checks.

Shared by the manifest readers (data/manifest.py) and the Hugging Face dataset reader (data/hf.py),
which turn their rows into the same ``Row``/``Item`` values with the same checks. Its own module so
that hf.py needs nothing from manifest.py, which dispatches ``fmt="hf"`` to hf.py (no import cycle).
manifest.py re-exports every name here: ``from echodistill.data.manifest import Item`` keeps working.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from ..errors import UserError


class ManifestError(UserError, ValueError):
    """A manifest that cannot be used; the message names ``file:line`` and the fix."""


@dataclass
class Item:
    """One audio question (clean clip; optionally a pre-mixed noisy version).

    Multiple-choice when ``choices`` holds >= 2 options, open-ended when it is empty (the answer is free
    text). Labeled when ``target`` is set; an unlabeled item (``target`` None) trains only with methods
    that need no label (``data/labels.py``: ``needs_labels``) and is evaluated with label-free metrics.
    """

    id: str
    audio: str  # clean clip, resolved path
    question: str
    choices: list[str]  # [] = an open-ended question
    # the text of the correct choice (never an index: stored order is not trusted), or of the reference
    # answer of an open-ended question; None = unlabeled
    target: Optional[str] = None
    task: str = "default"
    split: str = "unspecified"
    noisy_audio: Optional[str] = None  # pre-mixed noisy clip (same length as the clean one)
    noise_type: Optional[str] = None
    snr: Optional[float] = None  # dB
    meta: dict = field(default_factory=dict)
    # What the clip contains, in words (the phrase spoken, the notes played): the reasoning format's
    # evidence target and the reference of the evidence metrics. Optional; `data build` writes it.
    evidence: Optional[str] = None

    def to_dict(self) -> dict:
        """Our schema as a dict; optional fields are left out when unset (keeps files small)."""
        d = asdict(self)
        for k in ("target", "noisy_audio", "noise_type", "snr", "evidence"):
            if d[k] is None:
                del d[k]
        if not d["meta"]:
            del d["meta"]
        return d

    def to_json(self) -> str:
        """One JSONL line (no newline), UTF-8 text kept readable."""
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @property
    def labeled(self) -> bool:
        return self.target is not None

    @property
    def open_ended(self) -> bool:
        return not self.choices

    @classmethod
    def from_dict(cls, d: dict) -> "Item":
        """Build from our schema as is (no path resolution, no validation: see ``iter_rows``)."""
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


@dataclass
class Issue:
    """A problem found while reading. ``line`` is 1-based; ``item_id`` when the row had one."""

    kind: str
    line: int
    message: str
    fix: str
    item_id: Optional[str] = None


@dataclass
class Row:
    """One line (JSONL) or list element (JSON) with its parsed item (None when unusable)."""

    line: int
    item: Optional[Item]
    issues: list[Issue] = field(default_factory=list)
    stored_target_index: Optional[int] = None  # position of the target as stored (position-bias check)


def stored_index(item: Item) -> Optional[int]:
    """Where the target is stored among the choices (the position-bias check); None when it is not one."""
    return item.choices.index(item.target) if item.target is not None and item.target in item.choices else None


# ---------------------------------------------------------------- paths
def resolve_path(p: str, base_dir: str | Path, path_map: Optional[dict] = None) -> str:
    """Rewrite the longest matching ``path_map`` prefix, expand ``~``, then anchor relative paths at ``base_dir``.

    The map is applied first so that a release's absolute paths (``/root/data/...``) can be mapped to
    a local folder, or to a relative one that is then anchored at the manifest's folder.
    """
    p = str(p)
    for old in sorted(path_map or {}, key=len, reverse=True):
        if old and p.startswith(old):
            p = str(path_map[old]) + p[len(old):]
            break
    p = os.path.expanduser(p)
    if not os.path.isabs(p):
        p = os.path.abspath(os.path.join(str(base_dir), p))  # absolute: immune to a later chdir
    return p


# ---------------------------------------------------------------- checks
def item_issues(item: Item, line: int) -> list[Issue]:
    """Problems that make an item unusable for training or scoring, whatever its audio."""
    out = []
    if len(item.choices) == 1:  # none at all is an open-ended question
        out.append(Issue("too_few_choices", line, "1 choice; a multiple-choice item needs >= 2",
                         "add the missing options, or drop `choices` for an open-ended question", item.id))
    folded = [c.casefold() for c in item.choices]
    dups = sorted({c for c, f in zip(item.choices, folded) if folded.count(f) > 1})
    if dups:
        out.append(Issue("duplicate_choices", line, f"choices repeat {dups} (ignoring case); the answer is ambiguous",
                         "make every choice distinct", item.id))
    if item.target is not None and not item.target.strip():
        out.append(Issue("empty_target", line, "target is empty (\"\"): nothing to compare an answer with",
                         "give the answer's text, or leave `target` out (an unlabeled item)", item.id))
    elif item.target is not None and item.choices and item.target not in item.choices:
        near = [c for c in item.choices if c.casefold() == item.target.casefold()]
        hint = f" (it matches {near[0]!r} only when ignoring case)" if near else ""
        out.append(Issue("target_not_in_choices", line, f"target {item.target!r} is not one of the choices "
                         f"{item.choices}{hint}", "set the target to the exact text of one choice", item.id))
    if any(not c for c in item.choices):
        out.append(Issue("empty_choice", line, "a choice is empty (\"\"): no answer can be matched to it",
                         "remove the empty choice or give it its text", item.id))
    if item.noisy_audio and (item.noise_type is None or item.snr is None):
        missing = " and ".join(k for k, v in (("noise_type", item.noise_type), ("snr", item.snr)) if v is None)
        out.append(Issue("noisy_without_snr", line, f"a pre-mixed noisy_audio without {missing}: evaluation reports "
                         "accuracy per noise type and SNR", f"add {missing} to the item, or drop noisy_audio", item.id))
    return out
