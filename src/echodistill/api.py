"""The Python API: the few calls a user needs, each a thin layer over what the CLI runs.

(``Trainer(cfg).train()`` rather than a ``train`` function: ``echodistill.train`` is the training
subpackage, and importing it would shadow a function of that name at the package top.)

::

    import echodistill as ed

    cfg = ed.make_config("demo", train={"variant": "grpo", "max_steps": 20})  # configs/demo.yaml, by name
    final = ed.Trainer(cfg).train()            # <run.output_dir>/final, with a model card
    ed.evaluate(cfg, checkpoint=final, out_dir="runs/eval/grpo")
    model = ed.load_model(final)
    model.predict("clip.wav", "Which word is spoken?", ["yes", "no"])

``make_config`` takes a YAML path and/or dicts (nested ``{"train": {"max_steps": 2}}`` or dotted
``{"train.max_steps": 2}``) and keyword groups; everything goes through ``config.load_config``, so the
same defaults, variant presets, type checks and range checks apply as on the command line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from .config import ConfigError, load_config


def _flatten(d: Mapping, prefix: str = "") -> dict[str, Any]:
    """``{"train": {"max_steps": 2}, "run.seed": 1}`` -> ``{"train.max_steps": 2, "run.seed": 1}``.

    Dict values of dict-typed keys (``train.reward_weights``, ``data.path_map``, ...) are kept whole
    when their key names such a field, so ``{"train": {"reward_weights": {"accuracy": 1}}}`` replaces it.
    """
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and key.count(".") == 0:  # a config group: recurse one level
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _override(key: str, value: Any) -> str:
    """One ``key=value`` override; JSON is valid in OmegaConf's value grammar (lists, dicts, null)."""
    if hasattr(value, "__fspath__"):
        value = str(value)
    try:
        return f"{key}={json.dumps(value)}"
    except TypeError:
        raise ConfigError(f"{key}: value {value!r} of type {type(value).__name__} cannot go in a config "
                          "(use numbers, strings, booleans, lists or dicts)") from None


def make_config(source: Optional[str | Path | Mapping] = None, overrides: Optional[Mapping | Sequence[str]] = None,
                **groups: Any) -> Any:
    """A validated config: defaults <- variant preset <- ``source`` <- ``overrides`` <- ``groups``.

    ``source``: a YAML file path, or a dict (nested or dotted keys). ``overrides``: a dict, or CLI-style
    strings ``["train.max_steps=2"]``. ``groups``: keyword groups, ``run={"output_dir": "runs/x"}``, or
    dotted keys spelled with ``__`` (``train__max_steps=2``). Returns an OmegaConf ``DictConfig``.
    """
    path = None
    items: list[str] = []
    if isinstance(source, Mapping):
        items += [_override(k, v) for k, v in _flatten(source).items()]
    elif source is not None:
        path = source
    if isinstance(overrides, Mapping):
        items += [_override(k, v) for k, v in _flatten(overrides).items()]
    elif overrides is not None:
        items += [str(o) for o in overrides]
    return load_config(path, items + _group_items(groups))


def _group_items(groups: Mapping[str, Any]) -> list[str]:
    """Keyword groups (``run={...}``, ``train__max_steps=2``) -> override strings."""
    items = []
    for name, value in groups.items():
        name = name.replace("__", ".")
        if isinstance(value, Mapping) and "." not in name:
            items += [_override(k, v) for k, v in _flatten(value, name + ".").items()]
        else:
            items.append(_override(name, value))
    return items


def _is_source(config: Any) -> bool:
    """A YAML path or a plain dict (to build a config from), not an already built config."""
    from omegaconf import OmegaConf

    return isinstance(config, (str, Path)) or (isinstance(config, Mapping) and not OmegaConf.is_config(config))


def _as_config(config: Any) -> Any:
    return make_config(config) if config is None or _is_source(config) else config


