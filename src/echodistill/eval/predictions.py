"""Reading back ``predictions.jsonl``, the per-row output of ``echodistill eval``.

Its own module because the report, the HTML page and the results store (scripts/experiment.py) all
read these files, and the page must not import the report that writes it (no import cycle).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import UserError


def read_predictions(path: Path) -> list:
    """Rows of a predictions.jsonl; a bad line raises UserError naming file:line."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for k, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{k}: not valid JSON ({e.msg}); re-run `echodistill eval` to "
                                "rewrite this file") from None
            if isinstance(row, dict):
                row["_where"] = f"{path}:{k}"
            rows.append(row)
    if not rows:
        raise UserError(f"{path}: no prediction rows; re-run `echodistill eval --out {path.parent}`")
    return rows
