"""Model cards and `echodistill export`: what a trained folder is, what made it, how to get it again.

``write_model_card(final_dir, cfg, summary)`` writes ``final_dir/README.md`` (replacing PEFT's generic
one) when a run saves its final model: the base model *as the user named it* (``model.path`` as given,
not the absolute path the adapter config records), the variant and its teacher settings, a data
summary (items per task, noise types, SNR range), the training budget, the evaluation table when one
exists, and the command that reproduces the run. The card's YAML header is the Hub's metadata
(``base_model``, ``library_name``, ``tags``).

``export_model(run_or_final, out_dir, base_model_id=None, eval_dirs=())`` copies the final model into a
folder ready for ``huggingface_hub.upload_folder`` / ``push_to_hub`` (nothing is uploaded): the
weights/adapter and processor, the adapter's ``base_model_name_or_path`` set to the given id (a Hub id
rather than a local path), earlier LoRA stages the adapter was trained on top of (``stages/``), the
resolved config, the evaluation metrics, and the card. Both cards record the weights' sha256 and
the code version (``provenance``).
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Optional, Sequence

from .errors import UserError

CARD = "README.md"
CONFIG_COPY = "echodistill_config.yaml"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")  # what a LoRA stage ships
TABLE_KEYS = ("Acc", "Noisy", "StrongNoisy", "GSR", "Consistency", "NoAudio", "Invalid")


def _get(cfg: Any, key: str, default: Any = None) -> Any:
    from omegaconf import OmegaConf

    v = OmegaConf.select(cfg, key, default=default) if OmegaConf.is_config(cfg) else default
    return default if v is None else v


def _pct(fig: Any) -> str:
    if not isinstance(fig, dict) or fig.get("value") is None:
        return "n/a"
    lo, hi = fig.get("ci_low"), fig.get("ci_high")
    ci = f" [{100 * lo:.1f}, {100 * hi:.1f}]" if lo is not None and hi is not None else ""
    return f"{100 * fig['value']:.1f}{ci}"


def data_summary(cfg: Any) -> list[str]:
    """Markdown bullet lines: the training and validation data and the noise the run trained under."""
    from .data.manifest import read_manifest

    lines = []
    for label, key in (("train", "data.train_manifest"), ("val", "data.val_manifest")):
        path = _get(cfg, key)
        if not path:
            continue
        try:
            items = read_manifest(path, path_map=dict(_get(cfg, "data.path_map", {})) or None,
                                  columns=dict(_get(cfg, "data.columns", {})) or None)
            tasks = Counter(it.task for it in items)
            per_task = ", ".join(f"{t} {n}" for t, n in sorted(tasks.items()))
            lines.append(f"- {label}: `{path}`, {len(items)} items ({per_task})")
        except Exception as e:  # the card must not fail a finished run: say what is unknown
            lines.append(f"- {label}: `{path}` (not readable when the card was written: {type(e).__name__})")
    frac = _get(cfg, "data.labeled_fraction", 1.0)
    if frac < 1:
        lines.append(f"- labels: {frac:.0%} of the training items labeled (data.labeled_fraction)")
    lines.append(f"- noise: {', '.join(map(str, _get(cfg, 'noise.train_types', [])))}, SNR uniform in "
                 f"[{_get(cfg, 'noise.train_snr_min')}, {_get(cfg, 'noise.train_snr_max')}] dB, mixed online "
                 f"per item and step; clips cropped to {_get(cfg, 'data.max_duration_s')} s")
    return lines


def eval_table(eval_dirs: Sequence[str | Path]) -> list[str]:
    """A Markdown table from ``metrics.json`` of evaluation folders (percent, bootstrap 95 % CI)."""
    rows = []
    for d in eval_dirs:
        p = Path(d) / "metrics.json"
        if not p.is_file():
            raise UserError(f"{d}: no metrics.json (an `echodistill eval --out` folder is expected)")
        meta = json.loads(p.read_text(encoding="utf-8"))
        m = meta.get("metrics", {})
        rows.append(f"| {meta.get('name', Path(d).name)} | {meta.get('split') or '-'} | "
                    f"{meta.get('n_items', '?')} | " + " | ".join(_pct(m.get(k)) for k in TABLE_KEYS) + " |")
    if not rows:
        return []
    return ["| Eval | Split | Items | " + " | ".join(TABLE_KEYS) + " |",
            "|---|---|---|" + "---|" * len(TABLE_KEYS), *rows, "",
            "Percent with bootstrap 95 % intervals over items. Noisy: mean over noise types x SNR levels; "
            "StrongNoisy: SNR <= 0 dB; GSR: correct on the noisy and on the clean clip; NoAudio: silent input."]


def _variant_lines(cfg: Any, mode: str) -> list[str]:
    from .config import VARIANT_ALIASES, VARIANTS, variant_named

    if mode == "warmup":
        noisy = bool(_get(cfg, "warmup.noisy", False))
        return [f"- stage: supervised warm-up{' on noisy mixes (the `sft-noisy` baseline)' if noisy else ''}"]
    variant = _get(cfg, "train.variant", "?")
    known = variant in VARIANTS or variant in VARIANT_ALIASES
    lines = [f"- variant: `{variant}`: {variant_named(variant).summary if known else 'unknown variant'}"]
    # what the run actually used (the variant's signals and any key the user changed)
    signals = _get(cfg, "signals", {})
    active = [f"`{name}` x{float(s.weight):g}" + "".join(f", {k}={v}" for k, v in s.items() if k != "weight")
              for name, s in signals.items() if float(s.weight) != 0] if signals else []
    lines.append(f"- teacher signals: {'; '.join(active) if active else 'none (no clean-audio teacher)'}")
    funcs = list(_get(cfg, "train.reward_funcs", []))
    weights = dict(_get(cfg, "train.reward_weights", {}))
    lines.append(f"- rewards: {', '.join(f'{k} x{v}' for k, v in weights.items())}"
                 + (f"; plug-ins {', '.join(f'`{f}`' for f in funcs)}" if funcs else ""))
    return lines


def _budget_lines(cfg: Any, mode: str, summary: Optional[dict]) -> list[str]:
    s = summary or {}
    if mode == "warmup":
        lr, steps = _get(cfg, "warmup.learning_rate"), _get(cfg, "warmup.max_steps")
        batch = f"{_get(cfg, 'warmup.prompts_per_device', _get(cfg, 'warmup.batch_size', '?'))} items per step"
    else:
        lr, steps = _get(cfg, "train.learning_rate"), _get(cfg, "train.max_steps")
        batch = (f"{_get(cfg, 'train.prompts_per_device', _get(cfg, 'train.per_device_batch_size', '?'))} items x "
                 f"{_get(cfg, 'train.num_generations')} samples per micro-batch, "
                 f"{_get(cfg, 'train.gradient_accumulation_steps', 1)} micro-batch(es) per step")
    done = f"{s['steps']} of {steps} steps" if "steps" in s else f"{steps} steps"
    wall = f", {s['wall_s'] / 60:.1f} min wall clock" if "wall_s" in s else ""
    lora = "LoRA" if _get(cfg, "model.lora.enabled") else "full weights (audio encoder frozen)" \
        if _get(cfg, "model.freeze_audio_encoder", True) else "full weights"
    return [f"- {done}{wall}; {batch}; learning rate {lr}; {lora}; seed {_get(cfg, 'run.seed')}"]


def render_card(cfg: Any, *, mode: str = "train", summary: Optional[dict] = None, base_model: Optional[str] = None,
                eval_dirs: Sequence[str | Path] = (), lora: bool = False, config_ref: str = "config.yaml",
                provenance: Optional[dict] = None) -> str:
    """The card's Markdown (with the Hub's YAML header). ``config_ref``: where the resolved config lies,
    relative to the card (the reproduce command names it); ``provenance``: ``card_provenance(...)``."""
    base = _public(base_model or str(_get(cfg, "model.path", "")))  # an ${oc.env:...} value: its interpolation
    init = _public(str(_get(cfg, f"{'warmup' if mode == 'warmup' else 'train'}.init_from", "") or ""))
    variant = "warmup" if mode == "warmup" else str(_get(cfg, "train.variant", ""))
    tags = ["echodistill", "audio", "audio-question-answering", "noise-robustness",
            "grpo" if mode != "warmup" else "sft", variant]
    head = ["---", f"base_model: {json.dumps(base)}", f"library_name: {'peft' if lora else 'transformers'}",
            "tags:", *[f"- {t}" for t in dict.fromkeys(tags) if t], "---", ""]
    body = [f"# {Path(str(_get(cfg, 'run.output_dir', 'model'))).name} ({variant})", "",
            "An audio LLM post-trained with EchoDistill (GRPO with a clean-audio teacher) for robustness to noisy audio: "
            "it answers questions about a clip by naming one of the offered choices.", "",
            "## Model", f"- base model: `{base}` (backbone `{_get(cfg, 'model.backbone')}`, {_get(cfg, 'model.dtype')})"]
    if init:
        body.append(f"- started from: `{init}` (the run's initial model and, for GRPO variants, its clean-audio teacher)")
    if provenance:
        body.append(f"- weights sha256 `{provenance['weights_sha256']}` (every weight file it loads), code version "
                    f"`{provenance['code_version']}`")
    body += _variant_lines(cfg, mode)
    body += ["", "## Data", *data_summary(cfg), "", "## Training budget", *_budget_lines(cfg, mode, summary), ""]
    fe = (summary or {}).get("final_eval") or {}
    val = {k: v for k, v in fe.items() if isinstance(v, (int, float)) and k.startswith("val_")}
    table = eval_table(eval_dirs)
    body.append("## Evaluation")
    if table:
        body += table
    if val:
        body.append("Validation at the last step (greedy, during training): "
                    + ", ".join(f"{k} {v:.3f}" for k, v in sorted(val.items())))
    if not table and not val:
        body.append("No evaluation yet: `echodistill eval --checkpoint <this folder> --out <dir>`, then "
                    "`echodistill export ... --eval <dir>` puts the table here.")
    cmd = "warmup" if mode == "warmup" else "train"
    body += ["", "## Reproduce", "```bash",
             f"echodistill {cmd} -c {config_ref} run.output_dir=<new folder>"
             + ("   # needs the starting checkpoint above" if init else ""), "```",
             f"`{config_ref}` is the resolved config of this run (every hyperparameter).", "",
             "## Use", "```bash",
             "echodistill predict --checkpoint <this folder> --audio clip.wav --question \"...\" --choices a b c",
             "```", ""]
    return _public("\n".join(head + body))  # a secret inside model.path or a data path: masked


def card_provenance(final_dir: Path, base_path: Optional[str]) -> dict:
    """What the card records about where the weights came from (as the results store does); ``base_path``:
    a LoRA adapter's base model (``model.path``)."""
    from .provenance import code_version, weights_sha256
    return {"weights_sha256": weights_sha256(final_dir, base_path or None), "code_version": code_version()}


