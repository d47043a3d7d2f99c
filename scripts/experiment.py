#!/usr/bin/env python
"""Run an experiment spec (configs/experiments/*.yaml) into its results store, resumably.

    python scripts/experiment.py run configs/experiments/val_sweep.yaml [--jobs 2] [--only NAME ...]
    python scripts/experiment.py report configs/experiments/val_sweep.yaml [--baseline warmup] [--readme-table]
    python scripts/experiment.py check configs/experiments/round4.yaml      # the store against the plan
    python scripts/experiment.py choose configs/experiments/round4_tune.yaml  # tuning choice -> round4_chosen.yaml
    python scripts/experiment.py power configs/experiments/decisive.yaml --delta 0.03

``run``: builds the benchmark and the embedded model if missing, trains each warm-up once, then for
every (method, seed) trains, evaluates on the spec's split and writes the compact result to the store
(``echodistill.eval.store``). Every unit is skipped when its store entry exists and resumes from its
checkpoints otherwise, so a stopped run continues and a later session adds seeds by editing ``seeds``.
With ``--jobs 2`` two units run at once, one torch thread each (two 2-thread runs on 2 cores slow each
other 5-20x). ``report``: the seed-aware comparison (``echodistill.eval.seeds``) as Markdown in
``<store>/report.md``, per regime (the spec's ``regimes:``; methods paired against their regime's
baseline) with an accuracy-vs-SNR figure each (``snr_curves_<regime>.png``), and README's results table
(``readme_table.md``; ``--readme-table`` prints only that).

Round-4 specs (``formats:``; docs/preregistration-round4.md) cross every method with the response
formats, warm-up seeds and nested training seeds (and, in the tuning spec, a grid); ``echodistill.eval.plan``
expands them. ``run`` refuses units that cannot run in this checkout (a pending knob, a key this code
does not know, no tuning choice yet) with the reason, unless ``--skip-blocked``; ``check`` lists what is
stored, missing, blocked, unplanned or from another commit; ``choose`` applies the pre-registered tuning
rule to the tuning store and writes the test spec's ``chosen`` file; ``report`` gives the contrasts with
three-level intervals and the pre-registered decision.
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


def _read_spec(path: str):
    """A spec file, merged over its ``base:`` spec (recursively) when it names one."""
    spec = OmegaConf.load(path)
    if "base" in spec:  # round 4: the test spec inherits the tuning spec's methods, formats and budgets
        spec = OmegaConf.merge(_read_spec(spec.base), {k: v for k, v in spec.items() if k != "base"})
    return spec


def load_spec(path: str):
    spec = _read_spec(path)
    if "chosen" in spec:  # a round-4 test spec runs the chosen point of each method, not its grid
        spec = OmegaConf.create(OmegaConf.to_container(spec))
        for m in spec.methods.values():
            m.pop("grid", None)
    for key in ("store", "split", "work", "bench", "model", "seeds", "warmups", "methods"):
        if key not in spec:
            raise SystemExit(f"{path}: missing key {key!r}")
    if "formats" in spec and "warmup_seeds" not in spec:
        raise SystemExit(f"{path}: a round-4 spec (formats:) needs warmup_seeds: [...]")
    return spec


def base_overrides(spec) -> list[str]:
    return [f"data.bench_dir={spec.bench}", f"model.path={spec.model}"]


def sh(cmd: list[str], log: Path, threads: int) -> None:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads))
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(cmd)}\n")
        f.flush()
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT).returncode
    if rc != 0:
        raise RuntimeError(f"failed ({rc}): {' '.join(cmd)} -- see {log}")


def prepare(spec) -> None:
    """The benchmark and the embedded model, built deterministically if missing. As commands, so that a round-4
    run's kernel pins (``provenance.KERNEL_PINS``) reach numpy's OpenBLAS too, which a few clips' rendering
    goes through."""
    bench, model = Path(spec.bench), Path(spec.model)
    if not (bench / "datasheet.json").is_file() and not (bench / f"{spec.split}.jsonl").is_file():
        say(f"building the benchmark in {bench}")
        sh(ED + ["data", "build", "--out", str(bench), "--seed", "0", "--size", "default"],
           bench.parent / f"{bench.name}-build.log", 1)
    if not (model / "config.json").is_file():
        say(f"building the embedded model in {model}")
        sh(ED + ["model", "build", "--out", str(model), "--seed", "0", "--bench", str(bench)],
           model.parent / f"{model.name}-build.log", 1)


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
               run_dir: Path | None = None, eval_args: tuple = (), eval_extra: tuple = (),
               meta: dict | None = None) -> None:
    """Evaluate ``ckpt`` on the spec's split (its ``eval`` overrides, then ``eval_extra``) into the store."""
    from echodistill.eval.predictions import read_predictions
    from echodistill.eval.store import write_run
    from echodistill.provenance import weights_sha256

    store = Path(spec.store)
    if (store / name / "run.json").is_file():
        return
    ev = runs_dir(spec) / "eval" / spec.split / name
    # the spec's feature_cache: every unit's evaluation reads the frozen encoder's output of each batch from one
    # folder. A cache, not a setting (the rows are the same bits with or without it: tests/test_evaluate.py), so
    # it is not among the recorded overrides.
    cache = [f"model.feature_cache_dir={spec.feature_cache}"] if spec.get("feature_cache") else []
    sh(ED + ["eval", *eval_args, "--checkpoint", str(ckpt), "--manifest", str(Path(spec.bench) / f"{spec.split}.jsonl"),
             "--out", str(ev), "--name", name, "--split-name", spec.split, *base_overrides(spec),
             f"run.num_threads={threads}", *spec.get("eval", []), *eval_extra, *cache], ev.parent / f"{name}.log",
       threads)
    extra = dict(meta or {})
    if run_dir is not None and (run_dir / "metrics.jsonl").is_file():
        import json
        rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
        extra["train_seconds"] = round(sum(r.get("time_step", 0.0) for r in rows), 1)
        extra["train_steps"] = rows[-1].get("step") if rows else 0
    write_run(store, name, method=method, seed=seed, split=spec.split, rows=read_predictions(ev / "predictions.jsonl"),
              start_sha256=weights_sha256(start, require=True), final_sha256=weights_sha256(ckpt, require=True),
              eval_settings={"overrides": [*spec.get("eval", []), *eval_extra], "manifest": f"{spec.split}.jsonl"},
              config_path=(run_dir / "config.yaml") if run_dir else None,
              train_metrics_path=(run_dir / "metrics.jsonl") if run_dir else None, extra=extra, threads=threads)
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


