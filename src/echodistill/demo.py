"""`echodistill demo`: the whole pipeline on the embedded default, from nothing, resumable.

Stages (each skipped when its output is already complete, so a rerun resumes):

1. bench     build the offline spoken-QA benchmark                       -> <out>/bench
2. model     assemble the embedded audio LLM                              -> <out>/models/embedded
3. warmup    supervised warm-up on clean audio                            -> <out>/warmup/final
4. train     from the same warm-up, same budget: grpo, echodistill (GRPO + clean teacher),
             sft-noisy (answer-level supervised training on noisy mixes)  -> <out>/train/<method>-s<seed>
5. eval      greedy eval on the test split: base, warm-up, each trained model, the DeepFilterNet3
             front-end before the warm-up model                           -> <out>/eval/<name>
6. report    table, paired differences, plots                             -> <out>/report

The presets below are the only place the demo's budgets live. ``--format reasoning`` runs every stage in
the reasoning response format (``with_response_format``): the warm-up teaches evidence + answer, RL samples
longer completions, the report adds the evidence figures.

A stage is done only when its completion marker ``<stage dir>/stage_done.json`` exists: written
atomically (temp file + rename) after everything else of the stage, holding a key over the stage's
arguments and its inputs' keys. A stage killed half-way has no marker and is resumed (warm-up and train
from their checkpoints, eval from its content-keyed predictions); a marker whose key differs (another
preset, changed budgets) stops the demo with a clear line instead of reusing the stage. Every argument
(seeds, the report baselines) is checked before the first stage starts.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Optional

from .config import load_config
from .errors import UserError
from .provenance import code_version, content_key

MARKER = "stage_done.json"

# Budgets per preset. `train` overrides are shared by grpo and echodistill (same budget);
# sft-noisy gets the same number of optimizer steps as the RL runs.
# RL settings shared by every preset: the embedded model was warmed up with lr 1e-3, so RL needs a
# larger step than the 7B default (1e-5) to move within a CPU budget; answers are 1-3 tokens.
RL_COMMON = ["train.learning_rate=1e-4", "train.max_completion_length=4"]

PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {  # a few minutes: the end-to-end test of the CLI
        "bench_size": "small", "seeds": [0], "methods": ["grpo", "echodistill-rescue", "sft-noisy"],
        "warmup": ["warmup.max_steps=10", "warmup.prompts_per_device=8", "warmup.eval_steps=0"],
        "train": ["train.max_steps=2", "train.prompts_per_device=2", "train.num_generations=4",
                  "train.eval_steps=0", "train.save_steps=2"],
        "eval": ["eval.max_items=4", "eval.snr_levels=[-5,10]", "eval.noise_types=[white,babble]",
                 "eval.bootstrap=200"],
        "enhance": None, "heldout": None,
    },
    "default": {  # <= 20 minutes on 2 cores
        "bench_size": "default", "seeds": [0], "methods": ["grpo", "echodistill-rescue", "sft-noisy"],
        "warmup": [],
        "train": ["train.max_steps=30", "train.eval_steps=0", "train.save_steps=10"],
        "eval": ["eval.max_items=70", "eval.snr_levels=[-5,0,10]", "eval.noise_types=[white,babble]"],
        # DeepFilterNet3 runs at ~1 clip/s here: a smaller grid for the front-end baseline.
        "enhance": ["eval.max_items=28", "eval.snr_levels=[0]", "eval.noise_types=[white,babble]",
                    "eval.no_audio=false"],
        "heldout": None,
    },
    "full": {  # about an hour on 2 cores: the experiment in docs/results.md
        "bench_size": "default", "seeds": [0, 1, 2],
        "methods": ["grpo", "echodistill-rescue", "echodistill", "sft-noisy"],
        "warmup": [],
        "train": ["train.max_steps=60", "train.eval_steps=20", "train.eval_items=64", "train.save_steps=20"],
        "eval": ["eval.max_items=140", "eval.snr_levels=[-10,-5,0,10,30]",
                 "eval.noise_types=[white,pink,babble,music]"],
        "enhance": ["eval.max_items=28", "eval.snr_levels=[-5,0]", "eval.noise_types=[white,babble]",
                    "eval.no_audio=false"],
        # Held-out voices (test_heldout) under held-out noise types, never seen in training.
        "heldout": ["eval.max_items=105", "eval.snr_levels=[-5,0,10]", "eval.noise_types=[hum,midi]",
                    "eval.no_audio=false"],
    },
}


def with_response_format(preset: dict, response_format: str) -> dict:
    """The preset with ``data.response_format`` in every stage's overrides (and the format's completion
    length after ``RL_COMMON``'s answer-length one); the answer format returns the preset unchanged, so
    its stage keys, and the folders of earlier demos, stay valid."""
    if response_format == "answer":
        return preset
    from .config import FORMAT_PRESETS
    if response_format not in FORMAT_PRESETS:
        raise UserError(f"--format {response_format!r} is unknown; use one of {', '.join(FORMAT_PRESETS)}")
    fmt = [f"data.response_format={response_format}"]
    lengths = [f"{k}={v}" for k, v in FORMAT_PRESETS[response_format].items()]
    out = dict(preset)
    out["warmup"] = list(preset["warmup"]) + fmt
    out["train"] = list(preset["train"]) + fmt + lengths
    for stage in ("eval", "enhance", "heldout"):
        if preset[stage] is not None:
            out[stage] = list(preset[stage]) + fmt
    return out


def _say(msg: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _cfg(out: Path, *overrides: str) -> Any:
    base = [f"data.bench_dir={out / 'bench'}", f"model.path={out / 'models' / 'embedded'}"]
    return load_config(None, base + [o for o in overrides if o])


def _stage_key(stage_dir: Path, **what: Any) -> tuple[str, bool]:
    """(key of this stage, whether it is already complete with that key). Raises UserError when the
    stage was completed with other arguments: reusing it would silently mix two experiments."""
    key = content_key(what)
    marker = stage_dir / MARKER
    if not marker.is_file():
        return key, False
    try:
        old = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError):
        return key, False  # unreadable marker: the stage is redone
    if old.get("key") == key:
        return key, True
    raise UserError(f"{stage_dir}: was completed with other arguments ({_changed(old.get('args', {}), what)}); "
                    f"use another --out folder, or delete {stage_dir} to redo this stage")


def _changed(old: dict, new: dict) -> str:
    keys = sorted(k for k in set(old) | set(new) if json.dumps(old.get(k), default=str) != json.dumps(new.get(k), default=str))
    return ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys)[:400] or "code or inputs"


def _mark_done(stage_dir: Path, key: str, what: dict, **extra: Any) -> None:
    """Write the completion marker atomically, last."""
    stage_dir.mkdir(parents=True, exist_ok=True)
    tmp = stage_dir / (MARKER + ".tmp")
    tmp.write_text(json.dumps({"key": key, "args": json.loads(json.dumps(what, default=str)),
                               "code_version": code_version(), "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
                               **extra}, indent=1))
    os.replace(tmp, stage_dir / MARKER)


def _marker_key(stage_dir: Path) -> str:
    return json.loads((stage_dir / MARKER).read_text())["key"]


def _stage_bench(out: Path, size: str) -> None:
    from .data.bench import build_benchmark
    what = {"stage": "bench", "size": size, "seed": 0}
    key, done = _stage_key(out / "bench", **what)
    if done:
        _say("bench: already built")
        return
    _say(f"bench: building the offline benchmark ({size})")
    build_benchmark(out / "bench", seed=0, size=size)
    _mark_done(out / "bench", key, what)


def _stage_model(out: Path) -> None:
    from .models.embedded import build_embedded_model, read_bench_texts
    target = out / "models" / "embedded"
    what = {"stage": "model", "seed": 0, "bench": _marker_key(out / "bench")}
    key, done = _stage_key(target, **what)
    if done:
        _say("model: already built")
        return
    _say("model: assembling the embedded audio LLM (Whisper tiny.en encoder + small Qwen2 LM)")
    build_embedded_model(target, seed=0, corpus_texts=read_bench_texts(out / "bench"))
    _mark_done(target, key, what, weights_sha256=_weights(target))


def _weights(model_dir: Path) -> str:
    from .provenance import weights_sha256
    return weights_sha256(model_dir)


def _stage_warmup(out: Path, preset: dict) -> Path:
    from .train.sft import run_warmup
    run_dir = out / "warmup"
    what = {"stage": "warmup", "overrides": list(preset["warmup"]), "model": _marker_key(out / "models" / "embedded")}
    key, done = _stage_key(run_dir, **what)
    if done:
        _say("warmup: already done")
    else:
        _say("warmup: supervised training on clean audio")
        run_warmup(_cfg(out, f"run.output_dir={run_dir}", *preset["warmup"]), resume=True)
        _mark_done(run_dir, key, what, weights_sha256=_weights(run_dir / "final"))
    return run_dir / "final"


def _stage_train(out: Path, preset: dict, method: str, seed: int, warm: Path) -> Path:
    run_dir = out / "train" / f"{method}-s{seed}"
    what = {"stage": "train", "method": method, "seed": seed, "overrides": list(RL_COMMON) + list(preset["train"]),
            "warmup": _marker_key(warm.parent)}
    key, done = _stage_key(run_dir, **what)
    if done:
        _say(f"train {method} seed {seed}: already done")
        return run_dir / "final"
    _say(f"train {method} seed {seed}")
    common = [f"run.output_dir={run_dir}", f"run.seed={seed}"]
    variant = [] if method == "sft-noisy" else [f"train.variant={method}"]
    cfg = _cfg(out, *common, *variant, f"train.init_from={warm}", *RL_COMMON, *preset["train"])
    if method == "sft-noisy":
        from .train.sft import run_warmup
        # Same budget as the RL runs: as many optimizer steps of as many items, the same learning rate.
        run_warmup(_cfg(out, *common, f"data.response_format={cfg.data.response_format}", "warmup.noisy=true",
                        f"warmup.init_from={warm}",
                        f"warmup.max_steps={cfg.train.max_steps}", f"warmup.prompts_per_device={cfg.train.prompts_per_device}",
                        f"warmup.learning_rate={cfg.train.learning_rate}", "warmup.eval_steps=0"), resume=True)
    else:
        from .train.checkpoint import latest_checkpoint
        from .train.trainer import run_train
        run_train(cfg, resume=latest_checkpoint(run_dir) is not None)
    _mark_done(run_dir, key, what, weights_sha256=_weights(run_dir / "final"))
    return run_dir / "final"


def _stage_eval(out: Path, overrides: list[str], name: str, checkpoint: Path, method: str = "model",
                split: str = "test") -> Path:
    from .eval.evaluate import PREDICTIONS, STATE, STATE_FORMAT, run_eval
    eval_dir = out / "eval" / name
    what = {"stage": "eval", "overrides": list(overrides), "method": method, "split": split,
            "checkpoint": _marker_key(checkpoint.parent if checkpoint.name == "final" else checkpoint)}
    key, done = _stage_key(eval_dir, **what)
    if done:
        _say(f"eval {name}: already done")
        return eval_dir
    state = eval_dir / STATE
    if (eval_dir / PREDICTIONS).is_file() and not (
            state.is_file() and json.loads(state.read_text() or "{}").get("format") == STATE_FORMAT):
        # an unfinished eval of this demo from before content keys: its rows cannot be checked; redo them
        (eval_dir / PREDICTIONS).unlink()
    _say(f"eval {name} ({method}) on the {split} split")
    meta = run_eval(_cfg(out, *overrides), checkpoint=str(checkpoint),
                    manifest=str(out / "bench" / f"{split}.jsonl"), out_dir=eval_dir, method=method, name=name,
                    split_name=split)
    _mark_done(eval_dir, key, what, **meta.get("provenance", {}))
    return eval_dir


def plan_reports(preset: dict, seeds: list[int]) -> list[tuple[str, list[str], str]]:
    """(report folder, eval run names, baseline) of every report the demo writes, from its arguments only.

    A method trained with one seed is not pooled (its run keeps the name ``<method>-s<seed>``), so
    the GRPO baseline is named by its first seed: that name matches the pooled group as well.
    """
    trained = [f"{m}-s{s}" for s in seeds for m in preset["methods"]]
    names = ["base", "warmup"] + (["enhance+warmup"] if preset["enhance"] else []) + trained
    plans = [("report", names, "warmup")]
    rl = [n for n in trained if n.rsplit("-s", 1)[0] in ("grpo", "echodistill-rescue", "echodistill")]
    if len(rl) >= 2:
        plans.append(("report_vs_grpo", rl, f"grpo-s{seeds[0]}"))
    if preset["heldout"]:
        plans.append(("report_heldout", [f"heldout-{n}" for n in ["warmup", *trained]], "heldout-warmup"))
    return plans


def check_arguments(preset: str, seeds: Optional[list[int]]) -> list[int]:
    """Every argument of a demo run, checked before the first (long) stage; returns the seeds."""
    if preset not in PRESETS:
        raise UserError(f"--preset {preset!r} is unknown; use one of {', '.join(PRESETS)}")
    p = PRESETS[preset]
    seeds = list(p["seeds"] if not seeds else seeds)
    if any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds {seeds}: give distinct non-negative integers (e.g. --seeds 0 1 2)")
    for folder, names, baseline in plan_reports(p, seeds):
        groups = {n.rsplit("-s", 1)[0] for n in names if "-s" in n}
        if baseline not in names and baseline not in groups:
            raise UserError(f"demo: the {folder} baseline {baseline!r} would not be one of its runs "
                            f"({', '.join(names)}); this is a bug in the preset {preset!r}")
    return seeds


def _headline(report: dict) -> str:
    cols = ["Acc", "Noisy", "StrongNoisy", "GSR", "StrongGSR", "NoAudio", "Invalid"]
    lines = ["| method | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for run in report["runs"]:
        cells = []
        for c in cols:
            m = run["metrics"].get(c) or {}
            v = m.get("value")
            cells.append("-" if v is None else f"{100 * v:.1f} [{100 * m['ci_low']:.1f}, {100 * m['ci_high']:.1f}]")
        lines.append(f"| {run['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_demo(preset: str = "default", out_dir: Path = Path("runs/demo"), seeds: Optional[list[int]] = None,
             response_format: str = "answer") -> dict:
    """Run every stage of the demo; print and return the report (report.json's content).

    ``response_format``: ``answer`` or ``reasoning`` (every stage; see ``with_response_format``)."""
    from .eval.report import make_report

    seeds = check_arguments(preset, seeds)
    p = with_response_format(PRESETS[preset], response_format)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    _stage_bench(out, p["bench_size"])
    _stage_model(out)
    warm = _stage_warmup(out, p)
    trained = {f"{m}-s{s}": _stage_train(out, p, m, s, warm) for s in seeds for m in p["methods"]}

    ev = p["eval"]
    eval_dirs = [_stage_eval(out, ev, "base", out / "models" / "embedded"), _stage_eval(out, ev, "warmup", warm)]
    if p["enhance"]:
        eval_dirs.append(_stage_eval(out, p["enhance"], "enhance+warmup", warm, method="enhance"))
    eval_dirs += [_stage_eval(out, ev, name, ckpt) for name, ckpt in trained.items()]
    heldout_dirs = []
    if p["heldout"]:
        heldout_dirs = [_stage_eval(out, p["heldout"], f"heldout-{name}", ckpt, split="test_heldout")
                        for name, ckpt in [("warmup", warm), *trained.items()]]

    _say("report: comparing every evaluated model")
    dirs = {d.name: d for d in eval_dirs + heldout_dirs}
    report = None
    for folder, names, baseline in plan_reports(p, seeds):
        r = make_report([dirs[n] for n in names], out / folder, baseline=baseline)
        report = r if report is None else report
    minutes = (time.time() - t0) / 60
    runs = {}
    for d in eval_dirs + heldout_dirs:
        prov = json.loads((d / "metrics.json").read_text()).get("provenance", {})
        runs[d.name] = {"dir": str(d), "weights_sha256": prov.get("weights_sha256")}
    tmp = out / "demo.json.tmp"
    fmt = {"response_format": response_format} if response_format != "answer" else {}
    tmp.write_text(json.dumps({"preset": preset, "seeds": seeds, **fmt, "minutes": round(minutes, 2),
                               "code_version": code_version(), "runs": runs}, indent=1))
    os.replace(tmp, out / "demo.json")
    print("\nTest split, % with bootstrap 95 % intervals (GSR: correct on noisy AND on clean audio; "
          "strong noise: SNR <= 0 dB):\n")
    print(_headline(report))
    if report.get("verdicts"):
        print("\nVerdict (primary metric: strong-noise GSR; 'beats' / 'is behind' only when the 95 % interval "
              "excludes 0):")
        print("\n".join(f"* {v}" for v in report["verdicts"]))
    print(f"\nFull report: {out / 'report' / 'report.html'} (report.md, plots beside it). Took {minutes:.1f} min.")
    return report
