"""Plug-in rewards: user functions with TRL's reward-function signature, named in the config.

``train.reward_funcs: ["my_rewards:short_answer", "path/to/file.py:no_hedging"]`` adds each function's
reward to the built-in ones::

    def short_answer(completions, **kwargs) -> list[float | None]:
        return [1.0 if len(c.split()) <= 2 else 0.0 for c in completions]

Called as in TRL's GRPOTrainer: ``fn(prompts=..., completions=..., completion_ids=..., **columns)`` with
one entry per completion (N = B*G, item-major: an item's fields repeated G times). Columns: ``id``,
``question``, ``choices`` (in the order shown), ``target`` (the label's text, None if unlabeled; also
passed as ``answer``, its old name, for plug-ins written before),
``task``, ``split``, ``audio`` (clean clip path), ``noise_type``, ``snr`` (dB of the noisy clip the
student heard), ``meta``. Return N floats; ``None`` = "does not apply to this completion" (counts 0,
as TRL's nansum does).

Weights come from ``train.reward_weights[<function name>]`` (default 1.0, TRL's default): weighted like
accuracy and format, the weighted reward is added to the task reward and the total; each is logged as
``reward_<function name>_mean/_std``. Any error inside a plug-in, or a malformed return (a value that is
not a finite number in [-1e6, 1e6] or None), stops the run with one line naming the plug-in and where it
failed.

Trust: a plug-in is code. Reading or validating a config never imports it (``check_reward_config``
finds the file and the function's definition without running anything); only ``echodistill train`` /
``run_train`` imports the plug-ins of the config it was given (``load_reward_plugins``).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import math
import sys
import traceback
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from ..errors import ConfigError

BUILTIN_REWARDS = ("accuracy", "format")
REWARD_LIMIT = 1e6  # |plug-in reward| above this is refused: its square (the group variance) must stay finite in float32


class PluginError(ConfigError):
    """A reward plug-in that cannot be loaded or misbehaved; the message names it."""


def _split_spec(spec: Any) -> tuple[str, str]:
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise PluginError(f"train.reward_funcs entry {spec!r} must look like module:function "
                          "(e.g. my_rewards:short_answer) or path/to/file.py:function")
    where, name = spec.split(":")
    return where, name


def _is_file_spec(where: str) -> bool:
    return where.endswith(".py") or "/" in where


def _search_path() -> list[str]:
    """sys.path plus the cwd, as `python -m` would see modules."""
    cwd = str(Path.cwd())
    return list(sys.path) + ([cwd] if "" not in sys.path and cwd not in sys.path else [])


def _module_source(where: str) -> Optional[Path]:
    """The source file of module ``where`` found on the search path without importing it or its parents
    (None: found, but not a plain .py file, e.g. an extension or namespace package). PluginError if absent."""
    from importlib.machinery import PathFinder

    search: Optional[list[str]] = _search_path()
    spec = None
    parts = where.split(".")
    for i in range(len(parts)):
        spec = PathFinder.find_spec(".".join(parts[: i + 1]), search)
        if spec is None:
            raise PluginError(f"module {where!r} not found on PYTHONPATH or in the current folder; "
                              "check the module name or give a file path (path/to/file.py:function)")
        search = list(spec.submodule_search_locations or [])
    origin = getattr(spec, "origin", None)
    return Path(origin) if origin and origin.endswith(".py") else None


def _defines(source: Path, name: str) -> bool:
    """Whether ``source`` binds ``name`` at module level (def, class, assignment or import), read as text."""
    try:
        tree = ast.parse(source.read_text(encoding="utf-8"), filename=str(source))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError) as e:
        raise PluginError(f"reward plug-in file {source} cannot be read as Python ({type(e).__name__}: {e})") from None
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            return True
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                return True
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            if any((a.asname or a.name.split(".")[0]) == name for a in node.names):
                return True
    return False


def check_reward_spec(spec: str) -> None:
    """The plug-in's file (or module) exists and defines the function -- found by reading, never imported."""
    where, name = _split_spec(spec)
    if _is_file_spec(where):
        source: Optional[Path] = Path(where).expanduser()
        if not source.is_file():
            raise PluginError(f"reward plug-in {spec}: file {source} not found; fix train.reward_funcs")
    else:
        try:
            source = _module_source(where)
        except PluginError as e:
            raise PluginError(f"reward plug-in {spec}: {e}") from None
    if source is not None and not _defines(source, name):
        raise PluginError(f"reward plug-in {spec}: {source} has no function {name!r}; fix train.reward_funcs")


