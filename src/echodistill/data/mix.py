"""`echodistill data mix`: pre-mix a manifest across noise types x SNR levels.

Layout (as in the paper release: one folder per noise type and SNR)::

    <out>/<noise_type>/<snr>dB/<id>.wav
    <out>/noisy.jsonl      one row per item x condition: audio = clean clip, noisy_audio/noise_type/snr set

Row ids are ``<id>@<noise_type>@<snr>dB`` with the item's own id in ``meta["clean_id"]``: manifests
need unique ids, and the clean id pairs a noisy row with its clean item (GSR, choice order).

Each clip's noise comes from ``seeded_rng(seed, item.id, noise_type, snr)``, so a clip does not
depend on which other items, types or levels are mixed in the same run, and re-running resumes:
a clip already present is kept only when ``<out>/mix_index.json`` records it with the same key (seed,
item, type, SNR, the clean file's path/size/mtime, the noise bank's files); any other clip at that path
(another seed, a replaced clean clip or noise file, a run killed before it recorded the clip) is mixed
again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Optional, Sequence


from ..progress import progress
from ..audio.io import load_audio, write_audio
from ..audio.noise import NoiseBank, mix_at_snr, seeded_rng
from ..errors import UserError
from ..provenance import content_key, content_stamps
from .manifest import read_manifest, write_manifest

INDEX = "mix_index.json"


def _safe_name(text: str) -> str:
    """A file/folder name for ``text``; ids with other characters get a hash suffix so names stay unique."""
    safe = re.sub(r"[^\w.\-]+", "_", text).strip(".") or "_"
    if safe != text:
        safe += "-" + hashlib.sha1(text.encode()).hexdigest()[:8]
    return safe


def snr_folder(snr: float) -> str:
    """-10.0 -> '-10dB', 2.5 -> '2.5dB'."""
    return f"{float(snr):g}dB"


def mixed_path(out_dir: Path, item_id: str, noise_type: str, snr: float) -> Path:
    """Where the clip for (item, noise type, SNR) lives."""
    return Path(out_dir) / _safe_name(noise_type) / snr_folder(snr) / f"{_safe_name(item_id)}.wav"


def condition_id(item_id: str, noise_type: str, snr: float) -> str:
    """The noisy row's id: 'q1' x babble x -5 dB -> 'q1@babble@-5dB'."""
    return f"{item_id}@{noise_type}@{snr_folder(snr)}"


def mix_manifest(manifest: Path, out_dir: Path, noise_types: Sequence[str], snrs: Sequence[float], seed: int,
                 noise_dir: Optional[str | Path] = None, path_map: Optional[dict] = None) -> Path:
    """Write every item x noise type x SNR clip and ``<out_dir>/noisy.jsonl``; returns that manifest's path.

    ``noise_dir`` defaults to ``<manifest dir>/noise`` (where ``data build`` puts the bank).
    Raises a UserError before any work if a noise type is unavailable or the lists are empty.
    """
    manifest, out_dir = Path(manifest), Path(out_dir)
    if not noise_types or not snrs:
        raise UserError("data mix needs at least one --noise-types value and one --snr value")
    items = read_manifest(manifest, path_map=path_map)
    bank = NoiseBank(noise_dir if noise_dir is not None else manifest.parent / "noise")
    bank.check(noise_types)  # fail now, not after an hour of mixing
    conditions = [(str(t), float(s)) for t in noise_types for s in snrs]

    index_path = out_dir / INDEX
    try:
        index = json.loads(index_path.read_text()) if index_path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        index = {}
    noise_key = content_key(bank.fingerprint())
    rows, written = [], 0
    with progress(len(items) * len(conditions), "data mix", "clip") as bar:
        for item in items:
            clean = None  # decoded only if some clip of this item is missing (fast resume)
            stamp = content_stamps([item.audio])[0]
            for noise_type, snr in conditions:
                path = mixed_path(out_dir, item.id, noise_type, snr)
                rel = path.relative_to(out_dir).as_posix()
                key = content_key([seed, item.id, noise_type, snr, stamp, noise_key])
                if not path.exists() or index.get(rel) != key:
                    if clean is None:
                        clean = load_audio(item.audio)
                    rng = seeded_rng(seed, item.id, noise_type, snr)
                    noisy = mix_at_snr(clean, bank.sample(noise_type, clean.size, rng), snr)
                    # Write then rename: an interrupted run never leaves a truncated clip that resume would keep.
                    tmp = path.with_name(f".{path.stem}.partial.wav")
                    write_audio(tmp, noisy)
                    os.replace(tmp, path)
                    index[rel] = key
                    written += 1
                    if written % 200 == 0:
                        _write_index(index_path, index)
                rows.append(replace(item, id=condition_id(item.id, noise_type, snr), noisy_audio=str(path.resolve()),
                                    noise_type=noise_type, snr=snr, meta={**item.meta, "clean_id": item.id}))
                bar.update()
    _write_index(index_path, index)
    out = out_dir / "noisy.jsonl"
    write_manifest(out, rows)
    print(f"data mix: {len(rows)} clips in {out_dir} ({written} written, {len(rows) - written} already there); "
          f"manifest {out}")
    return out


def _write_index(path: Path, index: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(index, indent=0, sort_keys=True))
    os.replace(tmp, path)