def wait_all(named_futures) -> None:
    """Wait for every (name, future); a failed unit does not stop the others (a rerun retries it), but
    the command exits 1 naming them."""
    failed = []
    for name, f in named_futures:
        try:
            f.result()
        except RuntimeError as e:
            failed.append(name)
            say(str(e))
    say(f"done; failed: {', '.join(failed)}" if failed else "all units done")
    if failed:
        sys.exit(1)


def cmd_run(args) -> None:
    spec = load_spec(args.spec)
    from echodistill.eval.plan import is_nested_spec

    if is_nested_spec(spec):
        return cmd_run_nested(spec, args)
    threads = args.threads or (1 if args.jobs > 1 else 2)
    prepare(spec)
    ready = {w: any((warmup_dir(spec, w) / "final").glob("*.safetensors")) for w in spec.warmups}
    methods = [m for m in spec.methods if not args.only or m in args.only]
    # units whose warm-up exists first, so no worker idles while another warm-up trains
    seeds = [s for s in spec.seeds if not args.seeds or s in args.seeds]
    # a method without training (kind: enhance) is one seedless unit, listed with the first seed
    units = sorted({(m, None if spec.methods[m].get("kind") == "enhance" else s) for s in seeds for m in methods},
                   key=lambda u: (not ready[spec.methods[u[0]].warmup], seeds.index(u[1]) if u[1] is not None else 0))
    with ThreadPoolExecutor(args.jobs) as pool:
        # units wait for their warm-up's training only; its evaluation is one more unit
        warm = {w: pool.submit(run_warmup, spec, w, threads) for w in spec.warmups}
        futures = {pool.submit(run_unit, spec, m, s, threads, warm[spec.methods[m].warmup]):
                   m if s is None else f"{m}-s{s}" for m, s in units}
        futures.update({pool.submit(warmup_eval, spec, w, threads, f): f"warmup-{w} eval" for w, f in warm.items()})
        wait_all([*((f"warmup-{w}", f) for w, f in warm.items()), *((n, f) for f, n in futures.items())])


