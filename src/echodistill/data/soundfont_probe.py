"""A paired probe of soundfont transfer: the same instrument clips rendered by every soundfont.

``build_soundfont_probe`` draws ``n`` instrument clips exactly as the benchmark draws its training
ones (single-line motifs, the same tempo, articulation and dynamics ranges; the ``probe`` pool, so no
clip equals a benchmark clip) and renders each with every installed soundfont, dry and unmastered:
the plain rendering any benchmark build, old or new, could have produced. Each item keeps its
choices across soundfonts, so per-soundfont accuracies are paired. ``meta.soundfont`` names the
renderer; ``meta.probe_clip`` the shared clip.

Used by ``benchmarks/soundfont_transfer.py`` to measure how much a warm-up's instrument accuracy
drops on a soundfont it never heard (``echodistill eval --manifest <out>/probe.jsonl``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

from ..audio.io import SAMPLE_RATE, write_audio
from . import sources as S
from .bench import TASKS, BenchmarkError, _music_spec, _rng, _say, _write_manifest, draw_choices, postprocess


def build_soundfont_probe(out_dir: Path, n: int = 150, seed: int = 0,
                          soundfonts: Optional[Sequence[str]] = None) -> Path:
    """Write ``out_dir/probe.jsonl`` and its clips; returns the manifest path. ``soundfonts``: names
    from ``sources.SOUNDFONTS`` (default: every one installed; a missing one is skipped with a line)."""
    avail = S.probe()
    wanted = list(soundfonts) if soundfonts else [f.name for f in S.SOUNDFONTS]
    unknown = [f for f in wanted if f not in S.SOUNDFONT_BY_NAME]
    if unknown:
        raise BenchmarkError(f"unknown soundfont(s) {unknown}; known: {', '.join(S.SOUNDFONT_BY_NAME)}")
    fonts = [f for f in wanted if f in avail.soundfonts]
    for f in wanted:
        if f not in fonts:
            _say(f"probe: skipped soundfont {f}: not installed (Debian package: {S.SOUNDFONT_BY_NAME[f].package})")
    if not avail.fluidsynth or not fonts:
        raise BenchmarkError("the soundfont probe needs fluidsynth and at least one soundfont: "
                             + "; ".join(avail.missing))
    task = next(t for t in TASKS if t.name == "instrument")
    specs = [_music_spec(task, "probe", k, seed, ("",)) for k in range(n)]  # notes only; rendered below
    out_dir = Path(out_dir)
    rows = []
    for font in fonts:
        _say(f"probe: rendering {n} clips with {font}")
        wavs = S.render_clips([s.notes for s in specs], S.soundfont_path(font))
        for k, (s, wav) in enumerate(zip(specs, wavs)):
            wav, why = postprocess(wav, _rng(seed, "probe_gain", k))
            if wav is None:
                _say(f"probe: clip {k} with {font} dropped ({why})")
                continue
            iid = f"probe-{k:04d}-{font}"
            rel = f"audio/{iid}.wav"
            write_audio(out_dir / rel, wav)
            choices = draw_choices(task, s.label, _rng(seed, "probe_choices", k))
            meta = {key: v for key, v in s.meta.items() if key != "mastering"}
            meta.update(soundfont=font, room="dry", probe_clip=k, duration_s=round(wav.size / SAMPLE_RATE, 3),
                        group=f"probe|{k}")
            rows.append(dict(id=iid, audio=rel, question=task.question, choices=choices, target=s.label,
                             task=task.name, split="test", meta=meta))
    path = out_dir / "probe.jsonl"
    _write_manifest(path, rows)
    (out_dir / "probe.json").write_text(json.dumps({"n": n, "seed": seed, "soundfonts": fonts,
                                                    "items": len(rows)}, indent=2) + "\n")
    _say(f"probe: {len(rows)} items ({n} clips x {len(fonts)} soundfonts) -> {path}")
    return path
