"""What a result came from: content hashes of weights and files, the code version, a settings key.

Cached or resumable results (eval rows, demo stages) are keyed by ``content_key(...)`` over what
determines them, so a rerun after relabelling a manifest, remapping audio or switching dtype never
reuses rows made from other inputs. Every committed result records ``code_version()`` and the
sha256 of the weights it came from, so a reader can tell why a rerun differs. The one place for both:
the results store (``eval.store``), evaluation (``metrics.json``'s ``provenance``), the model card,
the report and the demo's stage markers all call these two functions.

Also here: ``verify_weights`` opens every safetensors header of a model folder before a long load, so a
truncated download is one clear line (file and fix) instead of a traceback from deep inside transformers.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
from pathlib import Path
from typing import Any, Iterable, Optional

from .errors import UserError

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
# The CPU kernels a reproducible run pins, all to one instruction set (AVX2): MKL, ATen, oneDNN (the audio
# encoder's convolutions) and OpenBLAS (numpy). Unpinned, each picks kernels by the CPU, and an AVX-512
# machine computes other last bits than an AVX2 one. The round-4 runs set these; the results store records
# them, and the eval feature cache keys its entries by them.
KERNEL_PINS = {"MKL_CBWR": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
               "OPENBLAS_CORETYPE": "Haswell"}
KERNEL_ENV = tuple(KERNEL_PINS)
_CHUNK = 1 << 20
_file_hashes: dict[tuple, str] = {}  # _stat_key -> sha256 (hash each file once per process)
_weight_hashes: dict[tuple, str] = {}  # ((name, *_stat_key), ...) -> weights_sha256


def _stat_key(path: str | Path, st: os.stat_result) -> tuple:
    """What a per-process hash cache is keyed by: the ctime changes with any write or utime, so a copy that
    restored size and mtime (``cp -p``) is hashed again."""
    return (str(Path(path).resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def sha256_file(path: str | Path) -> str:
    """sha256 hex of a file's bytes, read in 1 MiB chunks (bounded memory for any size).

    A folder (a Hugging Face ``save_to_disk`` dataset used as a manifest) hashes its files' relative
    names and hashes, in sorted order."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return content_key([[p.relative_to(path).as_posix(), sha256_file(p)] for p in files])
    st = path.stat()
    key = _stat_key(path, st)
    if key not in _file_hashes:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(_CHUNK), b""):
                h.update(block)
        _file_hashes[key] = h.hexdigest()
    return _file_hashes[key]


def content_key(obj: Any) -> str:
    """sha256 of a JSON-able object in canonical form (sorted keys): equal settings <-> equal key."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str, ensure_ascii=True).encode()).hexdigest()


def _weight_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES
                  and not p.name.startswith("."))


def _model_folders(path: Path, base_fallback: Optional[str | Path]) -> list[Path]:
    """The folder itself, plus for a PEFT adapter its base model and the adapters merged under it."""
    folders = [path]
    from .models.base import META_FILE  # late: keeps `echodistill --help` free of torch
    try:
        meta = json.loads((path / META_FILE).read_text()) if (path / META_FILE).is_file() else {}
    except (OSError, json.JSONDecodeError):
        meta = {}
    if (path / "adapter_config.json").is_file():
        try:
            named = json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")
        except (OSError, json.JSONDecodeError):
            named = None
        # the same order as models/loading.py: the recorded absolute path, the name, the fallback
        base = next((b for b in (meta.get("base_path"), named) if b and Path(b).is_dir()), base_fallback)
        if base and Path(base).is_dir():
            folders.append(Path(base))
    folders += [Path(p) for p in meta.get("merged_adapters", []) if Path(p).is_dir()]
    return folders


def weights_sha256(path: str | Path, base_fallback: Optional[str | Path] = None, *, require: bool = False) -> str:
    """One sha256 over every weight file a checkpoint loads (an adapter includes its base model and the
    adapters merged under it): per folder, per weight file in sorted order, its path relative to the
    folder, then its bytes.

    For a full-weight model folder this is the hash the results store has recorded since it began
    (``results/*/*/run.json``: ``start_sha256``, ``final_sha256``), so a new run pairs with stored ones
    started from the same weights (``eval.store.paired_runs``). ``require``: a UserError when there is no
    weight file at all (a folder that is not a finished model)."""
    path = Path(path)
    files = [(f.relative_to(folder).as_posix(), f) for folder in (_model_folders(path, base_fallback)
                                                                   if path.is_dir() else [])
             for f in _weight_files(folder)]
    if path.is_file():
        files.append((path.name, path))
    if require and not files:
        raise UserError(f"{path}: no weight file ({', '.join(WEIGHT_SUFFIXES)}) to hash: is this a finished model "
                        "folder (e.g. runs/x/final)?")
    key = tuple((name,) + _stat_key(f, f.stat()) for name, f in files)
    if key not in _weight_hashes:
        h = hashlib.sha256()
        for name, f in files:
            h.update(name.encode())
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(_CHUNK), b""):
                    h.update(block)
        _weight_hashes[key] = h.hexdigest()
    return _weight_hashes[key]


def verify_weights(path: str | Path, base_fallback: Optional[str | Path] = None, require: bool = True) -> None:
    """Raise UserError naming the file when a safetensors file of the model cannot be read (truncated,
    not safetensors) or (``require``) the folder is missing or has no weights at all."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_dir():
        if not require:
            return  # the model loader says what to build or set
        raise UserError(f"checkpoint {path} is not a folder: pass the model/adapter folder (e.g. runs/x/final)")
    folders = _model_folders(path, base_fallback)
    if require and not any(_weight_files(f) for f in folders):
        raise UserError(f"{path}: no weight files ({', '.join(WEIGHT_SUFFIXES)}) in the checkpoint folder; "
                        "point --checkpoint at a folder written by `save` (e.g. runs/x/final)")
    for folder in folders:
        for f in _weight_files(folder):
            if f.suffix != ".safetensors":
                continue
            try:  # safe_open checks that the header's byte ranges cover the file exactly
                with safe_open(str(f), framework="pt") as st:
                    st.keys()
            except Exception as e:
                raise UserError(f"{f}: not a readable safetensors file ({str(e).strip()[:160]}); the download or "
                                "copy is incomplete or corrupt: copy it again or re-save the model") from None


