"""The `echodistill` command line: data, model, warmup, train, eval, report, demo, config.

Every subcommand that trains or evaluates takes ``--config FILE`` plus dotted overrides
(``train.learning_rate=1e-5``). Heavy imports happen inside the handlers so ``--help`` is instant.
User mistakes (bad config, bad data) end with one clear line and exit code 2, never a traceback; the
exit codes are listed in ``EXIT_CODES`` (and in ``--help``).
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

from .config import LONG_AUDIO
from .errors import UserError

# Exit codes scripts can rely on (also in `echodistill --help`).
EXIT_NOTHING_DONE = 1  # the command ran but nothing succeeded (e.g. every predict file failed)
EXIT_USER_ERROR = 2  # a mistake to fix: command line, config, data; one line names which and where
EXIT_PARTIAL = 3  # some items succeeded, some failed (each failure is in the output, with its reason)
EXIT_INTERRUPTED = 130
EXIT_CODES = ("exit codes: 0 done; 1 nothing succeeded; 2 a mistake in the command line, config or data (one "
              "line says which); 3 partly done (predict: some files failed, see their rows); 130 interrupted; "
              "anything else is a bug (with a traceback)")


def _cfg(args):
    from .config import load_config
    return load_config(args.config, args.overrides)


def _add_config_args(p: argparse.ArgumentParser, example: str = "train.learning_rate=1e-5 run.seed=1") -> None:
    p.add_argument("--config", "-c", default=None,
                   help="a YAML file, or the name of a config shipped with echodistill (e.g. demo; "
                        "`echodistill config list`); defaults are used without it")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value",
                   help=f"dotted config overrides applied last, e.g. {example} (every key: `echodistill config show`)")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Each option's default after its help (unless it is None/False or the help already says it);
    descriptions and epilogs kept as written (examples, variant lists)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or any(action.default is v for v in (None, False, argparse.SUPPRESS)) \
                or not action.option_strings:
            return text
        return text + " (default: %(default)s)"

    def _split_lines(self, text, width):
        # never split a name at its hyphen ("echodistill-\nunlabeled"): variant and key names stay whole
        return textwrap.wrap(self._whitespace_matcher.sub(" ", text).strip(), width, break_on_hyphens=False)


class _Parser(argparse.ArgumentParser):
    """Every (sub)parser shows defaults; subparsers inherit the class from their parent."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)


ACCELERATE = ("multi-GPU / multi-node (train, warmup): run the same command under accelerate, e.g.\n"
              "  accelerate launch --config_file configs/accelerate/ddp_gpu.yaml -m echodistill.cli train \\\n"
              "      -c configs/qwen2_audio_7b.yaml\n"
              "  (configs/accelerate/ holds the launch configs; README, 'Real models', says which to use)")


def _variants_epilog() -> str:
    from .config import VARIANTS

    lines = ["variants (train.variant=NAME): a named list of teacher signals (signals.<name>.weight, train/signals/);",
             "your own keys win. `echodistill config show train.variant=NAME` prints every key it sets."]
    for research in (False, True):
        lines.append("research variants (behind the ones above in docs/results.md, or not compared yet):"
                     if research else "")
        for name, v in VARIANTS.items():
            if v.research == research:
                signals = ", ".join(f"{k} x{s['weight'] if isinstance(s, dict) else s}" for k, s in v.signals.items())
                lines.append(f"  {name:<22} {v.summary} [{signals or 'no teacher'}]")
    lines += ["", "examples:",
              "  echodistill train train.variant=echodistill-rescue train.init_from=runs/warmup/final "
              "run.output_dir=runs/ed",
              "  echodistill train --resume run.output_dir=runs/ed      # continue a stopped run",
              "  echodistill train -c configs/demo.yaml train.reward_funcs=[my_rewards:short]   # plug-in reward",
              "", ACCELERATE]
    return "\n".join(lines)


def _path_map(items: list[str] | None, flag: str = "--path-map", form: str = "OLD_PREFIX=NEW_PREFIX") -> dict:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise UserError(f"{flag} {item!r} must look like {form}")
        old, new = item.split("=", 1)
        out[old] = new
    return out


# ---------------------------------------------------------------- handlers
def cmd_data_build(args) -> int:
    from .data.bench import build_benchmark
    build_benchmark(Path(args.out), seed=args.seed, size=args.size)
    return 0