# ------------------------------------------------------------------ round 4: formats x warm-up seeds x seeds
# The warm-ups' build is made bit-reproducible rather than stored (docs/preregistration-round4.md): one
# thread, no wall-clock cap, and the CPU kernels pinned to one instruction set (``provenance.KERNEL_PINS``),
# so a later run on another machine rebuilds the same weights and adds seeds to the stored units (the store
# checks the sha256). Unpinned, an AVX-512 machine builds another benchmark (numpy's OpenBLAS renders two
# clips differently) and other warm-up weights than an AVX2 one. Every command a round-4 run starts gets the
# pins (the benchmark's and the model's builds included), so a unit continued elsewhere is the same computation.


def nested_warmup_dir(spec, w) -> Path:
    return Path(spec.work) / w.name


def run_nested_warmup(spec, w, threads: int) -> Path:
    """Build one warm-up (regime ``w.key``, format, warm-up seed) once, with one thread."""
    out = nested_warmup_dir(spec, w)
    if not any((out / "final").glob("*.safetensors")):
        say(f"warm-up {w.name} -> {out}")
        sh(ED + ["warmup", "--resume", *base_overrides(spec), f"run.output_dir={out}", "run.num_threads=1",
                 *spec.get("common", []), *spec.formats[w.fmt], *spec.warmups[w.key].get("overrides", []),
                 f"run.seed={w.seed}", "warmup.max_minutes=0"],
           out.parent / f"{w.name}.log", 1)
    return out / "final"


def nested_meta(u=None, w=None) -> dict:
    w = w or u.warmup
    meta = {"format": w.fmt, "warmup": w.key, "warmup_seed": w.seed}
    if u is not None:
        meta["point"] = u.point_dict
    return meta


def run_nested_unit(spec, u, threads: int, warmup_done) -> None:
    from echodistill.eval.plan import unit_overrides

    if (Path(spec.store) / u.name / "run.json").is_file():
        return
    start = warmup_done.result()
    run_dir = runs_dir(spec) / "train" / u.name
    m = spec.methods[u.method]
    kind = m.get("kind", "train")
    common = [*base_overrides(spec), f"run.output_dir={run_dir}", f"run.seed={u.seed}", f"run.num_threads={threads}"]
    say(f"{kind} {u.name}")
    if kind == "train":
        sh(ED + ["train", "--resume", *common, f"train.init_from={start}", *unit_overrides(spec, u)],
           run_dir.parent / f"{u.name}.log", threads)
    elif kind == "sft":
        sh(ED + ["warmup", "--resume", *common, f"warmup.init_from={start}", *unit_overrides(spec, u)],
           run_dir.parent / f"{u.name}.log", threads)
    else:
        raise RuntimeError(f"{u.name}: unknown kind {kind!r} (round-4 specs: train | sft)")
    store_eval(spec, u.name, u.method, u.seed, run_dir / "final", start, threads, run_dir,
               eval_extra=(*spec.get("common", []), *spec.formats[u.fmt]), meta=nested_meta(u))


def nested_warmup_eval(spec, w, threads: int, warmup_done) -> None:
    final = warmup_done.result()
    store_eval(spec, w.name, f"warmup-{w.key}", None, final, final, threads,
               eval_extra=(*spec.get("common", []), *spec.formats[w.fmt]), meta=nested_meta(w=w))


def select_units(spec, args):
    from echodistill.eval.plan import plan_units

    units = plan_units(spec)
    keep = lambda u: ((not args.only or u.method in args.only) and (not args.seeds or u.seed in args.seeds)  # noqa: E731
                      and (not args.formats or u.fmt in args.formats)
                      and (not args.warmup_seeds or u.warmup.seed in args.warmup_seeds))
    return [u for u in units if keep(u)]


def check_frozen_commit(spec, spec_path: str, formats: set) -> None:
    """Refuse test units without their format's frozen commit, or from other code than it."""
    from echodistill.eval.plan import frozen_commit, made_from
    from echodistill.provenance import code_version

    for fmt in sorted(formats):
        commit = frozen_commit(spec, fmt)
        if str(spec.split).startswith("test") and not commit:
            raise SystemExit(f"{spec_path}: split test and no frozen_commit for the {fmt} format: the "
                             "pre-registration asks for every test unit from the frozen commit that holds its "
                             f"committed tuning choice; set frozen_commit ({{{fmt}: <commit>}}) to it")
        if commit and not made_from(version := code_version(), commit):
            raise SystemExit(f"{spec_path}: the code imported is {version}, the {fmt} format's frozen_commit "
                             f"is {commit}: run that format with that commit's code (git worktree add --detach "
                             f"../r4-frozen {commit}; then PYTHONPATH=../r4-frozen/src ... --formats {fmt})")


