"""Progress output for long stages: one bar at a time on a terminal, plain lines in a log.

``progress(total, desc)`` returns a tqdm bar when stderr is a terminal, and otherwise a
``LineProgress`` that prints one plain line (``desc: 120/2100 clips (6%), 3.1 clips/s, ~11 min left``)
every ``interval_s`` seconds and once at the end: no carriage returns or escape codes in a log file,
and never silent for minutes under ``nohup`` or a scheduler.

``ECHODISTILL_PROGRESS`` chooses: ``bar`` (tqdm even without a terminal), ``lines`` (plain lines even
on a terminal), ``off``; unset = by terminal. ``ECHODISTILL_PROGRESS_INTERVAL`` sets the seconds
between plain lines (default 30).

Library bars (transformers' "Loading weights" / "Writing model shards", the Hub's downloads) are turned
off the first time one of ours starts, so two bars never interleave on one line.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Optional, TextIO

MODES = ("bar", "lines", "off")
DEFAULT_INTERVAL_S = 30.0
_quieted = False


def progress_mode(stream: Optional[TextIO] = None) -> str:
    """``bar``, ``lines`` or ``off``: the environment's choice, else ``bar`` on a terminal, ``lines`` otherwise."""
    mode = os.environ.get("ECHODISTILL_PROGRESS", "").strip().lower()
    if mode in MODES:
        return mode
    stream = stream or sys.stderr
    try:
        return "bar" if stream.isatty() else "lines"
    except (AttributeError, ValueError):  # a closed or odd stream: lines are always safe
        return "lines"


def quiet_library_bars() -> None:
    """Turn off transformers' and huggingface_hub's own progress bars (once per process)."""
    global _quieted
    if _quieted:
        return
    _quieted = True
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass
    try:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    except ImportError:  # pragma: no cover
        pass


class LineProgress:
    """tqdm's small interface (``update``, ``set_postfix``, ``close``, ``n``, context manager) as
    plain lines: one every ``interval_s`` seconds and one when closed."""

    def __init__(self, total: Optional[int], desc: str, unit: str = "it", initial: int = 0,
                 interval_s: Optional[float] = None, stream: Optional[TextIO] = None, disable: bool = False):
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.interval_s = float(interval_s if interval_s is not None
                                else os.environ.get("ECHODISTILL_PROGRESS_INTERVAL", DEFAULT_INTERVAL_S))
        self.stream = stream or sys.stderr
        self.disable = disable
        self.postfix: dict = {}
        self._start = self._last = time.monotonic()
        self._start_n = initial
        self._printed_n: Optional[int] = None
        self._closed = False

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= self.interval_s:
            self._last = now
            self._print()

    def set_postfix(self, refresh: bool = True, **kw: Any) -> None:
        self.postfix = kw

    def set_description(self, desc: str, refresh: bool = True) -> None:
        self.desc = desc

    def refresh(self) -> None:
        pass

    def write(self, msg: str) -> None:
        if not self.disable:
            print(msg, file=self.stream, flush=True)

    def line(self) -> str:
        """The current status as one line."""
        elapsed = time.monotonic() - self._start
        done = self.n - self._start_n
        rate = done / elapsed if elapsed > 0 and done > 0 else None
        head = f"{self.desc}: {self.n}" + (f"/{self.total}" if self.total else "") + f" {self.unit}"
        if self.total:
            head += f" ({100 * self.n / self.total:.0f}%)"
        parts = [head]
        if rate:
            parts.append(f"{rate:.3g} {self.unit}/s")
            if self.total and self.n < self.total:
                parts.append(f"~{_duration((self.total - self.n) / rate)} left")
        parts.append(f"{_duration(elapsed)} elapsed")
        if self.postfix:
            parts.append(" ".join(f"{k}={_short(v)}" for k, v in self.postfix.items()))
        return ", ".join(parts)

    def _print(self) -> None:
        if not self.disable:
            self._printed_n = self.n
            print(self.line(), file=self.stream, flush=True)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._printed_n != self.n:  # the last interval's line already said it
                self._print()


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _duration(s: float) -> str:
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def progress(total: Optional[int], desc: str, unit: str = "it", *, initial: int = 0, disable: bool = False,
             stream: Optional[TextIO] = None) -> Any:
    """A progress bar for ``total`` units: tqdm on a terminal, ``LineProgress`` otherwise (module doc)."""
    stream = stream or sys.stderr
    mode = progress_mode(stream)
    quiet_library_bars()
    if mode == "bar":
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit=unit, initial=initial, dynamic_ncols=True, file=stream,
                    disable=disable)
    return LineProgress(total, desc, unit, initial=initial, stream=stream, disable=disable or mode == "off")


__all__ = ["progress", "progress_mode", "LineProgress", "quiet_library_bars", "MODES"]