def summary_from_metrics(run_dir: Path) -> dict:
    """Steps done and the last validation figures from ``metrics.jsonl`` (runs without summary.json)."""
    path = run_dir / "metrics.jsonl"
    out: dict = {}
    if not path.is_file():
        return out
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row.get("step"), int):
            out["steps"] = max(out.get("steps", 0), row["step"])
        val = {k: v for k, v in row.items() if k.startswith("val_")}
        if val:
            out["final_eval"] = val
    return out


def _mode(name: Optional[str]) -> str:
    """``train`` or ``warmup`` from a summary's mode (``warmup``, ``sft-noisy``, ``train``)."""
    return "warmup" if name in ("warmup", "sft-noisy") else "train"


def named_base(cfg: Any, mode: str = "train") -> Optional[str]:
    """The model a LoRA adapter of this run goes on, as the user named it.

    A run that starts from a full-weight checkpoint (``train.init_from`` / ``warmup.init_from``: e.g. a
    LoRA trained on a full-weight warm-up) adapts *that* model, not ``model.path``: loaded on the raw
    ``model.path`` the adapter would answer garbage. A start that is itself an adapter is folded in
    (``merged_adapters``, shipped by ``export``) and the base is that adapter's own base."""
    init = str(_get(cfg, f"{'warmup' if mode == 'warmup' else 'train'}.init_from", "") or "")
    if init and Path(init).is_dir():
        adapter_cfg = Path(init) / "adapter_config.json"
        if adapter_cfg.is_file():
            try:
                return json.loads(adapter_cfg.read_text()).get("base_model_name_or_path") or \
                    (str(_get(cfg, "model.path", "")) or None)
            except (OSError, json.JSONDecodeError):
                pass
        elif (Path(init) / "config.json").is_file():
            return init
    return str(_get(cfg, "model.path", "")) or None


