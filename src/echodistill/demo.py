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

The presets below are the only place the demo's budgets live.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional

from .config import load_config

# Budgets per preset. `train` overrides are shared by grpo and echodistill (same budget);
# sft-noisy gets the same number of optimizer steps as the RL runs.
# RL settings shared by every preset: the embedded model was warmed up with lr 1e-3, so RL needs a
# larger step than the 7B default (1e-5) to move within a CPU budget; answers are 1-3 tokens.
RL_COMMON = ["train.learning_rate=1e-4", "train.max_completion_length=4"]

PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {  # a few minutes: the end-to-end test of the CLI
        "bench_size": "small", "seeds": [0], "methods": ["grpo", "echodistill", "sft-noisy"],
        "warmup": ["warmup.max_steps=10", "warmup.prompts_per_device=8", "warmup.eval_steps=0"],
        "train": ["train.max_steps=2", "train.prompts_per_device=2", "train.num_generations=4",
                  "train.eval_steps=0", "train.save_steps=2"],
        "eval": ["eval.max_items=4", "eval.snr_levels=[-5,10]", "eval.noise_types=[white,babble]",
                 "eval.bootstrap=200"],
        "enhance": None, "heldout": None,
    },
    "default": {  # <= 20 minutes on 2 cores
        "bench_size": "default", "seeds": [0], "methods": ["grpo", "echodistill", "sft-noisy"],
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
        "methods": ["grpo", "echodistill", "echodistill-kd", "sft-noisy"],
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


def _say(msg: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _cfg(out: Path, *overrides: str) -> Any:
    base = [f"data.bench_dir={out / 'bench'}", f"model.path={out / 'models' / 'embedded'}"]
    return load_config(None, base + [o for o in overrides if o])


def _stage_bench(out: Path, size: str) -> None:
    from .data.bench import build_benchmark
    if (out / "bench" / "datasheet.json").is_file():
        _say("bench: already built")
        return
    _say(f"bench: building the offline benchmark ({size})")
    build_benchmark(out / "bench", seed=0, size=size)


def _stage_model(out: Path) -> None:
    from .models.embedded import build_embedded_model, read_bench_texts
    target = out / "models" / "embedded"
    if (target / "config.json").is_file():
        _say("model: already built")
        return
    _say("model: assembling the embedded audio LLM (Whisper tiny.en encoder + small Qwen2 LM)")
    build_embedded_model(target, seed=0, corpus_texts=read_bench_texts(out / "bench"))


def _done(run_dir: Path) -> bool:
    return (run_dir / "final").is_dir() and any((run_dir / "final").iterdir())


def _stage_warmup(out: Path, preset: dict) -> Path:
    from .train.sft import run_warmup
    run_dir = out / "warmup"
    if _done(run_dir):
        _say("warmup: already done")
    else:
        _say("warmup: supervised training on clean audio")
        run_warmup(_cfg(out, f"run.output_dir={run_dir}", *preset["warmup"]), resume=True)
    return run_dir / "final"


def _stage_train(out: Path, preset: dict, method: str, seed: int, warm: Path) -> Path:
    run_dir = out / "train" / f"{method}-s{seed}"
    if _done(run_dir):
        _say(f"train {method} seed {seed}: already done")
        return run_dir / "final"
    _say(f"train {method} seed {seed}")
    common = [f"run.output_dir={run_dir}", f"run.seed={seed}"]
    variant = [] if method == "sft-noisy" else [f"train.variant={method}"]
    cfg = _cfg(out, *common, *variant, f"train.init_from={warm}", *RL_COMMON, *preset["train"])
    if method == "sft-noisy":
        from .train.sft import run_warmup
        # Same budget as the RL runs: as many optimizer steps of as many items, the same learning rate.
        run_warmup(_cfg(out, *common, "warmup.noisy=true", f"warmup.init_from={warm}",
                        f"warmup.max_steps={cfg.train.max_steps}", f"warmup.prompts_per_device={cfg.train.prompts_per_device}",
                        f"warmup.learning_rate={cfg.train.learning_rate}", "warmup.eval_steps=0"), resume=True)
    else:
        from .train.checkpoint import latest_checkpoint
        from .train.trainer import run_train
        run_train(cfg, resume=latest_checkpoint(run_dir) is not None)
    return run_dir / "final"


def _stage_eval(out: Path, overrides: list[str], name: str, checkpoint: Path, method: str = "model",
                split: str = "test") -> Path:
    from .eval.evaluate import run_eval
    eval_dir = out / "eval" / name
    if (eval_dir / "metrics.json").is_file():
        _say(f"eval {name}: already done")
        return eval_dir
    _say(f"eval {name} ({method}) on the {split} split")
    run_eval(_cfg(out, *overrides), checkpoint=str(checkpoint), manifest=str(out / "bench" / f"{split}.jsonl"),
             out_dir=eval_dir, method=method, name=name, split_name=split)
    return eval_dir


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


def run_demo(preset: str = "default", out_dir: Path = Path("runs/demo"), seeds: Optional[list[int]] = None) -> dict:
    """Run every stage of the demo; print and return the report (report.json's content)."""
    from .eval.report import make_report

    p = PRESETS[preset]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    _stage_bench(out, p["bench_size"])
    _stage_model(out)
    warm = _stage_warmup(out, p)
    trained = {f"{m}-s{s}": _stage_train(out, p, m, s, warm) for s in (seeds or p["seeds"]) for m in p["methods"]}

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
    report = make_report(eval_dirs, out / "report", baseline="warmup")
    rl_dirs = [d for d in eval_dirs if d.name.split("-s")[0] in ("grpo", "echodistill", "echodistill-kd")]
    if len(rl_dirs) >= 2:
        # The paper's comparison: EchoDistill against GRPO-only, paired over items (seeds pooled).
        make_report(rl_dirs, out / "report_vs_grpo", baseline="grpo" if len(rl_dirs) > 2 else "grpo-s0")
    if heldout_dirs:
        make_report(heldout_dirs, out / "report_heldout", baseline="heldout-warmup")
    minutes = (time.time() - t0) / 60
    (out / "demo.json").write_text(json.dumps({"preset": preset, "minutes": round(minutes, 2),
                                               "runs": [str(d) for d in eval_dirs]}, indent=1))
    print("\nTest split, % with bootstrap 95 % intervals (GSR: correct on noisy AND on clean audio; "
          "strong noise: SNR <= 0 dB):\n")
    print(_headline(report))
    print(f"\nFull report: {out / 'report' / 'report.md'} (plots beside it). Took {minutes:.1f} min.")
    return report