class _python_spelling:
    """Re-word the CLI's flag in a user error for a Python caller: ``--resume`` is ``resume=True`` here."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, err, tb) -> bool:
        from .errors import UserError

        if isinstance(err, UserError) and "--resume" in str(err):
            raise type(err)(str(err).replace("pass --resume", "pass resume=True")
                            .replace("--resume", "resume=True")) from None
        return False


class Trainer:
    """TRL-style entry point: ``Trainer(cfg).train()`` runs ``echodistill train`` on ``cfg``.

    ``config``: a config (``make_config``), a YAML path or a dict. ``train()`` returns
    ``<run.output_dir>/final`` (with its model card); ``warmup()`` runs the supervised warm-up
    (``warmup.noisy=true``: the sft-noisy baseline) instead; ``evaluate()`` evaluates a checkpoint
    (default: the last ``train()``/``warmup()`` result) under the same config.
    """

    def __init__(self, config: Any = None):
        from .progress import quiet_library_bars

        quiet_library_bars()  # our progress lines only, as on the command line
        self.config = _as_config(config)
        self.final: Optional[Path] = None

    def train(self, resume: bool = False) -> Path:
        """GRPO on ``config``; ``resume=True`` continues a stopped run in ``run.output_dir`` from its
        newest checkpoint (the CLI's ``--resume``); without it a folder holding checkpoints is refused."""
        from .train.trainer import run_train

        with _python_spelling():
            self.final = Path(run_train(self.config, resume=resume))
        return self.final

    def warmup(self, resume: bool = False) -> Path:
        """The supervised warm-up (``warmup.noisy=true``: sft-noisy); ``resume`` as in ``train``."""
        from .train.sft import run_warmup

        with _python_spelling():
            run_warmup(self.config, resume=resume)
        self.final = Path(self.config.run.output_dir) / "final"
        return self.final

    def evaluate(self, checkpoint: Optional[str | Path] = None, **kw: Any) -> dict:
        return evaluate(self.config, checkpoint=checkpoint or self.final, **kw)


def evaluate(config: Any = None, checkpoint: Optional[str | Path] = None, manifest: Optional[str | Path] = None,
             out_dir: str | Path = "runs/eval", method: str = "model", name: Optional[str] = None, *,
             trust_remote_code: bool = False) -> dict:
    """Greedy evaluation (clean, noise types x SNR, silent); returns metrics.json's content.
    ``trust_remote_code``: as ``load_model``'s (a saved run config asking for model code is refused without it)."""
    from .eval.evaluate import run_eval
    from .run_config import config_for_checkpoint

    # no config: the checkpoint's own run config, as `echodistill eval --checkpoint` (run_config.py)
    cfg = config_for_checkpoint(checkpoint, trust_remote_code=trust_remote_code) if config is None else _as_config(config)
    return run_eval(cfg, checkpoint=checkpoint, manifest=manifest, out_dir=Path(out_dir),
                    method=method, name=name)


class TrainedModel:
    """A loaded model (any checkpoint or base model folder) with the config it predicts under.

    ``adapter``: the ``AudioLLM`` (see models/base.py); ``config``: the resolved config.
    """

    def __init__(self, adapter: Any, config: Any):
        self.adapter, self.config = adapter, config

    def predict(self, audio: str | Path, question: Optional[str] = None, choices: Optional[Sequence[str]] = None,
                *, noise: Optional[str] = None, snr: Optional[float] = None,
                batch_size: Optional[int] = None) -> list[dict]:
        """Answer per file of ``audio`` (a file, a folder or a manifest): rows as ``echodistill predict``."""
        from .inference import gather_queries, predict_queries

        queries = gather_queries(audio, question, choices, path_map=dict(self.config.data.path_map) or None,
                                 columns=dict(self.config.data.columns) or None)
        return predict_queries(self.adapter, queries, self.config, noise_type=noise, snr=snr, batch_size=batch_size)


def load_model(checkpoint: str | Path, config: Any = None, *, trust_remote_code: bool = False,
               **groups: Any) -> TrainedModel:
    """Load a trained folder (``.../final``) or a base model folder for prediction (frozen, eval mode).

    ``config``: a config, a YAML path or a dict; by default the run's ``config.yaml`` beside the
    checkpoint (the training window and seeds), else the defaults. ``groups`` as in ``make_config``.
    ``trust_remote_code=True``: allow a saved config that asks to run the model folder's own Python
    code (refused otherwise: a run folder is data).
    """
    import torch

    from .models import load_adapter
    from .progress import quiet_library_bars
    from .run_config import config_for_checkpoint

    quiet_library_bars()

    if config is None:
        cfg = config_for_checkpoint(checkpoint, overrides=_group_items(groups), trust_remote_code=trust_remote_code)
    elif _is_source(config):
        cfg = make_config(config, **groups)
    else:
        cfg = config
    if str(cfg.run.device) == "cpu":
        torch.set_num_threads(max(1, int(cfg.run.num_threads)))
    adapter = load_adapter(cfg.model, path=checkpoint, train=False)
    if str(cfg.run.device) in ("cuda", "auto") and torch.cuda.is_available():
        adapter.to("cuda")
    return TrainedModel(adapter, cfg)


def predict(checkpoint: str | Path | TrainedModel, audio: str | Path, question: Optional[str] = None,
            choices: Optional[Sequence[str]] = None, *, noise: Optional[str] = None, snr: Optional[float] = None,
            config: Any = None, trust_remote_code: bool = False) -> list[dict]:
    """One call: load ``checkpoint`` (or use a ``TrainedModel``) and answer per file of ``audio``."""
    model = checkpoint if isinstance(checkpoint, TrainedModel) else \
        load_model(checkpoint, config, trust_remote_code=trust_remote_code)
    return model.predict(audio, question, choices, noise=noise, snr=snr)


def report(runs: Sequence[str | Path], out_dir: str | Path, baseline: Optional[str] = None) -> Path:
    """Compare evaluated runs (``evaluate``'s out folders): Markdown, HTML page, plots in ``out_dir``."""
    from .eval.report import make_report

    make_report([Path(r) for r in runs], Path(out_dir), baseline=baseline)
    return Path(out_dir)


__all__ = ["make_config", "Trainer", "evaluate", "load_model", "predict", "report", "TrainedModel"]
