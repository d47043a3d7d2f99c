"""A results store that grows run by run: small, committed, enough to rebuild every comparison.

One folder per experiment, one sub-folder per evaluated run::

    <store>/<run>/run.json               method, seed, split, starting weights' sha256, final weights'
                                         sha256, code version, eval settings, training wall time, the
                                         machine (CPU model, threads, library versions); round 4 also
                                         format, warm-up seed and tuning point
    <store>/<run>/config.yaml            the run's resolved training config (absent for no-training rows)
    <store>/<run>/train_metrics.jsonl.gz the training log, a few keys per step
    <store>/<run>/predictions.json.gz    per (item, condition): the answer named (compact; no raw text)

A later session adds seeds or methods by adding folders; ``read_store`` returns whatever is there and
``paired_runs`` refuses to pair runs that started from different weights.
"""

from __future__ import annotations

import gzip
import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from ..errors import UserError
from ..provenance import KERNEL_ENV, code_version

RUN_FILE = "run.json"
PRED_FILE = "predictions.json.gz"
TRAIN_FILE = "train_metrics.jsonl.gz"
# Training-log keys kept in the store (the full metrics.jsonl stays in the run folder).
TRAIN_KEYS = ("step", "epoch", "loss", "reward_accuracy_mean", "reward_total_mean", "frac_groups_all_right",
              "frac_groups_all_wrong", "frac_groups_mixed", "teacher_adv_share", "teacher_clean_acc",
              "teacher_clean_acc_kd_scope", "teacher_answered_frac",
              "target_coverage", "target_label_agreement", "kd", "kd_items_frac", "clean_kl", "entropy",
              "grad_norm", "grad_norm_policy", "grad_norm_kd", "grad_norm_clean", "time_step")


# Environment variables that decide which kernels and how many threads a CPU run uses (its float results)
NUMERIC_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", *KERNEL_ENV, "CUBLAS_WORKSPACE_CONFIG")
# The CPU's vector extensions that kernel libraries choose by (unpinned, AVX-512 and AVX2 give other bits)
VECTOR_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "amx_tile")


def _cpuinfo(field: str) -> Optional[str]:
    """The value of ``field`` on its first line in ``/proc/cpuinfo`` (None where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(field):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or the platform's processor string elsewhere."""
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_vector_flags() -> list[str]:
    """Which of ``VECTOR_FLAGS`` this CPU has (``/proc/cpuinfo``; empty elsewhere)."""
    have = set((_cpuinfo("flags") or "").split())
    return [f for f in VECTOR_FLAGS if f in have]


def machine_info(threads: Optional[int] = None) -> dict:
    """Where a run was made: CPU model and vector extensions, logical CPUs, the torch threads it ran with,
    library versions and the numeric environment. Recorded in every run.json, so runs added later on
    another machine can be told apart (a different CPU or thread count changes results at float level)."""
    from importlib.metadata import PackageNotFoundError, version

    libs = {}
    for lib in ("torch", "transformers", "numpy"):
        try:
            libs[lib] = version(lib)
        except PackageNotFoundError:
            pass
    return {"cpu_model": cpu_model(), "cpu_flags": cpu_vector_flags(), "logical_cpus": os.cpu_count(),
            "threads": threads, "platform": platform.platform(), "python": platform.python_version(), **libs,
            "env": {k: os.environ[k] for k in NUMERIC_ENV if k in os.environ}}


def _compact(rows: Sequence[dict]) -> dict:
    """Per item [task, target(, evidence_target)], per cell [id, condition, noise type, SNR, answer(, evidence,
    well_formed)]: the reasoning format's evidence fields (issue 22) only when the rows carry them."""
    evidence = any("evidence" in r for r in rows)
    items: dict[str, list] = {}
    cells = []
    for r in rows:
        items.setdefault(r["id"], [r.get("task"), r.get("target")] + ([r.get("evidence_target")] if evidence else []))
        cells.append([r["id"], r["condition"], r.get("noise_type"), r.get("snr"), r.get("answer")]
                     + ([r.get("evidence"), r.get("well_formed")] if evidence else []))
    return {"items": items, "cells": cells}


def _expand(data: dict) -> list[dict]:
    rows = []
    for item_id, cond, noise, snr, answer, *ev in data["cells"]:
        task, target, *ev_target = data["items"][item_id]
        row = {"id": item_id, "task": task, "condition": cond, "noise_type": noise, "snr": snr, "answer": answer,
               "target": target, "correct": answer is not None and answer == target, "invalid": answer is None}
        if ev:
            row.update(evidence=ev[0], well_formed=ev[1], evidence_target=ev_target[0] if ev_target else None)
        rows.append(row)
    return rows