def write_model_card(final_dir: str | Path, cfg: Any, summary: Optional[dict] = None, mode: Optional[str] = None) -> Path:
    """``final_dir/README.md`` for a run's final model (its config.yaml is one folder up).

    A LoRA adapter's ``base_model_name_or_path`` is set to the model it was trained on, as the user named
    it (``named_base``: ``model.path``, or a full-weight ``init_from``), like the card (loading uses the
    absolute path ``echodistill_model.json`` records, then that name)."""
    final_dir = Path(final_dir)
    summary = summary or summary_from_metrics(final_dir.parent)
    mode = _mode(mode or summary.get("mode"))
    base = named_base(cfg, mode)
    _set_base(final_dir / "adapter_config.json", base)
    _mask_meta(final_dir)
    lora = (final_dir / "adapter_config.json").is_file()
    text = render_card(cfg, mode=mode, summary=summary, base_model=base, lora=lora, config_ref="../config.yaml",
                       provenance=card_provenance(final_dir, str(_get(cfg, "model.path", ""))))
    (final_dir / CARD).write_text(text, encoding="utf-8")
    return final_dir / CARD


def _final_and_run(path: Path) -> tuple[Path, Path]:
    """(final model folder, run folder) from either."""
    if (path / "final").is_dir():
        return path / "final", path
    if (path / "config.json").is_file() or (path / "adapter_config.json").is_file():
        return path, path.parent
    raise UserError(f"{path}: neither a run folder (with final/) nor a model folder (config.json or "
                    "adapter_config.json); pass e.g. runs/ed or runs/ed/final")