def cmd_run_nested(spec, args) -> None:
    from echodistill.eval.plan import warmup_units

    units = select_units(spec, args)
    blocked = [u for u in units if u.blocked and not (Path(spec.store) / u.name / "run.json").is_file()]
    if blocked:
        reasons: dict[str, list[str]] = {}
        for u in blocked:
            reasons.setdefault(u.blocked, []).append(u.name)
        msg = "\n".join(f"  {len(v)} units ({', '.join(v[:3])}{', ...' if len(v) > 3 else ''}): {k}"
                        for k, v in reasons.items())
        if not args.skip_blocked:
            raise SystemExit(f"{args.spec}: {len(blocked)} of the selected units cannot run in this checkout:\n{msg}\n"
                             "Select the others (--formats, --only) or pass --skip-blocked to run the rest.")
        say(f"skipping {len(blocked)} blocked units:\n{msg}")
    units = [u for u in units if not u.blocked]
    check_frozen_commit(spec, args.spec, {u.fmt for u in units})
    threads = args.threads or (1 if args.jobs > 1 else 2)
    from echodistill.provenance import KERNEL_PINS
    os.environ.update(KERNEL_PINS)  # inherited by every command below (sh copies os.environ)
    prepare(spec)
    todo = [u for u in units if not (Path(spec.store) / u.name / "run.json").is_file()]
    say(f"{len(units)} units selected, {len(todo)} to run")
    with ThreadPoolExecutor(args.jobs) as pool:
        # a warm-up is built only when a unit still needs it (its evaluation or a training unit is not stored)
        needed = [w for w in warmup_units(spec, units)
                  if not (Path(spec.store) / w.name / "run.json").is_file() or any(u.warmup == w for u in todo)]
        warm = {w: pool.submit(run_nested_warmup, spec, w, threads) for w in needed}
        futures = {pool.submit(run_nested_unit, spec, u, threads, warm[u.warmup]): u.name for u in todo}
        futures.update({pool.submit(nested_warmup_eval, spec, w, threads, f): f"{w.name} eval" for w, f in warm.items()})
        wait_all([(n, f) for f, n in futures.items()])


def store_metas(spec) -> dict:
    import json

    store = Path(spec.store)
    return {d.name: json.loads((d / "run.json").read_text()) for d in sorted(store.iterdir())
            if (d / "run.json").is_file()} if store.is_dir() else {}


def cmd_check(args) -> None:
    from echodistill.eval.plan import check_store, plan_units

    spec = load_spec(args.spec)
    check = check_store(spec, plan_units(spec), store_metas(spec))
    print("\n".join(check.lines()))
    if args.strict and not check.complete:
        sys.exit(1)


