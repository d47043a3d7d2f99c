"""The YAML configs that ship with the package (``configs/``), found by name.

``-c demo`` / ``make_config("demo")`` / ``--config_file $(echodistill config path accelerate/ddp_gpu)``
work from any folder and after a plain ``pip install``: the wheel carries ``configs/`` as package
data (``echodistill/configs``, copied by setup.py's build step); a source checkout reads the
repository's own ``configs/``. A path that exists always wins over a name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from .errors import ConfigError

_REPO_CONFIGS = Path(__file__).resolve().parents[2] / "configs"  # a source checkout (editable install)


def configs_dir() -> Optional[Path]:
    """The folder of shipped configs: the installed package data, else the checkout's ``configs/``."""
    packaged = Path(__file__).resolve().parent / "configs"
    for d in (packaged, _REPO_CONFIGS):
        if d.is_dir():
            return d
    return None


def config_names() -> list[str]:
    """Every shipped config by name (``demo``, ``accelerate/ddp_gpu``, ``experiments/decisive``)."""
    root = configs_dir()
    if root is None:
        return []
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))


def resolve_config_path(name_or_path: str | Path) -> Path:
    """An existing file as is; else a shipped config by name (``demo``, ``demo.yaml``,
    ``configs/demo.yaml``, ``accelerate/ddp_gpu``); else a ConfigError listing the names."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    root = configs_dir()
    if root is not None:
        rel = Path(*path.parts[1:]) if path.parts[:1] == ("configs",) else path
        for cand in (root / rel, root / rel.with_suffix(".yaml")):
            if cand.is_file() and not path.is_absolute():
                return cand
    names = config_names()
    raise ConfigError(f"config file {name_or_path} does not exist; give a path, or the name of a config shipped "
                      f"with echodistill: {', '.join(names) if names else '(none installed)'}")


__all__ = ["configs_dir", "config_names", "resolve_config_path"]