def cmd_data_check(args) -> int:
    from .data.check import run_check
    from .data.validate import limits_from_config, load_tokenizer
    # The runs' own limits (window, minimum, long-audio policy, prompt tokens with the model's tokenizer),
    # so the check passes exactly what `train` and `eval` accept.
    extra = [f"data.max_duration_s={args.max_duration}"] if args.max_duration is not None else []
    extra += [f"data.long_audio={args.long_audio}"] if args.long_audio else []
    cfg = load_config_for(args, extra)
    pmap = dict(cfg.data.path_map or {})
    pmap.update(_path_map(args.path_map))
    return run_check(Path(args.manifest), path_map=pmap, fmt=args.format,
                     columns={**dict(cfg.data.columns), **_path_map(args.column, "--column", "FIELD=COLUMN")},
                     limits=limits_from_config(cfg, load_tokenizer(cfg.model)), choice_seed=int(cfg.data.choice_seed))


def load_config_for(args, extra: list[str]):
    from .config import load_config
    return load_config(args.config, list(args.overrides) + extra)


def cmd_data_mix(args) -> int:
    from .data.mix import mix_manifest
    mix_manifest(Path(args.manifest), Path(args.out), noise_types=args.noise_types, snrs=args.snr,
                 seed=args.seed, noise_dir=args.noise_dir, path_map=_path_map(args.path_map))
    return 0


def cmd_model_build(args) -> int:
    from .models.embedded import build_embedded_model, read_bench_texts
    texts = read_bench_texts(Path(args.bench)) if args.bench else None
    build_embedded_model(Path(args.out), seed=args.seed, window_s=args.window, corpus_texts=texts,
                         vocab_size=args.vocab_size)
    return 0


def cmd_warmup(args) -> int:
    from .train.sft import run_warmup
    run_warmup(_cfg(args), resume=args.resume)
    return 0


def cmd_train(args) -> int:
    from .train.trainer import run_train
    run_train(_cfg(args), resume=args.resume)
    return 0


def cmd_eval(args) -> int:
    from .eval.evaluate import run_eval
    from .run_config import config_for_checkpoint
    cfg = config_for_checkpoint(args.checkpoint, args.config, args.overrides, command="eval",
                                trust_remote_code=args.trust_remote_code)
    run_eval(cfg, checkpoint=args.checkpoint, manifest=args.manifest, out_dir=Path(args.out),
             method=args.method, name=args.name, split_name=args.split_name,
             path_map=_path_map(args.path_map), fmt=args.format)
    return 0


def cmd_predict(args) -> int:
    from .inference import run_predict
    from .run_config import config_for_checkpoint
    cfg = config_for_checkpoint(args.checkpoint, args.config, args.overrides, command="predict",
                                trust_remote_code=args.trust_remote_code)
    rows = run_predict(cfg, args.checkpoint, args.audio, args.question, args.choices, noise_type=args.noise,
                       snr=args.snr, out=args.out, batch_size=args.batch_size, path_map=_path_map(args.path_map))
    failed = sum(1 for r in rows if r.get("error"))
    if failed:
        print(f"echodistill: predict: {failed} of {len(rows)} file(s) failed (their error is in the row)",
              file=sys.stderr)
    return EXIT_NOTHING_DONE if failed == len(rows) else EXIT_PARTIAL if failed else 0


def cmd_export(args) -> int:
    from .card import export_model
    export_model(Path(args.source), Path(args.out), base_model_id=args.base_model_id, eval_dirs=args.eval or [],
                 overwrite=args.overwrite, trust_remote_code=args.trust_remote_code)
    return 0


def cmd_report(args) -> int:
    from .eval.report import make_report
    make_report([Path(p) for p in args.runs], Path(args.out), baseline=args.baseline)
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo
    run_demo(preset=args.preset, out_dir=Path(args.out), seeds=args.seeds, response_format=args.format)
    return 0


def cmd_config_show(args) -> int:
    from omegaconf import OmegaConf

    from .config import code_requests, to_dict
    cfg = _cfg(args)  # reading runs no code: plug-ins are found, not imported
    print(OmegaConf.to_yaml(OmegaConf.create(to_dict(cfg))))  # oc.env values (secrets) masked
    for line in code_requests(cfg):
        print(f"echodistill: note: this config asks to run code: {line}", file=sys.stderr)
    return 0