def export_model(source: str | Path, out_dir: str | Path, base_model_id: Optional[str] = None,
                 eval_dirs: Sequence[str | Path] = (), overwrite: bool = False, trust_remote_code: bool = False) -> Path:
    """A push_to_hub-ready folder from a run's final model (nothing is uploaded); returns ``out_dir``."""
    from .config import load_config, save_config
    from .models.base import META_FILE

    final, run = _final_and_run(Path(source))
    cfg_path = run / "config.yaml"
    if not cfg_path.is_file():
        raise UserError(f"{run}: no config.yaml (the run's resolved config); export a folder made by "
                        "`echodistill train` or `echodistill warmup`")
    cfg = load_config(cfg_path, saved=True, trust_remote_code=trust_remote_code)  # data: runs no code
    out = Path(out_dir)
    _check_out_folder(out, [run, final, *map(Path, eval_dirs)])
    not_empty = out.exists() and any(out.iterdir())
    if not_empty and not overwrite:
        raise UserError(f"{out} is not empty; choose a new --out folder or pass --overwrite")
    summary_path = run / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else summary_from_metrics(run)
    mode = _mode((summary or {}).get("mode"))
    meta_path = final / META_FILE
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    if base_model_id:  # a published card must not call a 50 M-parameter model a 7B one
        weights = final if not (final / "adapter_config.json").is_file() else Path(meta.get("base_path") or "")
        why = base_mismatch(weights, base_model_id) if weights.is_dir() else None
        if why:
            raise UserError(f"--base-model-id {base_model_id}: {why}; pass the id of the model this run was "
                            f"trained from ({named_base(cfg, mode)}), or leave --base-model-id out")
    stage_dirs = [_stage_folder(final, s) for s in meta.get("merged_adapters", [])]
    _check_out_folder(out, stage_dirs)
    if not_empty:
        shutil.rmtree(out)
    shutil.copytree(final, out, ignore=_unowned(final, "*.pt", "trainer_state*", "*.tmp"))
    base = base_model_id or named_base(cfg, mode)
    meta_path = out / META_FILE
    stages = []
    for i, stage in enumerate(stage_dirs):  # earlier LoRA stages: ship their adapter files along
        dst = out / "stages" / str(i)
        dst.mkdir(parents=True)
        for name in ADAPTER_FILES:
            shutil.copy2(stage / name, dst / name)
        _set_base(dst / "adapter_config.json", base)
        stages.append(f"stages/{i}")
    if meta:
        meta.update(base_path=_public(base), merged_adapters=stages)
        meta_path.write_text(json.dumps(meta, indent=2))
    lora = _set_base(out / "adapter_config.json", base)
    save_config(cfg, out / CONFIG_COPY)
    for i, d in enumerate(eval_dirs):
        shutil.copy2(Path(d) / "metrics.json", out / f"eval_{i}_{Path(d).name}_metrics.json")
    provenance = card_provenance(final, str(cfg.model.path))
    (out / CARD).write_text(render_card(cfg, mode=mode, summary=summary, base_model=base, eval_dirs=eval_dirs,
                                        lora=lora, config_ref=CONFIG_COPY, provenance=provenance), encoding="utf-8")
    print(f"export: wrote {out} (base model {_public(base)}); upload with huggingface_hub.upload_folder(folder_path="
          f"'{out}', repo_id=...) -- nothing was uploaded")
    return out


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies under it (both resolved: links and .. followed)."""
    return path.resolve().is_relative_to(folder.resolve())


def _check_out_folder(out: Path, sources: Sequence[Path]) -> None:
    """Export writes (and with --overwrite first deletes) ``out``: it must neither hold nor lie inside
    anything export reads from."""
    for src in sources:
        if _inside(src, out) or _inside(out, src):
            raise UserError(f"--out {out} {'holds' if _inside(src, out) else 'lies inside'} {src}, which export "
                            "reads from; choose an --out folder outside the run (e.g. exports/<name>)")


def _stage_folder(final: Path, stage: str) -> Path:
    """An earlier LoRA stage named in ``echodistill_model.json``: a relative name must stay inside the
    model folder, and any stage must be a PEFT adapter folder (only its adapter files are shipped)."""
    path = final / stage  # an absolute stage (the warm-up run's adapter) replaces final
    if not Path(stage).is_absolute() and not _inside(path, final):
        raise UserError(f"{final / 'echodistill_model.json'}: merged_adapters entry {stage!r} leaves the model "
                        "folder; refusing to export it")
    missing = [n for n in ADAPTER_FILES if not (path / n).is_file()]
    if missing:
        raise UserError(f"{final / 'echodistill_model.json'}: merged_adapters entry {stage} is not a LoRA adapter "
                        f"folder (no {', '.join(missing)}); restore that stage or retrain from the base model")
    return path


def _unowned(folder: Path, *patterns: str):
    """copytree ``ignore``: the patterns, plus links that point outside ``folder`` (never copied along)."""
    base = shutil.ignore_patterns(*patterns)

    def ignore(src: str, names: list[str]) -> set[str]:
        skip = set(base(src, names))
        for n in names:
            p = Path(src) / n
            if p.is_symlink() and not _inside(p, folder):
                print(f"export: skipped {p}: a link to {p.resolve()} outside the model folder", file=sys.stderr)
                skip.add(n)
        return skip
    return ignore


def _public(text: str) -> str:
    """``text`` with every value that came from ``${oc.env:...}`` masked (config.to_dict's rule)."""
    from .config import _mask
    return _mask(text)


def _mask_meta(folder: Path) -> None:
    """Mask secrets in a saved model's ``echodistill_model.json`` (base path, merged stages),
    ``adapter_config.json`` (base model) and README.md: loading then falls back to ``model.path``, which re-resolves the
    secret from the environment."""
    from .config import _mask
    from .models.base import META_FILE

    for path in (folder / META_FILE, folder / "adapter_config.json"):
        if path.is_file():
            data = json.loads(path.read_text())
            public = _mask(data)  # every string, at any depth
            if public != data:
                path.write_text(json.dumps(public, indent=2))
    card = folder / CARD  # PEFT's generic card names the base path too
    if card.is_file() and _mask(text := card.read_text(encoding="utf-8")) != text:
        card.write_text(_mask(text), encoding="utf-8")


def _set_base(adapter_config: Path, base: Optional[str]) -> bool:
    """Point a PEFT adapter config at ``base``; False when there is no adapter config."""
    if not adapter_config.is_file():
        return False
    if not base:
        return True
    d = json.loads(adapter_config.read_text())
    d["base_model_name_or_path"] = _public(base)
    adapter_config.write_text(json.dumps(d, indent=2))
    return True




# ------------------------------------------------------------------ export: is --base-model-id this model?
# Architecture fields compared between the model and the named base (top level and nested sub-configs).
_ARCH_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
              "intermediate_size", "vocab_size", "d_model", "encoder_layers", "num_mel_bins")
