"""Progress output: a bar on a terminal, plain lines per interval in a log, one bar at a time."""

from __future__ import annotations

import io

from echodistill.progress import LineProgress, progress, progress_mode


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_lines_in_a_log_bar_on_a_terminal(monkeypatch):
    monkeypatch.delenv("ECHODISTILL_PROGRESS", raising=False)
    assert progress_mode(io.StringIO()) == "lines" and progress_mode(_Tty()) == "bar"
    monkeypatch.setenv("ECHODISTILL_PROGRESS", "lines")
    assert progress_mode(_Tty()) == "lines"
    monkeypatch.setenv("ECHODISTILL_PROGRESS", "off")
    out = io.StringIO()
    with progress(10, "eval", "clip", stream=out) as bar:
        bar.update(10)
    assert out.getvalue() == ""


def test_line_progress_prints_plain_lines_per_interval():
    out = io.StringIO()
    bar = LineProgress(100, "train", "step", interval_s=0.0, stream=out)
    bar.update(10)
    bar.set_postfix(loss=0.123456, refresh=False)
    bar.update(40)
    bar.close()  # the last interval's line already said 50/100: nothing repeated
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "\r" not in out.getvalue() and "\x1b" not in out.getvalue()
    assert lines[0].startswith("train: 10/100 step (10%)") and "left" in lines[0]
    assert lines[-1].startswith("train: 50/100 step (50%)") and "loss=0.1235" in lines[-1]
    quiet = io.StringIO()
    slow = LineProgress(5, "x", interval_s=3600, stream=quiet)
    slow.update(1)
    assert quiet.getvalue() == ""  # nothing between intervals
    slow.close()
    assert quiet.getvalue().startswith("x: 1/5 it (20%)")


def test_library_bars_are_off_once_ours_start(monkeypatch):
    from transformers.utils import logging as hf_logging

    monkeypatch.setenv("ECHODISTILL_PROGRESS", "lines")
    hf_logging.enable_progress_bar()
    import echodistill.progress as p

    monkeypatch.setattr(p, "_quieted", False)
    progress(1, "x", stream=io.StringIO()).close()
    assert not hf_logging.is_progress_bar_enabled()  # transformers' shard bars cannot interleave with ours
