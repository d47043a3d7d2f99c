"""Configs ship with the package and are found by name: `-c demo`, `config list`, `config path`."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from echodistill.cli import main
from echodistill.config import ConfigError, load_config
from echodistill.config_files import config_names, resolve_config_path

REPO = Path(__file__).resolve().parents[1]


def test_configs_found_by_name_from_any_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no configs/ here
    assert {"demo", "accelerate/ddp_gpu", "qwen2_audio_7b"} <= set(config_names())
    for name in ("demo", "demo.yaml", "configs/demo.yaml"):
        assert resolve_config_path(name).samefile(REPO / "configs" / "demo.yaml")
    assert load_config("demo").model.path == "runs/demo/models/embedded"
    (tmp_path / "demo.yaml").write_text("run:\n  seed: 5\n")
    assert load_config("demo.yaml").run.seed == 5  # an existing file wins over a name
    with pytest.raises(ConfigError, match="accelerate/ddp_gpu"):  # the error lists the names
        load_config("no_such_config")
    assert main(["config", "path", "accelerate/ddp_cpu"]) == 0
    assert capsys.readouterr().out.strip() == str((REPO / "configs" / "accelerate" / "ddp_cpu.yaml").resolve())
    assert main(["config", "list"]) == 0 and "demo\n" in capsys.readouterr().out
    assert main(["config", "path", "nope"]) == 2


def test_command_line_mistakes_are_attributed_to_the_command_line(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("train:\n  max_steps: 3\n")
    with pytest.raises(ConfigError, match=r"invalid override \(command line") as e:
        load_config(y, ["train.max_steps=abc"])
    assert str(y) not in str(e.value)
    y.write_text("train:\n  max_steps: abc\n")
    with pytest.raises(ConfigError, match=f"invalid config in {y}"):
        load_config(y, ["train.max_steps=3"])


@pytest.mark.slow
def test_wheel_carries_the_configs(tmp_path):
    """A built wheel holds echodistill/configs/*.yaml; installed alone (no checkout), `-c demo` resolves."""
    src = tmp_path / "src_copy"  # built from a copy: the build leaves build/ and *.egg-info behind
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md"):
        src.mkdir(exist_ok=True)
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copytree(REPO / "configs", src / "configs")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(src)], check=True, cwd=tmp_path)
    wheel = next((tmp_path / "dist").glob("echodistill-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "echodistill/configs/demo.yaml" in names and "echodistill/configs/accelerate/ddp_gpu.yaml" in names
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    code = "from echodistill.config_files import resolve_config_path as r; print(r('demo'))"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"}).stdout.strip()
    assert out == str(tmp_path / "site" / "echodistill" / "configs" / "demo.yaml")
