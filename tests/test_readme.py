"""Every code block of README.md runs as written after a demo (`make demo`), in order, in one folder.

Blocks marked ``<!-- readme-test: skip (why) -->`` on the line before the fence are not run (only the
set-up commands themselves). Without ``ECHODISTILL_README_DEMO`` the test first runs the smoke-sized
demo into a fresh folder (``echodistill demo --preset smoke --out runs/demo``: the same layout as
``make demo``, smaller budgets); with ``ECHODISTILL_README_DEMO=DIR`` (a folder holding ``runs/demo``
from ``make demo``) it runs the blocks in a copy-free way inside DIR, which then also gets the
quick start's ``runs/mine`` etc.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
SKIP = re.compile(r"<!--\s*readme-test:\s*skip\b")


def readme_blocks(text: str) -> list[tuple[int, str, str]]:
    """``(line, language, code)`` of every fenced block not marked skip."""
    out = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^```(\w+)\s*$", lines[i])
        if m:
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            marked = i > 0 and SKIP.search(lines[i - 1])
            if not marked:
                out.append((i + 1, m.group(1), "\n".join(lines[i + 1:j]) + "\n"))
            i = j + 1
        else:
            i += 1
    return out


def test_readme_blocks_are_found_and_marked():
    blocks = readme_blocks(README.read_text(encoding="utf-8"))
    langs = [b[1] for b in blocks]
    assert "bash" in langs and "python" in langs
    assert all(lang in ("bash", "python") for lang in langs), "a block in a language this test cannot run"
    text = README.read_text(encoding="utf-8")
    assert "make demo" in text.split("## Quick start")[0]  # the skipped block is the set-up only
    assert not any("make " in code for _, _, code in blocks)


def _env() -> dict:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               ECHODISTILL_PROGRESS="lines")
    return env


@pytest.mark.slow
def test_every_readme_block_runs_as_written_after_the_demo(tmp_path):
    env = _env()
    given = os.environ.get("ECHODISTILL_README_DEMO")
    root = Path(given) if given else tmp_path
    if not given:
        subprocess.run([sys.executable, "-m", "echodistill.cli", "demo", "--preset", "smoke", "--out", "runs/demo"],
                       cwd=root, env=env, check=True, timeout=3600)
    assert (root / "runs" / "demo" / "eval" / "warmup" / "metrics.json").is_file()
    for line, lang, code in readme_blocks(README.read_text(encoding="utf-8")):
        argv = ["bash", "-euo", "pipefail", "-c", code] if lang == "bash" else [sys.executable, "-c", code]
        res = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, timeout=3600)
        assert res.returncode == 0, (f"README.md:{line} ({lang}) exited {res.returncode}\n"
                                     f"--- stdout\n{res.stdout[-3000:]}\n--- stderr\n{res.stderr[-3000:]}")
    html = (root / "runs" / "report-mine" / "report.html").read_text(encoding="utf-8")
    assert "class='verdict'" in html and "<code>mine</code>" in html
    assert (root / "runs" / "api" / "final" / "README.md").is_file()