_SIZE_RE = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)\s*([bBmM])(?![a-zA-Z])")
_FAMILIES = {"qwen2-audio": ("qwen2_audio",), "qwen2.5-omni": ("qwen2_5_omni",), "qwen3-omni": ("qwen3_omni",)}


def _arch(cfg: dict, prefix: str = "") -> dict:
    """{dotted key: value} of the architecture fields, through nested sub-configs (text_config, ...)."""
    out = {}
    for k, v in cfg.items():
        if isinstance(v, dict) and (k.endswith("_config") or k == "thinker_config"):
            out.update(_arch(v, f"{prefix}{k}."))
        elif k in _ARCH_KEYS:
            out[prefix + k] = v
    return out


def _config_json(folder: Path) -> Optional[dict]:
    try:
        return json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _cached_hub_config(repo_id: str) -> Optional[dict]:
    """config.json of a Hub model from the local Hugging Face cache (offline; nothing is downloaded)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # an id the Hub library refuses, a broken cache: nothing to compare with
        return None
    return json.loads(Path(hit).read_text()) if isinstance(hit, str) and Path(hit).is_file() else None


def count_parameters(folder: Path) -> Optional[int]:
    """Parameters stored in a model folder's safetensors files (headers only; nothing is loaded)."""
    total, found = 0, False
    for f in sorted(folder.glob("*.safetensors")):
        try:
            with open(f, "rb") as fh:
                header = json.loads(fh.read(int.from_bytes(fh.read(8), "little")))
        except (OSError, ValueError):
            return None
        for name, t in header.items():
            if name != "__metadata__":
                n = 1
                for d in t.get("shape", []):
                    n *= int(d)
                total += n
                found = True
    return total if found else None


