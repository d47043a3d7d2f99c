"""Where a command finds its settings: one rule for every command that takes a trained checkpoint.

``eval``, ``predict``, ``report`` (through the evaluations it reads) and the Python API's
``load_model`` / ``evaluate`` resolve their config the same way:

1. ``--config FILE`` (``config=`` in Python) when given, then the overrides;
2. else the run's own saved ``config.yaml`` beside the checkpoint (``<run>/final`` ->
   ``<run>/config.yaml``, or ``<checkpoint>/config.yaml``): the same data folders, window, seeds and
   model as training, so ``eval --checkpoint runs/x/final`` needs no other flag; then the overrides;
3. else (a base model folder, nothing saved beside it) the defaults, then the overrides.

Configs are named by path or, for the configs installed with the package, by name (``-c demo``:
``config.resolve_config_path``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional, Sequence

RUN_CONFIG = "config.yaml"  # written beside every run by `train` / `warmup` (config.save_config)


def saved_run_config(checkpoint: Optional[str | Path]) -> Optional[Path]:
    """The run's ``config.yaml`` for a checkpoint folder, or None (a base model, a bare folder)."""
    if checkpoint is None:
        return None
    ck = Path(checkpoint)
    for cand in (ck / RUN_CONFIG, ck.parent / RUN_CONFIG):
        if cand.is_file():
            return cand
    return None


def config_for_checkpoint(checkpoint: Optional[str | Path], config: Optional[str | Path] = None,
                          overrides: Sequence[str] = (), *, command: Optional[str] = None,
                          trust_remote_code: bool = False) -> Any:
    """The resolved config a command uses with ``checkpoint`` (rule in the module docstring).

    ``command``: when given (the CLI's subcommand) and the settings come from the run's config.yaml,
    one line on stderr says so, before the work starts. A saved config asking for the model's own code
    is refused without ``trust_remote_code`` (a run folder is data: ``config.load_config``).
    """
    from .config import load_config

    saved = config is None and saved_run_config(checkpoint) is not None
    path = config if config is not None else saved_run_config(checkpoint)
    cfg = load_config(path, list(overrides), saved=saved, trust_remote_code=trust_remote_code)
    if command is not None and saved:  # the one case a user may not expect: say it (after the checks passed)
        print(f"{command}: settings from {path} (the checkpoint's run; -c FILE for others)"
              + (f" + {len(overrides)} override(s)" if overrides else ""), file=sys.stderr, flush=True)
    return cfg


__all__ = ["config_for_checkpoint", "saved_run_config", "RUN_CONFIG"]