def write_run(store: str | Path, name: str, *, method: str, seed: Optional[int], split: str, rows: Sequence[dict],
              start_sha256: str, final_sha256: str, eval_settings: dict, config_path: Optional[Path] = None,
              train_metrics_path: Optional[Path] = None, extra: Optional[dict] = None,
              threads: Optional[int] = None) -> Path:
    """Write one run's folder (``run.json`` last, so a folder without it is unfinished). ``threads``: the
    torch threads the run trained and evaluated with (recorded with the machine, ``machine_info``)."""
    d = Path(store) / name
    d.mkdir(parents=True, exist_ok=True)
    with gzip.open(d / PRED_FILE, "wt") as f:
        json.dump(_compact(rows), f, separators=(",", ":"))
    if config_path is not None and Path(config_path).is_file():
        (d / "config.yaml").write_text(Path(config_path).read_text())
    if train_metrics_path is not None and Path(train_metrics_path).is_file():
        with gzip.open(d / TRAIN_FILE, "wt") as f:
            for line in Path(train_metrics_path).read_text().splitlines():
                if line.strip():
                    row = json.loads(line)
                    f.write(json.dumps({k: row[k] for k in TRAIN_KEYS if k in row}) + "\n")
    meta = {"name": name, "method": method, "seed": seed, "split": split, "start_sha256": start_sha256,
            "final_sha256": final_sha256, "code_version": code_version(), "eval": eval_settings,
            "machine": machine_info(threads), **(extra or {})}
    tmp = d / (RUN_FILE + ".tmp")
    tmp.write_text(json.dumps(meta, indent=1))
    tmp.replace(d / RUN_FILE)
    return d


@dataclass
class StoredRun:
    name: str
    meta: dict
    rows: list[dict]

    @property
    def method(self) -> str:
        return self.meta["method"]

    @property
    def seed(self) -> Optional[int]:
        return self.meta.get("seed")


def read_store(store: str | Path, split: Optional[str] = None) -> list[StoredRun]:
    """Every finished run in ``store`` (optionally of one split), sorted by name."""
    out = []
    for d in sorted(Path(store).iterdir()) if Path(store).is_dir() else []:
        if not (d / RUN_FILE).is_file():
            continue
        meta = json.loads((d / RUN_FILE).read_text())
        if split is not None and meta.get("split") != split:
            continue
        with gzip.open(d / PRED_FILE, "rt") as f:
            out.append(StoredRun(d.name, meta, _expand(json.load(f))))
    return out


def train_log(store: str | Path, name: str) -> list[dict]:
    p = Path(store) / name / TRAIN_FILE
    if not p.is_file():
        return []
    with gzip.open(p, "rt") as f:
        return [json.loads(line) for line in f if line.strip()]


# Evaluation keys that only choose which items or conditions are evaluated: runs that differ in them
# still pair, on what both have (``score_matrix`` keeps the common items; a metric reads its conditions).
SUBSET_KEYS = ("eval.max_items", "eval.no_audio")


def _conditions(eval_meta: Optional[dict]) -> Optional[dict]:
    """A run's evaluation settings without ``SUBSET_KEYS``: what decides an (item, condition) row's meaning."""
    if not eval_meta:
        return eval_meta
    kept = [o for o in eval_meta.get("overrides", []) if str(o).split("=", 1)[0] not in SUBSET_KEYS]
    return {**eval_meta, "overrides": kept}


def _pair_key(r: StoredRun) -> tuple:
    return (r.meta.get("warmup_seed"), r.seed)


def paired_runs(a: Sequence[StoredRun], b: Sequence[StoredRun]) -> list[tuple[StoredRun, StoredRun]]:
    """Pairs (a_s, b_s) of two methods' runs with the same seed; refuses runs from different weights.

    A side with one seedless run (a warm-up, an untrained front-end) pairs with every run of the other.
    Runs that record a ``warmup_seed`` (round 4: seeds nested in warm-ups) pair on (warm-up seed, seed).
    """
    if len(a) == 1 and a[0].seed is None and not (len(b) == 1 and b[0].seed is None):
        return [(a[0], r) for r, _ in paired_runs(b, a)]
    by_seed = {_pair_key(r): r for r in b}
    single = b[0] if len(b) == 1 and b[0].seed is None else None
    pairs = []
    for r in a:
        other = single or by_seed.get(_pair_key(r))
        if other is None:
            continue
        if r.meta["start_sha256"] != other.meta["start_sha256"]:
            raise UserError(f"{r.name} and {other.name} started from different weights "
                            f"({r.meta['start_sha256'][:12]} vs {other.meta['start_sha256'][:12]}): a paired "
                            "comparison needs the same warm-up; rebuild it or compare within one store")
        if _conditions(r.meta.get("eval")) != _conditions(other.meta.get("eval")):
            raise UserError(f"{r.name} and {other.name} were evaluated with different settings: re-evaluate one")
        pairs.append((r, other))
    return pairs


__all__ = ["cpu_model", "machine_info", "write_run", "read_store", "train_log", "paired_runs", "StoredRun"]
