#!/usr/bin/env python
"""Run an experiment spec (configs/experiments/*.yaml) into its results store, resumably.

    python scripts/experiment.py run configs/experiments/val_sweep.yaml [--jobs 2] [--only NAME ...]
    python scripts/experiment.py report configs/experiments/val_sweep.yaml [--baseline warmup] [--readme-table]

``run``: builds the benchmark and the embedded model if missing, trains each warm-up once, then for
every (method, seed) trains, evaluates on the spec's split and writes the compact result to the store
(``echodistill.eval.store``). Every unit is skipped when its store entry exists and resumes from its
checkpoints otherwise, so a stopped run continues and a later session adds seeds by editing ``seeds``.
With ``--jobs 2`` two units run at once, one torch thread each (two 2-thread runs on 2 cores slow each
other 5-20x). ``report``: the seed-aware comparison (``echodistill.eval.seeds``) as Markdown in
``<store>/report.md``, per regime (the spec's ``regimes:``; methods paired against their regime's
baseline) with an accuracy-vs-SNR figure each (``snr_curves_<regime>.png``), and README's results table
(``readme_table.md``; ``--readme-table`` prints only that).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parent.parent
ED = [sys.executable, "-m", "echodistill.cli"]


def say(msg: str) -> None:
    print(f"[experiment {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def load_spec(path: str):
    spec = OmegaConf.load(path)
    for key in ("store", "split", "work", "bench", "model", "seeds", "warmups", "methods"):
        if key not in spec:
            raise SystemExit(f"{path}: missing key {key!r}")
    return spec


def base_overrides(spec) -> list[str]:
    return [f"data.bench_dir={spec.bench}", f"model.path={spec.model}"]


def sh(cmd: list[str], log: Path, threads: int) -> None:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS=str(threads))
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(cmd)}\n")
        f.flush()
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT).returncode
    if rc != 0:
        raise RuntimeError(f"failed ({rc}): {' '.join(cmd)} -- see {log}")


def prepare(spec) -> None:
    """The benchmark and the embedded model, built deterministically if missing."""
    from echodistill.data.bench import build_benchmark
    from echodistill.models.embedded import build_embedded_model, read_bench_texts

    if not (Path(spec.bench) / "datasheet.json").is_file():
        say(f"building the benchmark in {spec.bench}")
        build_benchmark(Path(spec.bench), seed=0, size="default")
    if not (Path(spec.model) / "config.json").is_file():
        say(f"building the embedded model in {spec.model}")
        build_embedded_model(Path(spec.model), seed=0, corpus_texts=read_bench_texts(Path(spec.bench)))


def runs_dir(spec) -> Path:
    """Where this spec's training and evaluation folders go (``runs``; default ``work``, beside the warm-ups)."""
    return Path(spec.get("runs", spec.work))


def warmup_dir(spec, name: str) -> Path:
    w = spec.warmups[name]
    return Path(spec.work) / (w.get("dir") or f"warmup-{name}")


def run_warmup(spec, name: str, threads: int) -> Path:
    out = warmup_dir(spec, name)
    final = out / "final"
    if not any(final.glob("*.safetensors")):
        say(f"warm-up {name} -> {out}")
        sh(ED + ["warmup", "--resume", *base_overrides(spec), f"run.output_dir={out}", f"run.num_threads={threads}",
                 *spec.warmups[name].get("overrides", [])], out.parent / f"warmup-{name}.log", threads)
    return final


def store_eval(spec, name: str, method: str, seed, ckpt: Path, start: Path, threads: int,
               run_dir: Path | None = None, eval_args: tuple = (), eval_extra: tuple = ()) -> None:
    """Evaluate ``ckpt`` on the spec's split (its ``eval`` overrides, then ``eval_extra``) into the store."""
    from echodistill.eval.predictions import read_predictions
    from echodistill.eval.store import sha256_weights, write_run

    store = Path(spec.store)
    if (store / name / "run.json").is_file():
        return
    ev = runs_dir(spec) / "eval" / spec.split / name
    sh(ED + ["eval", *eval_args, "--checkpoint", str(ckpt), "--manifest", str(Path(spec.bench) / f"{spec.split}.jsonl"),
             "--out", str(ev), "--name", name, "--split-name", spec.split, *base_overrides(spec),
             f"run.num_threads={threads}", *spec.get("eval", []), *eval_extra], ev.parent / f"{name}.log", threads)
    extra = {}
    if run_dir is not None and (run_dir / "metrics.jsonl").is_file():
        import json
        rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
        extra["train_seconds"] = round(sum(r.get("time_step", 0.0) for r in rows), 1)
        extra["train_steps"] = rows[-1].get("step") if rows else 0
    write_run(store, name, method=method, seed=seed, split=spec.split, rows=read_predictions(ev / "predictions.jsonl"),
              start_sha256=sha256_weights(start), final_sha256=sha256_weights(ckpt),
              eval_settings={"overrides": [*spec.get("eval", []), *eval_extra], "manifest": f"{spec.split}.jsonl"},
              config_path=(run_dir / "config.yaml") if run_dir else None,
              train_metrics_path=(run_dir / "metrics.jsonl") if run_dir else None, extra=extra)
    say(f"stored {name}")