@lru_cache(maxsize=None)
def load_reward_func(spec: str) -> Callable:
    """``"package.module:function"`` or ``"path/to/file.py:function"`` -> the function (imports it: runs
    the plug-in's module code; only training calls this)."""
    where, name = _split_spec(spec)
    try:
        if _is_file_spec(where):
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


def reward_names(reward_funcs: Sequence[str]) -> list[str]:
    """Every reward's name in order: the built-ins, then the plug-ins (TRL's list of weights follows it)."""
    return list(BUILTIN_REWARDS) + [plugin_name(str(spec)) for spec in reward_funcs]


def check_reward_config(reward_funcs: Sequence[str], reward_weights: dict, find: bool = True) -> None:
    """Config validation, running no code: every plug-in's file and function exist (read, not imported;
    ``find=False``: the form only), names are unique, every weight names a reward."""
    names = []
    for spec in reward_funcs:
        check_reward_spec(str(spec)) if find else _split_spec(spec)
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


def load_reward_plugins(cfg: Any) -> None:
    """Import every ``train.reward_funcs`` plug-in now (training start): an import-time error fails
    before the model loads. The only place plug-in code first runs."""
    for spec in cfg.train.get("reward_funcs") or []:
        load_reward_func(str(spec))


def item_columns(examples: Sequence[Any], num_generations: int) -> dict[str, list]:
    """Per-completion keyword columns (item fields + noise condition), each repeated G times."""
    cols: dict[str, list] = {k: [] for k in ("id", "question", "choices", "target", "answer", "task", "split",
                                             "audio", "noise_type", "snr", "meta")}
    for e in examples:
        it = e.item
        row = {"id": it.id, "question": it.question, "choices": list(e.choices), "target": it.target,
               "answer": it.target,  # the old name of target: plug-ins written before keep working
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
        if not math.isfinite(f) or abs(f) > REWARD_LIMIT:
            raise PluginError(f"reward plug-in {spec}: value {i} is {f}; return numbers in [-{REWARD_LIMIT:g}, "
                              f"{REWARD_LIMIT:g}] (None to skip): larger ones overflow the float32 advantages")
        values.append(f)
    return torch.tensor(values, dtype=torch.float32)


def add_plugin_rewards(r: Any, train: Any) -> None:
    """Compute every ``train.reward_funcs`` plug-in for rollout ``r`` (``train``: the config's train
    section); log each under its name and add ``weight * reward`` to ``r.rewards["task"]`` and
    ``r.rewards["total"]`` (what the advantages use)."""
    specs = [str(s) for s in (train.get("reward_funcs") or [])]
    if not specs:
        return
    G = int(train.num_generations)
    prompts = [e.prompt for e in r.examples for _ in range(G)]
    ids = [row[: int(m.sum())].tolist() for row, m in zip(r.ids.cpu(), r.mask.cpu())]
    columns = item_columns(r.examples, G)
    weights = dict(train.reward_weights)
    for spec in specs:
        name = plugin_name(spec)
        reward = call_reward_func(spec, prompts, list(r.texts), ids, columns)
        r.rewards[name] = reward
        w = float(weights.get(name, 1.0))
        for key in ("task", "total"):
            if key in r.rewards:
                r.rewards[key] = r.rewards[key] + w * reward.to(r.rewards[key].device)
                if not bool(r.rewards[key].isfinite().all()):  # a huge weight: refused before any loss sees it
                    raise PluginError(f"reward plug-in {spec}: weight {w:g} x its rewards overflows float32 in the "
                                      f"{key} reward; lower train.reward_weights.{name}")


__all__ = ["load_reward_func", "load_reward_plugins", "check_reward_spec", "plugin_name", "check_reward_config", "item_columns", "call_reward_func",
           "add_plugin_rewards", "PluginError", "BUILTIN_REWARDS"]