def cmd_choose(args, write_choice: bool = True) -> None:
    """The pre-registered tuning choice from the tuning store -> the test spec's ``chosen`` file."""
    from echodistill.eval.plan import TIE, check_store, choose, grid_edges, plan_units, tuning_table
    from echodistill.eval.store import read_store
    from echodistill.eval.tuning_plot import tuning_figure

    spec = load_spec(args.spec)
    units = [u for u in plan_units(spec, validate=False)]
    runs = {r.name: r for r in read_store(spec.store, spec.split)}
    table = tuning_table(spec, units, runs)
    chosen: dict = {}
    lines = [f"# Tuning on {spec.split} ({args.spec}): mean strong GSR over seeds, % (docs/preregistration-round4.md)",
             "", f"Chosen: the highest mean once every point of the method's grid is stored; means within "
             f"{100 * TIE:.2f} points of it tie, and a tie goes to the lower learning rate, then to beta 0.",
             "", "| format | method | point | per seed | mean | chosen |", "|---|---|---|---|---|---|"]
    incomplete, picks = [], {}
    for (fmt, method), points in sorted(table.items()):
        pick = picks[(fmt, method)] = choose(points)
        if pick is None:
            incomplete.append(f"{method} ({fmt}): " + ", ".join(n for p in points for n in p["missing"])[:200])
        else:
            chosen.setdefault(fmt, {})[method] = {"point": pick["point"], "strong_gsr": round(pick["mean"], 6),
                                                  "grid": {p["label"]: None if p["mean"] is None else round(p["mean"], 6)
                                                           for p in points}}
        for p in points:
            vals = ", ".join(f"{100 * v:.1f}" for v in p["values"]) or "-"
            mean = "-" if p["mean"] is None else f"{100 * p['mean']:.2f}"
            lines.append(f"| {fmt} | {method} | {p['label']} | {vals} | {mean} | {'**yes**' if p is pick else ''} |")
    Path(spec.store).mkdir(parents=True, exist_ok=True)
    if tuning_figure(table, picks, Path(spec.store) / "tuning.png", title=str(spec.get("title", ""))):
        lines[1:1] = ["", "![strong GSR per grid point and seed](tuning.png)"]
    text = "\n".join(lines) + "\n"
    grids = OmegaConf.to_container(spec.grids)
    edges = [f"* {method} ({fmt}): " + ", ".join(e) for (fmt, method), pick in sorted(picks.items()) if pick
             for e in [grid_edges(pick["point"], grids)] if e]
    if edges:  # such a method may be under-tuned against one chosen inside its grid
        text += ("\nChosen at an end of its grid (its best may lie beyond the pre-registered grid, which is not "
                 "extended):\n" + "\n".join(edges) + "\n")
    if incomplete:
        text += "\nNot chosen (grid incomplete):\n" + "\n".join(f"* {x}" for x in incomplete) + "\n"
    other_build = check_store(spec, units, {n: r.meta for n, r in runs.items()}).other_build
    if other_build:  # their grid points started elsewhere: no choice until they are rerun
        text += ("\n**Started from another build of their warm-up** (rerun them; no choice is written meanwhile): "
                 + ", ".join(other_build) + "\n")
    print(text, end="")
    (Path(spec.store) / "tuning.md").write_text(text)
    if not write_choice:
        return
    out = Path(args.out or spec.get("choice_file") or Path(args.spec).with_name(Path(args.spec).stem + "_chosen.yaml"))
    if other_build:
        say(f"{len(other_build)} units started from another build of their warm-up: {out} not written")
        return
    if not chosen:  # an empty choice file would read as "tuned, nothing chosen"
        say(f"no method's grid is complete yet: {out} not written (the table is in {Path(spec.store) / 'tuning.md'})")
        return
    header = (f"# Written by `python scripts/experiment.py choose {args.spec}` from {spec.store} (split {spec.split});\n"
              "# the rule: docs/preregistration-round4.md section 4. Do not edit by hand.\n")
    OmegaConf.save(OmegaConf.create({"source": str(spec.store), "chosen": chosen}), out)
    out.write_text(header + out.read_text())
    say(f"wrote {out} ({sum(len(v) for v in chosen.values())} choices; {len(incomplete)} incomplete)")


def cmd_power(args) -> None:
    """Seeds needed per contrast of a stored (round-3 style) experiment, from its paired variances."""
    from echodistill.eval.seeds import compare, regimes_from_spec, seeds_needed
    from echodistill.eval.store import paired_runs, read_store

    spec = load_spec(args.spec)
    by: dict = {}
    for r in read_store(spec.store, spec.split):
        by.setdefault(r.method, []).append(r)
    print(f"| contrast | seeds | diff | seed-level SD | seeds for {100 * args.delta:g} points (power {args.power}) |")
    print("|---|---|---|---|---|")
    for reg in regimes_from_spec(spec):
        for a, b in [*((m, reg.baseline) for m in reg.methods if m != reg.baseline), *reg.contrasts]:
            if not (by.get(a) and by.get(b)):
                continue
            pairs = paired_runs(by[a], by[b])
            if len(pairs) < 2:
                continue
            c = compare([p[0].rows for p in pairs], [p[1].rows for p in pairs], args.metric, n_boot=200)
            n = seeds_needed(args.delta, c["var_between_seeds"], c["var_items"], c["n_items"], power=args.power)
            print(f"| {a} - {b} | {len(pairs)} | {100 * c['diff']:+.2f} | {100 * c['var_between_seeds'] ** 0.5:.2f} "
                  f"| {n if n is not None else '> 200'} |")