def run_unit(spec, method: str, seed: int | None, threads: int, warmup_done) -> None:
    """Train (unless ``kind: enhance``) one method with one seed, evaluate it, store it; seed None: seedless."""
    m = spec.methods[method]
    name = method if seed is None else f"{method}-s{seed}"
    if (Path(spec.store) / name / "run.json").is_file():
        return
    warmup_done.result()  # its starting point (submitted before every unit, so never queued behind it)
    start = warmup_dir(spec, m.warmup) / "final"
    run_dir = runs_dir(spec) / "train" / name
    kind = m.get("kind", "train")
    common = [*base_overrides(spec), f"run.output_dir={run_dir}", f"run.seed={seed}", f"run.num_threads={threads}"]
    say(f"{kind} {name}")
    if kind == "train":  # an RL variant
        sh(ED + ["train", "--resume", *common, f"train.init_from={start}", *spec.get("train", []),
                 *m.get("train", [])], run_dir.parent / f"{name}.log", threads)
    elif kind == "sft":  # supervised training from the warm-up (sft-noisy), its own budget keys
        sh(ED + ["warmup", "--resume", *common, f"warmup.init_from={start}", *m.get("train", [])],
           run_dir.parent / f"{name}.log", threads)
    elif kind == "enhance":  # no training: a denoising front-end before the warm-up model (seedless)
        store_eval(spec, name, method, None, start, start, threads, None, ["--method", "enhance"],
                   tuple(m.get("eval", [])))
        return
    else:
        raise RuntimeError(f"{name}: unknown kind {kind!r} (train | sft | enhance)")
    store_eval(spec, name, method, seed, run_dir / "final", start, threads, run_dir)


def warmup_eval(spec, name: str, threads: int, warmup_done) -> None:
    final = warmup_dir(spec, name) / "final"
    warmup_done.result()
    store_eval(spec, f"warmup-{name}", f"warmup-{name}", None, final, final, threads)


def cmd_run(args) -> None:
    spec = load_spec(args.spec)
    threads = args.threads or (1 if args.jobs > 1 else 2)
    prepare(spec)
    ready = {w: any((warmup_dir(spec, w) / "final").glob("*.safetensors")) for w in spec.warmups}
    methods = [m for m in spec.methods if not args.only or m in args.only]
    # units whose warm-up exists first, so no worker idles while another warm-up trains
    seeds = [s for s in spec.seeds if not args.seeds or s in args.seeds]
    # a method without training (kind: enhance) is one seedless unit, listed with the first seed
    units = sorted({(m, None if spec.methods[m].get("kind") == "enhance" else s) for s in seeds for m in methods},
                   key=lambda u: (not ready[spec.methods[u[0]].warmup], seeds.index(u[1]) if u[1] is not None else 0))
    failed = []
    with ThreadPoolExecutor(args.jobs) as pool:
        # units wait for their warm-up's training only; its evaluation is one more unit
        warm = {w: pool.submit(run_warmup, spec, w, threads) for w in spec.warmups}
        futures = {pool.submit(run_unit, spec, m, s, threads, warm[spec.methods[m].warmup]):
                   m if s is None else f"{m}-s{s}" for m, s in units}
        futures.update({pool.submit(warmup_eval, spec, w, threads, f): f"warmup-{w} eval" for w, f in warm.items()})
        for name, f in [*((f"warmup-{w}", f) for w, f in warm.items()), *((n, f) for f, n in futures.items())]:
            try:
                f.result()
            except RuntimeError as e:  # one failed unit does not stop the others; a rerun retries it
                failed.append(name)
                say(str(e))
    say(f"done; failed: {', '.join(failed)}" if failed else "all units done")
    if failed:
        sys.exit(1)


def cmd_report(args) -> None:
    """report.md, one accuracy-vs-SNR figure per regime and readme_table.md in the store; with
    ``--baseline`` only report_vs_<baseline>.md (``warmup``: each regime's warm-up)."""
    from dataclasses import replace

    from echodistill.eval.seeds import readme_table, regimes_from_spec, store_report

    spec = load_spec(args.spec)
    store = Path(spec.store)
    regimes = regimes_from_spec(spec)
    title = spec.get("title", Path(args.spec).stem)
    if args.readme_table:  # just the table, to paste into README
        print(readme_table(spec.store, spec.split, regimes, strong_snr_max=0.0), end="")
        return
    if args.baseline:  # a side view: no figures, no shares (they are defined against the spec's baselines)
        regimes = [replace(r, baseline=r.warmup if args.baseline == "warmup" else args.baseline, recovered=(),
                           contrasts=()) for r in regimes]
        text = store_report(spec.store, spec.split, strong_snr_max=0.0, regimes=regimes,
                            title=f"{title}, each method against " + ("the warm-up it starts from"
                                                                      if args.baseline == "warmup" else args.baseline))
        out = store / f"report_vs_{args.baseline}.md"
    else:
        text = store_report(spec.store, spec.split, strong_snr_max=0.0, regimes=regimes, title=title, plot_dir=store)
        out = store / "report.md"
        (store / "readme_table.md").write_text(readme_table(spec.store, spec.split, regimes, strong_snr_max=0.0))
    out.write_text(text)
    print(text)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="train/evaluate what the store lacks")
    r.add_argument("spec")
    r.add_argument("--jobs", type=int, default=1, help="units at once (1 torch thread each when > 1)")
    r.add_argument("--only", nargs="*", help="only these methods")
    r.add_argument("--seeds", nargs="*", type=int, help="only these of the spec's seeds")
    r.add_argument("--threads", type=int, help="torch threads per run (default: 1 with --jobs > 1, else 2); "
                   "use 1 when another experiment shares the cores")
    r.set_defaults(fn=cmd_run)
    q = sub.add_parser("report", help="seed-aware comparison from the store")
    q.add_argument("spec")
    q.add_argument("--baseline", help="pair every method against this one instead (warmup: each regime's "
                   "warm-up) -> report_vs_<baseline>.md; default: each regime's baseline from the spec")
    q.add_argument("--readme-table", action="store_true", help="only print the Markdown table for README's "
                   "Results section (report also writes it to readme_table.md)")
    q.set_defaults(fn=cmd_report)
    args = p.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
