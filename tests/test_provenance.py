"""provenance.py: the one weights hash and code version every stored result records."""

from __future__ import annotations

import hashlib
import json

import pytest

from echodistill.errors import UserError
from echodistill.provenance import code_version, weights_sha256


def _store_hash(folder) -> str:
    """The results store's hash as written since it began (eval/store.py before provenance.py held it)."""
    h = hashlib.sha256()
    for p in sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin") and p.is_file()):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def test_weights_hash_is_the_stores_form(tmp_path):
    """A full-weight model folder hashes exactly as results/*/*/run.json recorded it, so new runs pair
    with stored ones; other files (config, processor, card) do not count; content does."""
    (tmp_path / "model-00001-of-00002.safetensors").write_bytes(b"\x01" * 3000)
    (tmp_path / "model-00002-of-00002.safetensors").write_bytes(b"\x02" * 1000)
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "echodistill_model.json").write_text(json.dumps({"backbone": "embedded", "lora": False}))
    first = weights_sha256(tmp_path)
    assert first == _store_hash(tmp_path)
    (tmp_path / "README.md").write_text("card")
    assert weights_sha256(tmp_path) == first
    (tmp_path / "model-00002-of-00002.safetensors").write_bytes(b"\x03" * 1000)
    assert weights_sha256(tmp_path) != first


def test_adapter_hash_includes_its_base(tmp_path):
    base, adapter = tmp_path / "base", tmp_path / "adapter"
    base.mkdir(), adapter.mkdir()
    (base / "model.safetensors").write_bytes(b"base")
    (adapter / "adapter_model.safetensors").write_bytes(b"lora")
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(base)}))
    before = weights_sha256(adapter)
    (base / "model.safetensors").write_bytes(b"other base")
    assert weights_sha256(adapter) != before


def test_no_weights_is_one_line_when_required(tmp_path):
    with pytest.raises(UserError, match="no weight file"):
        weights_sha256(tmp_path, require=True)


def test_code_version_form():
    v = code_version()
    assert v and not v.startswith("git:")  # the form stored runs record: "99f092f" or "99f092f-dirty"


def test_code_version_is_dirty_only_for_code(tmp_path):
    """A run growing the results store (or a regenerated report) leaves the checkout the commit it was;
    a changed source file or spec makes it ``-dirty`` (round 4's frozen-commit check relies on both)."""
    import subprocess

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    for rel in ("src/pkg/mod.py", "configs/spec.yaml", "results/store/run.json", "docs/results.md"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("v1\n")
    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "first")
    clean = code_version(tmp_path / "src" / "pkg")
    assert clean and not clean.endswith("-dirty")
    (tmp_path / "results/store/run.json").write_text("v2\n")
    (tmp_path / "docs/results.md").write_text("v2\n")
    (tmp_path / "results/store/new_unit.json").write_text("{}\n")
    assert code_version(tmp_path / "src" / "pkg") == clean
    (tmp_path / "configs/spec.yaml").write_text("v2\n")
    assert code_version(tmp_path / "src" / "pkg") == clean + "-dirty"