def frozen_commits_diff(spec) -> list[str]:
    """``git diff --stat`` of the code between the formats' frozen commits (section 10 of the
    pre-registration promises it holds only logged changes); [] while fewer than two differ."""
    from echodistill.eval.plan import frozen_commit
    from echodistill.provenance import CODE_PATHS

    commits = sorted({c for fmt in spec.formats if (c := frozen_commit(spec, fmt))})
    if len(commits) < 2:
        return []
    res = subprocess.run(["git", "diff", "--stat", *commits, "--", *CODE_PATHS], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1])
    return res.stdout.splitlines() if res.returncode == 0 else [f"(git diff failed: {res.stderr.strip()})"]


def cmd_report_nested(spec, args) -> None:
    """Round 4: a tuning spec's table (``<store>/tuning.md``), or a test spec's report (``<store>/report.md``)."""
    from echodistill.eval.nested_report import nested_report
    from echodistill.eval.plan import check_store, plan_units
    from echodistill.eval.store import read_store

    if any(m.get("grid") for m in spec.methods.values()):
        return cmd_choose(args, write_choice=False)
    check = check_store(spec, plan_units(spec), store_metas(spec))
    text = nested_report(spec, read_store(spec.store, spec.split), check.lines(), complete=check.complete,
                         commit_diff=frozen_commits_diff(spec))
    Path(spec.store).mkdir(parents=True, exist_ok=True)
    (Path(spec.store) / "report.md").write_text(text)
    print(text, end="")


def cmd_report(args) -> None:
    """report.md, one accuracy-vs-SNR figure per regime and readme_table.md in the store; with
    ``--baseline`` only report_vs_<baseline>.md (``warmup``: each regime's warm-up)."""
    from dataclasses import replace

    from echodistill.eval.seeds import readme_table, regimes_from_spec, store_report

    spec = load_spec(args.spec)
    from echodistill.eval.plan import is_nested_spec

    if is_nested_spec(spec):
        return cmd_report_nested(spec, args)
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
    r.add_argument("--formats", nargs="*", help="round 4: only these response formats")
    r.add_argument("--warmup-seeds", nargs="*", type=int, help="round 4: only these warm-up seeds")
    r.add_argument("--skip-blocked", action="store_true", help="round 4: run what can run, list the blocked units "
                   "(default: refuse when a selected unit cannot run in this checkout)")
    r.set_defaults(fn=cmd_run)
    q = sub.add_parser("report", help="seed-aware comparison from the store")
    q.add_argument("spec")
    q.add_argument("--baseline", help="pair every method against this one instead (warmup: each regime's "
                   "warm-up) -> report_vs_<baseline>.md; default: each regime's baseline from the spec")
    q.add_argument("--readme-table", action="store_true", help="only print the Markdown table for README's "
                   "Results section (report also writes it to readme_table.md)")
    q.set_defaults(fn=cmd_report)
    c = sub.add_parser("check", help="round 4: the store against the plan (missing, blocked, extra, off-commit units)")
    c.add_argument("spec")
    c.add_argument("--strict", action="store_true", help="exit 1 unless every planned unit is stored")
    c.set_defaults(fn=cmd_check)
    ch = sub.add_parser("choose", help="round 4: the pre-registered tuning choice from a tuning store -> the "
                        "test spec's chosen file (and <store>/tuning.md)")
    ch.add_argument("spec")
    ch.add_argument("--out", help="default: the spec's choice_file, else <spec>_chosen.yaml beside it")
    ch.set_defaults(fn=cmd_choose)
    pw = sub.add_parser("power", help="seeds needed per contrast, from a stored experiment's paired variances")
    pw.add_argument("spec")
    pw.add_argument("--metric", default="StrongGSR")
    pw.add_argument("--delta", type=float, default=0.03, help="the true difference to detect (0.03 = 3 points)")
    pw.add_argument("--power", type=float, default=0.8)
    pw.set_defaults(fn=cmd_power)
    args = p.parse_args()
    from echodistill.errors import UserError

    try:
        args.fn(args)
    except UserError as e:  # a mistake in the spec or the store: its message names the key and the fix
        raise SystemExit(f"{args.spec}: {e}")


if __name__ == "__main__":
    main()
