"""CLI help: every option explained with its default, every variant listed, examples per command,
`--version`, and how to run under `accelerate launch`."""

from __future__ import annotations

import argparse

import pytest

from echodistill import __version__
from echodistill.cli import build_parser, main
from echodistill.config import VARIANTS


def _parsers(p: argparse.ArgumentParser, path=()):
    yield path, p
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, sp in a.choices.items():
                yield from _parsers(sp, path + (name,))


def _help(argv, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        main(argv + ["--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


def test_every_option_has_help():
    missing = [(" ".join(path), a.dest) for path, p in _parsers(build_parser()) for a in p._actions
               if not isinstance(a, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction))
               and not (a.help or "").strip()]
    assert not missing, f"options without help: {missing}"


def test_train_help_lists_every_variant_and_accelerate(capsys):
    text = _help(["train"], capsys)
    for name, preset in VARIANTS.items():
        assert f"  {name} " in text, name  # the epilog row of each variant, with its preset keys
    assert "accelerate launch --config_file configs/accelerate/" in text
    top = _help([], capsys)
    assert "accelerate launch" in top and all(name in top for name in VARIANTS)


def test_warmup_examples_use_warmup_keys_and_defaults_are_shown(capsys):
    text = " ".join(_help(["warmup"], capsys).split())  # argparse wraps lines
    assert "e.g. warmup.learning_rate=3e-3" in text and "train." not in text.split("examples:")[0]
    mix = " ".join(_help(["data", "mix"], capsys).split())
    assert "(default: 0)" in mix and "(default: ['white', 'pink', 'babble', 'music'])" in mix
    build = _help(["data", "build"], capsys)
    assert build.count("(default: data/bench)") == 1  # shown once, not twice


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"echodistill {__version__}"