def base_mismatch(base_dir: Path, base_model_id: str) -> Optional[str]:
    """Why ``base_model_id`` cannot be the model in ``base_dir`` (None when it matches or cannot be checked).

    Compared with the named model's config.json (a local folder, or the Hub cache), else with what the id
    says: its family (Qwen2-Audio, Qwen2.5-Omni, ...) and its size (``7B``) against the stored parameters.
    """
    mine = _config_json(base_dir)
    if mine is None:
        return None
    theirs = _config_json(Path(base_model_id)) if Path(base_model_id).is_dir() else _cached_hub_config(base_model_id)
    if theirs is not None:
        a, b = _arch(mine), _arch(theirs)
        diff = [f"{k} {a[k]} vs {b[k]}" for k in sorted(set(a) & set(b)) if a[k] != b[k]]
        return f"its config differs from {base_model_id}'s ({'; '.join(diff[:4])})" if diff else None
    name = base_model_id.lower()
    model_type = str(mine.get("model_type", ""))
    for family, types in _FAMILIES.items():
        if family in name and not model_type.startswith(types):
            return f"{base_model_id} names a {family} model, this one is model_type {model_type!r}"
    m = _SIZE_RE.search(base_model_id.split("/")[-1])
    params = count_parameters(base_dir)
    if m and params:
        claimed = float(m.group(1)) * (1e9 if m.group(2).lower() == "b" else 1e6)
        if not 0.5 <= params / claimed <= 2.0:
            return (f"{base_model_id} names a {m.group(1)}{m.group(2).upper()}-parameter model, this one has "
                    f"{params / 1e6:.1f} M parameters")
    return None


__all__ = ["write_model_card", "render_card", "export_model", "eval_table", "data_summary", "named_base",
           "base_mismatch", "count_parameters"]
