"""Plug-in rewards: user functions with TRL's reward-function signature, named in the config.

``train.reward_funcs: ["my_rewards:short_answer", "path/to/file.py:no_hedging"]`` adds each function's
reward to the built-in ones::

    def short_answer(completions, **kwargs) -> list[float | None]:
        return [1.0 if len(c.split()) <= 2 else 0.0 for c in completions]

Called as in TRL's GRPOTrainer: ``fn(prompts=..., completions=..., completion_ids=..., **columns)`` with
one entry per completion (N = B*G, item-major: an item's fields repeated G times). Columns: ``id``,
``question``, ``choices`` (in the order shown), ``answer`` (the target text, None if unlabeled),
``task``, ``split``, ``audio`` (clean clip path), ``noise_type``, ``snr`` (dB of the noisy clip the
student heard), ``meta``. Return N floats; ``None`` = "does not apply to this completion" (counts 0,
as TRL's nansum does).

Weights come from ``train.reward_weights[<function name>]`` (default 1.0, TRL's default): weighted like
accuracy and format, the weighted reward is added to the task reward and the total; each is logged as
``reward_<function name>_mean/_std``. Any error inside a plug-in, or a malformed return, stops the run
with one line naming the plug-in and where it failed.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import sys
import traceback
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import ConfigError

BUILTIN_REWARDS = ("accuracy", "format")


class PluginError(ConfigError):
    """A reward plug-in that cannot be loaded or misbehaved; the message names it."""


@lru_cache(maxsize=None)
def load_reward_func(spec: str) -> Callable:
    """``"package.module:function"`` or ``"path/to/file.py:function"`` -> the function."""
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise PluginError(f"train.reward_funcs entry {spec!r} must look like module:function "
                          "(e.g. my_rewards:short_answer) or path/to/file.py:function")
    where, name = spec.split(":")
    try:
        if where.endswith(".py") or "/" in where:
            path = Path(where).expanduser()
            if not path.is_file():
                raise PluginError(f"reward plug-in {spec}: file {path} not found; fix train.reward_funcs")
            mod_spec = importlib.util.spec_from_file_location(f"echodistill_plugin_{path.stem}", path)
            module = importlib.util.module_from_spec(mod_spec)
            mod_spec.loader.exec_module(module)
        else:
            if "" not in sys.path and str(Path.cwd()) not in sys.path:  # as `python -m` would: the cwd
                sys.path.append(str(Path.cwd()))
            module = importlib.import_module(where)
    except PluginError:
        raise
    except Exception as e:  # ImportError, or the plug-in module's own import-time error
        raise PluginError(f"reward plug-in {spec}: cannot import {where} ({type(e).__name__}: {e}); "
                          "check the module is on PYTHONPATH or give a file path") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise PluginError(f"reward plug-in {spec}: {where} has no function {name!r}; fix train.reward_funcs")
    return fn


def plugin_name(spec: str) -> str:
    """The name a plug-in is weighted and logged under: its function name (as TRL logs it)."""
    return spec.rsplit(":", 1)[-1]


def check_reward_config(reward_funcs: Sequence[str], reward_weights: dict) -> None:
    """Config validation: every plug-in loads, names are unique, every weight names a reward."""
    names = []
    for spec in reward_funcs:
        load_reward_func(str(spec))
        name = plugin_name(str(spec))
        if name in BUILTIN_REWARDS or name in names:
            raise PluginError(f"reward plug-in {spec}: the name {name!r} is already taken (built-ins: "
                              f"{', '.join(BUILTIN_REWARDS)}); rename the function")
        names.append(name)
    known = list(BUILTIN_REWARDS) + names
    for key in reward_weights:
        if key not in known:
            raise PluginError(f"train.reward_weights has unknown reward {key!r}; known: {', '.join(known)} "
                              "(plug-ins are listed in train.reward_funcs as module:function)")


def item_columns(examples: Sequence[Any], num_generations: int) -> dict[str, list]:
    """Per-completion keyword columns (item fields + noise condition), each repeated G times."""
    cols: dict[str, list] = {k: [] for k in ("id", "question", "choices", "answer", "task", "split", "audio",
                                             "noise_type", "snr", "meta")}
    for e in examples:
        it = e.item
        row = {"id": it.id, "question": it.question, "choices": list(e.choices), "answer": it.target,
               "task": it.task, "split": it.split, "audio": it.audio, "noise_type": e.noise_type,
               "snr": float(e.snr), "meta": dict(it.meta or {})}
        for k, v in row.items():
            cols[k].extend([v] * num_generations)
    return cols


def _where(exc: BaseException) -> str:
    """``file:line`` of the innermost frame of the traceback (inside the plug-in, normally)."""
    tb = traceback.extract_tb(exc.__traceback__)
    return f" at {Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else ""


def call_reward_func(spec: str, prompts: list[str], completions: list[str], completion_ids: list[list[int]],
                     columns: dict[str, list]) -> Any:
    """Run one plug-in; float32 tensor [N] (None -> 0). Raises PluginError naming ``spec`` on any failure."""
    import torch  # here, not at the top: config validation imports this module

    fn = load_reward_func(spec)
    n = len(completions)
    try:
        out = fn(prompts=prompts, completions=completions, completion_ids=completion_ids, **columns)
    except Exception as e:
        raise PluginError(f"reward plug-in {spec} raised {type(e).__name__}{_where(e)}: {e}") from None
    if out is None or isinstance(out, (str, bytes)) or not hasattr(out, "__len__"):
        raise PluginError(f"reward plug-in {spec} returned {type(out).__name__}; it must return a list of "
                          f"{n} floats (None where it does not apply)")
    out = list(out.tolist() if hasattr(out, "tolist") else out)
    if len(out) != n:
        raise PluginError(f"reward plug-in {spec} returned {len(out)} values for {n} completions; "
                          "return one per completion")
    values = []
    for i, v in enumerate(out):
        if v is None:
            values.append(0.0)
            continue
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise PluginError(f"reward plug-in {spec}: value {i} is {v!r}, not a number or None") from None
        if not math.isfinite(f):
            raise PluginError(f"reward plug-in {spec}: value {i} is {f}; return finite numbers (None to skip)")
        values.append(f)
    return torch.tensor(values, dtype=torch.float32)


def add_plugin_rewards(r: Any, cfg: Any) -> None:
    """Compute every ``train.reward_funcs`` plug-in for rollout ``r``; log each under its name and add
    ``weight * reward`` to ``r.rewards["task"]`` and ``r.rewards["total"]`` (what the advantages use)."""
    specs = [str(s) for s in (cfg.train.get("reward_funcs") or [])]
    if not specs:
        return
    G = int(cfg.train.num_generations)
    prompts = [e.prompt for e in r.examples for _ in range(G)]
    ids = [row[: int(m.sum())].tolist() for row, m in zip(r.ids.cpu(), r.mask.cpu())]
    columns = item_columns(r.examples, G)
    weights = dict(cfg.train.reward_weights)
    for spec in specs:
        name = plugin_name(spec)
        reward = call_reward_func(spec, prompts, list(r.texts), ids, columns)
        r.rewards[name] = reward
        w = float(weights.get(name, 1.0))
        for key in ("task", "total"):
            if key in r.rewards:
                r.rewards[key] = r.rewards[key] + w * reward.to(r.rewards[key].device)


__all__ = ["load_reward_func", "plugin_name", "check_reward_config", "item_columns", "call_reward_func",
           "add_plugin_rewards", "PluginError", "BUILTIN_REWARDS"]