# What decides a result besides its inputs: the package, the drivers and the experiment specs. Other tracked
# files (the results store, docs) do not make a checkout dirty: a run growing the store in the checkout it
# runs from, or a regenerated report, leaves it the commit it was (a frozen commit's units stay on it).
CODE_PATHS = ("src", "scripts", "configs", "pyproject.toml")


def code_version(where: str | Path | None = None) -> str:
    """``git describe --always`` of the checkout holding ``where`` (default: this package), with ``-dirty``
    when a tracked file under ``CODE_PATHS`` differs from that commit (e.g. ``99f092f`` or ``99f092f-dirty``,
    the form every stored result records); outside a git checkout ``echodistill <package version>``."""
    here = Path(where) if where is not None else Path(__file__).resolve().parent

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=here, capture_output=True, text=True, timeout=10)

    try:
        head = git("describe", "--always")
        if head.returncode == 0 and head.stdout.strip():  # ":/" roots each path at the checkout's top
            changed = git("diff", "--quiet", "HEAD", "--", *(":/" + p for p in CODE_PATHS)).returncode
            return head.stdout.strip() + ("" if changed == 0 else "-dirty")
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        from importlib.metadata import version
        return "echodistill " + version("echodistill")
    except Exception:
        return "unknown"


_QUICK = 1 << 16  # bytes hashed at each end of a file by quick_sha256
_quick_hashes: dict[tuple, str] = {}  # _stat_key -> quick_sha256 (each file once per process)


def quick_sha256(path: str | Path) -> str:
    """sha256 of a file's size and its first and last 64 KiB (the whole file when it is smaller than
    128 KiB, as a few seconds of 16 kHz WAV are): a replaced clip is caught even when a copy kept its
    size and mtime (``cp -p``), at two reads per file whatever its length."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):  # a FIFO or device would block or never end: not a clip to hash
        raise OSError(f"{path}: not a regular file")
    key = _stat_key(path, st)
    if key not in _quick_hashes:
        h = hashlib.sha256(str(st.st_size).encode())
        with open(path, "rb") as f:
            h.update(f.read(_QUICK))
            if st.st_size > _QUICK:
                f.seek(max(_QUICK, st.st_size - _QUICK))
                h.update(f.read(_QUICK))
        _quick_hashes[key] = h.hexdigest()
    return _quick_hashes[key]


def content_stamps(paths: Iterable[str]) -> list:
    """(resolved path, size, quick_sha256) per file ((path, None, None) for a missing one): a cache key
    that follows content, not the file's mtime nor how its path was spelled (relative or absolute)."""
    out = []
    for p in paths:
        try:
            st = os.stat(p)
            if not stat.S_ISREG(st.st_mode):  # a FIFO or device would block or never end: not a clip
                out.append((p, None, None))
                continue
            out.append((os.path.realpath(p), st.st_size, quick_sha256(p)))
        except OSError:
            out.append((p, None, None))
    return out


def file_stamps(paths: Iterable[str]) -> list:
    """(path, size, mtime_ns) per file (None for a missing one): cheap, but blind to a same-size copy
    that kept the mtime (``content_stamps`` is not); read only to accept eval folders of format 2."""
    out = []
    for p in paths:
        try:
            st = os.stat(p)
            out.append((p, st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((p, None, None))
    return out


def weights_sha256_v1(path: str | Path, base_fallback: Optional[str | Path] = None) -> str:
    """The form ``weights_sha256`` had before it took the results store's (a line "name sha256" per weight
    file): read only to accept eval folders of formats 2-3, which recorded it."""
    path = Path(path)
    lines = []
    for folder in _model_folders(path, base_fallback) if path.is_dir() else []:
        for f in _weight_files(folder):
            lines.append(f"{f.relative_to(folder).as_posix()} {sha256_file(f)}")
    if path.is_file():
        lines.append(f"{path.name} {sha256_file(path)}")
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


__all__ = ["sha256_file", "quick_sha256", "content_key", "weights_sha256", "verify_weights", "code_version",
           "content_stamps", "file_stamps", "weights_sha256_v1"]