def cmd_config_list(args) -> int:
    from .config_files import config_names, configs_dir
    for name in config_names():
        print(name)
    print(f"(in {configs_dir()})", file=sys.stderr)
    return 0


def cmd_config_path(args) -> int:
    from .config_files import resolve_config_path
    print(resolve_config_path(args.name).resolve())
    return 0


# ---------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    from .data.manifest import FORMATS  # light module: the one list of manifest formats
    from . import __version__
    from .config import VARIANTS

    p = _Parser(
        prog="echodistill",
        description="Make audio LLMs robust to noise: GRPO post-training with a clean-audio teacher "
                    "(noisy-to-clean self-distillation), plus data tools and an honest evaluation.",
        epilog="Every command has --help. Python API: import echodistill (README, 'Python API').\n" + ACCELERATE
               + "\n\n" + EXIT_CODES)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = sub.add_parser("data", help="build, check and pre-mix datasets").add_subparsers(
        dest="data_command", required=True, metavar="DATA_COMMAND")
    b = data.add_parser("build", help="build the offline spoken-QA benchmark from packaged recordings and TTS",
                        description="Builds train/val/test/test_heldout manifests, 16 kHz clips, a noise bank "
                                    "and a datasheet from Debian/PyPI-packaged sources only.")
    b.add_argument("--out", default="data/bench", help="output folder")
    b.add_argument("--seed", type=int, default=0, help="same seed -> same items, labels and audio")
    b.add_argument("--size", choices=["small", "default"], default="default",
                   help="small: a few hundred items for tests; default: >= 2,000 train items")
    b.set_defaults(func=cmd_data_build)

    c = data.add_parser("check", help="validate a manifest and report every problem with its location and a fix",
                        description="Exit code 0 only when the manifest is clean.")
    c.add_argument("manifest", help="JSONL manifest (ours or the paper release's rows), MMAU-style JSON, or a "
                                    "Hugging Face dataset (save_to_disk folder, .parquet; JSON with --format hf)")
    c.add_argument("--format", choices=FORMATS, default="auto", help="manifest format (auto: detected)")
    c.add_argument("--column", action="append", metavar="FIELD=COLUMN",
                   help="HF datasets: the column holding FIELD (id, audio, question, choices, target, task, split); "
                        "repeatable, like data.columns in a config")
    c.add_argument("--path-map", action="append", metavar="OLD=NEW", help="rewrite audio path prefixes (repeatable)")
    c.add_argument("--max-duration", type=float, default=None,
                   help="the model window in seconds (data.max_duration_s); longer clips are truncated or flagged")
    c.add_argument("--long-audio", choices=list(LONG_AUDIO), default=None,
                   help="clips longer than the window: truncate (a counted note, as the runs do) or skip (an error)")
    _add_config_args(c)
    c.set_defaults(func=cmd_data_check)

    m = data.add_parser("mix", help="pre-mix a manifest across noise types x SNR levels",
                        description="Writes <out>/<noise_type>/<snr>dB/<id>.wav and <out>/noisy.jsonl "
                                    "(one folder per noise type and SNR, as in the paper release).")
    m.add_argument("manifest", help="the clean manifest to mix (any format `data check` reads)")
    m.add_argument("--out", required=True, help="output folder for the noisy clips and noisy.jsonl")
    m.add_argument("--noise-types", nargs="+", default=["white", "pink", "babble", "music"],
                   help="noise types (white pink brown hum babble music midi, file:<name>)")
    m.add_argument("--snr", nargs="+", type=float, default=[-10, -5, 0, 5, 10, 20, 30], help="SNR levels in dB")
    m.add_argument("--seed", type=int, default=0, help="seeds every noise draw (same seed -> same clips)")
    m.add_argument("--noise-dir", default=None, help="noise bank folder (default: <manifest dir>/noise)")
    m.add_argument("--path-map", action="append", metavar="OLD=NEW", help="rewrite audio path prefixes (repeatable)")
    m.set_defaults(func=cmd_data_mix)

    model = sub.add_parser("model", help="build the embedded offline audio LLM").add_subparsers(
        dest="model_command", required=True, metavar="MODEL_COMMAND")
    mb = model.add_parser("build", help="assemble the embedded model (real Whisper tiny.en encoder + small Qwen2 LM)")
    mb.add_argument("--out", default="models/embedded", help="output folder (an HF model directory)")
    mb.add_argument("--seed", type=int, default=0, help="seeds the parts that are initialised (projector, LM)")
    mb.add_argument("--window", type=float, default=2.0, help="audio window in whole seconds (1-30); 25 audio tokens/s")
    mb.add_argument("--bench", default=None, metavar="DIR",
                    help="train the tokenizer on DIR/*.jsonl questions and choices too (e.g. data/bench)")
    mb.add_argument("--vocab-size", type=int, default=4096,
                    help="upper bound on the small tokenizer's vocabulary (it stops once every word is one token)")
    mb.set_defaults(func=cmd_model_build)

    w = sub.add_parser("warmup", help="supervised warm-up (clean) or the sft-noisy baseline (warmup.noisy=true)",
                       epilog="examples:\n"
                              "  echodistill warmup run.output_dir=runs/warmup warmup.max_steps=300\n"
                              "  echodistill warmup warmup.noisy=true warmup.init_from=runs/warmup/final "
                              "run.output_dir=runs/sft-noisy\n\n" + ACCELERATE)
    _add_config_args(w, "warmup.learning_rate=3e-3 warmup.max_steps=300 run.output_dir=runs/warmup")
    w.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in run.output_dir")
    w.set_defaults(func=cmd_warmup)

    t = sub.add_parser("train", help=f"GRPO with a clean-audio teacher; train.variant: {', '.join(VARIANTS)}",
                       description="GRPO on noisy clips; the frozen initial model scores every sample on the "
                                   "clean clip (train/trainer.py). The variant picks the teacher signal.",
                       epilog=_variants_epilog())
    _add_config_args(t, "train.variant=grpo train.learning_rate=1e-5 run.output_dir=runs/grpo")
    t.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in run.output_dir")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="greedy evaluation: clean, noisy (types x SNR), silent; metrics with 95%% CIs",
                       description="Settings: --config if given, else the run's config.yaml beside --checkpoint "
                                   "(its data folders, window and seeds), else the defaults; overrides last. "
                                   "The same rule as predict and the Python API.")
    _add_config_args(e, "eval.noise_types=[white,babble] eval.snr_levels=[-5,0,5] eval.max_items=100")
    e.add_argument("--checkpoint", default=None, help="model/adapter dir (default: model.path)")
    e.add_argument("--manifest", default=None, help="manifest to evaluate (default: data.test_manifest)")
    e.add_argument("--out", required=True, help="folder for predictions.jsonl and metrics.json")
    e.add_argument("--method", choices=["model", "enhance", "cascade"], default="model",
                   help="model: as is; enhance: DeepFilterNet3 before the model; cascade: Whisper tiny.en + closest choice")
    e.add_argument("--name", default=None, help="label shown in reports (default: folder name)")
    e.add_argument("--split-name", default=None, help="label of the split in reports")
    e.add_argument("--format", choices=FORMATS, default="auto", help="manifest format (auto: detected)")
    e.add_argument("--path-map", action="append", metavar="OLD=NEW", help="rewrite audio path prefixes (repeatable)")
    e.add_argument("--trust-remote-code", action="store_true",
                   help="allow a checkpoint whose run config asks to run the model's own Python code "
                        "(model.trust_remote_code); refused without it")
    e.set_defaults(func=cmd_eval)

    pr = sub.add_parser("predict", help="answer a question about audio files with a trained model (text + JSONL)",
                        description="Greedy answers per file. Settings: --config if given, else the run's config.yaml "
                                    "beside the checkpoint (same window and seeds as training), else the defaults; "
                                    "overrides last (the same rule as eval).",
                        epilog="example: echodistill predict --checkpoint runs/ed/final --audio clip.wav "
                               "--question 'Which word is spoken?' --choices yes no maybe --noise white --snr 0\n\n"
                               + EXIT_CODES)
    _add_config_args(pr, "data.max_duration_s=2.0 run.device=cuda")
    pr.add_argument("--checkpoint", required=True, help="trained model folder (e.g. runs/ed/final) or a base model")
    pr.add_argument("--audio", required=True, metavar="PATH",
                    help="an audio file, a folder of audio files, or a manifest (items bring their own questions)")
    pr.add_argument("--question", default=None, help="the question (required for files and folders)")
    pr.add_argument("--choices", nargs="+", default=None, help="the answer choices; omit for a free answer")
    pr.add_argument("--noise", default=None, metavar="TYPE", help="mix this noise type first (white, pink, babble, ...)")
    pr.add_argument("--snr", type=float, default=None, metavar="DB", help="SNR of the mix in dB (with --noise)")
    pr.add_argument("--out", default=None, metavar="FILE.jsonl", help="also write one JSON row per file here")
    pr.add_argument("--batch-size", type=int, default=None, help="clips per forward (default: eval.batch_size)")
    pr.add_argument("--path-map", action="append", metavar="OLD=NEW", help="rewrite audio path prefixes (repeatable)")
    pr.add_argument("--trust-remote-code", action="store_true",
                    help="allow a run folder whose config.yaml asks to run the model's own Python code "
                         "(model.trust_remote_code); refused without it")
    pr.set_defaults(func=cmd_predict)

    x = sub.add_parser("export", help="a push_to_hub-ready folder from a trained run: weights, card, config (no upload)",
                       description="Copies the final model, points a LoRA adapter at --base-model-id, ships earlier "
                                   "LoRA stages it was trained on top of, and writes the model card (README.md) with "
                                   "the evaluation table of --eval folders. Nothing is uploaded.",
                       epilog="then: huggingface_hub.upload_folder(folder_path=OUT, repo_id='you/name')")
    x.add_argument("source", help="a run folder (runs/ed) or its final model folder (runs/ed/final)")
    x.add_argument("--out", required=True, help="the folder to write (must be new or empty)")
    x.add_argument("--base-model-id", default=None, metavar="ID",
                   help="the base model as others will load it, e.g. Qwen/Qwen2-Audio-7B-Instruct "
                        "(default: model.path as given in the run's config)")
    x.add_argument("--eval", nargs="+", default=None, metavar="DIR",
                   help="`echodistill eval --out` folders whose metrics go into the card's table")
    x.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    x.add_argument("--trust-remote-code", action="store_true",
                   help="allow a run whose config.yaml asks for the model's own Python code (model.trust_remote_code)")
    x.set_defaults(func=cmd_export)

    r = sub.add_parser("report", help="compare evaluated runs: Markdown + HTML page (with clips to listen to), "
                                      "paired bootstrap differences, plots")
    r.add_argument("runs", nargs="+", help="eval output folders (each with metrics.json and predictions.jsonl)")
    r.add_argument("--out", required=True, help="folder for report.md, report.html, report.json and the plots")
    r.add_argument("--baseline", default=None, help="name of the run the others are compared against")
    r.set_defaults(func=cmd_report)

    d = sub.add_parser("demo", help="the whole pipeline on the embedded default, from nothing, with a report")
    d.add_argument("--preset", choices=["default", "full", "smoke"], default="default",
                   help="default: <= 20 min on 2 cores; full: longer, stronger; smoke: a minute, for tests")
    d.add_argument("--out", default="runs/demo", help="folder for every stage's output")
    d.add_argument("--seeds", type=int, nargs="+", default=None, help="training seeds (default per preset)")
    d.add_argument("--format", choices=["answer", "reasoning"], default="answer",
                   help="response format of every stage: answer (one choice) or reasoning (<think>what is heard"
                        "</think><answer>choice</answer>, with evidence metrics in the report)")
    d.set_defaults(func=cmd_demo)

    cs = sub.add_parser("config", help="show the resolved config").add_subparsers(
        dest="config_command", required=True, metavar="CONFIG_COMMAND")
    show = cs.add_parser("show", help="print defaults <- preset <- file <- overrides, resolved")
    _add_config_args(show, "train.variant=grpo")
    show.set_defaults(func=cmd_config_show)
    ls = cs.add_parser("list", help="the configs shipped with echodistill, by name (usable as -c NAME)")
    ls.set_defaults(func=cmd_config_list)
    cp = cs.add_parser("path", help="the file of a shipped config, e.g. for accelerate launch --config_file",
                       epilog="example: accelerate launch --config_file $(echodistill config path accelerate/ddp_cpu) "
                              "-m echodistill.cli train -c demo")
    cp.add_argument("name", help="a name from `echodistill config list` (e.g. demo, accelerate/ddp_gpu)")
    cp.set_defaults(func=cmd_config_path)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .progress import quiet_library_bars
    quiet_library_bars()  # our own bars only: transformers' shard bars would interleave with them
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"echodistill: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("echodistill: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
