"""The trust boundary: a run folder is data. Reading, showing or validating its config runs no code;
code it asks for (``model.trust_remote_code``, reward plug-ins) runs only when the user opts in."""

from __future__ import annotations

import shutil
import textwrap

import pytest

from echodistill import api
from echodistill.audio.io import write_audio
from echodistill.cli import main
from echodistill.config import ConfigError, load_config

from train_helpers import tone

EVIL = textwrap.dedent('''
    import pathlib
    pathlib.Path(__file__).with_name("RAN").write_text("plug-in code ran")

    def reward(completions, **kwargs):
        return [0.0 for _ in completions]
''')


@pytest.fixture
def downloaded_run(tmp_path, tiny_qwen2_audio_dir):
    """A run folder as someone else made it: final/ holds a real model, config.yaml asks for remote
    code and names a plug-in shipped inside the folder that leaves a marker file when imported."""
    run = tmp_path / "downloaded"
    shutil.copytree(tiny_qwen2_audio_dir, run / "final")
    (run / "rewards.py").write_text(EVIL)
    (run / "config.yaml").write_text(textwrap.dedent(f'''
        model: {{path: {tiny_qwen2_audio_dir}, trust_remote_code: true}}
        data: {{max_duration_s: 1.0}}
        eval: {{max_new_tokens: 2}}
        run: {{num_threads: 1, output_dir: {run}}}
        train: {{reward_funcs: ["{run}/rewards.py:reward"]}}
    '''))
    write_audio(tmp_path / "clip.wav", tone(300.0, seconds=0.5))
    return run


def test_run_folder_runs_no_code_and_says_how_to_opt_in(downloaded_run, tmp_path, capsys):
    run, marker = downloaded_run, downloaded_run / "RAN"
    rc = main(["predict", "--checkpoint", str(run / "final"), "--audio", str(tmp_path / "clip.wav"),
               "--question", "What is it?"])
    err = capsys.readouterr().err
    assert rc == 2 and "--trust-remote-code" in err and "model.trust_remote_code" in err and "Traceback" not in err
    rc = main(["export", str(run), "--out", str(tmp_path / "export")])
    err = capsys.readouterr().err
    assert rc == 2 and "--trust-remote-code" in err and not (tmp_path / "export").exists()
    rc = main(["eval", "--checkpoint", str(run / "final"), "--out", str(tmp_path / "ev")])
    err = capsys.readouterr().err
    assert rc == 2 and "--trust-remote-code" in err and not (tmp_path / "ev").exists()
    with pytest.raises(ConfigError, match="trust_remote_code=True"):
        api.load_model(run / "final")
    assert main(["config", "show", "-c", str(run / "config.yaml")]) == 0
    shown = capsys.readouterr()
    assert "trust_remote_code: true" in shown.out and "--trust-remote-code" in shown.err
    assert "rewards.py:reward" in shown.err
    assert not marker.exists(), "reading a run folder's config ran the plug-in it names"


def test_opting_in_loads_the_model(downloaded_run, tmp_path, capsys):
    rc = main(["predict", "--checkpoint", str(downloaded_run / "final"), "--audio", str(tmp_path / "clip.wav"),
               "--question", "What is it?", "--trust-remote-code"])
    assert rc == 0 and capsys.readouterr().out.startswith("clip.wav\t")
    model = api.load_model(downloaded_run / "final", trust_remote_code=True)
    assert model.config.model.trust_remote_code is True
    assert not (downloaded_run / "RAN").exists(), "predicting imported a reward plug-in"


def test_validating_a_config_imports_no_plugin(tmp_path, monkeypatch):
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(EVIL.replace("def reward", "def unused"))
    (pkg / "scores.py").write_text(EVIL)
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = load_config(None, ["train.reward_funcs=[mypkg.scores:reward]"])
    assert list(cfg.train.reward_funcs) == ["mypkg.scores:reward"]
    with pytest.raises(ConfigError, match="has no function 'nope'"):
        load_config(None, ["train.reward_funcs=[mypkg.scores:nope]"])
    with pytest.raises(ConfigError, match="module 'mypkg.missing' not found"):
        load_config(None, ["train.reward_funcs=[mypkg.missing:reward]"])
    assert not (pkg / "RAN").exists(), "config validation imported the plug-in"


@pytest.fixture
def plain_run(tmp_path, tiny_qwen2_audio_dir):
    """A run folder of the user's own (no code asked for), beside other work in the same parent."""
    run = tmp_path / "runs" / "ed"
    shutil.copytree(tiny_qwen2_audio_dir, run / "final")
    (run / "config.yaml").write_text(f"model: {{path: {tiny_qwen2_audio_dir}}}\nrun: {{output_dir: {run}}}\n")
    (tmp_path / "runs" / "other_work.txt").write_text("keep me")
    return run


def test_export_never_deletes_its_source(plain_run, tmp_path, capsys):
    for out in (plain_run.parent, plain_run, plain_run / "final", plain_run / "final" / "sub"):
        rc = main(["export", str(plain_run), "--out", str(out), "--overwrite"])
        err = capsys.readouterr().err
        assert rc == 2 and "export reads from" in err, (out, err)
    assert (plain_run / "final" / "config.json").is_file() and (tmp_path / "runs" / "other_work.txt").is_file()
    assert main(["export", str(plain_run), "--out", str(tmp_path / "exports" / "ed")]) == 0  # outside: fine


def test_export_copies_only_what_the_model_owns(plain_run, tmp_path, capsys):
    import json

    secret = tmp_path / "home" / ".ssh"
    secret.mkdir(parents=True)
    (secret / "id_rsa").write_text("PRIVATE KEY")
    meta_path = plain_run / "final" / "echodistill_model.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    for stages, needle in (([str(secret)], "not a LoRA adapter folder"), (["../../../home/.ssh"], "leaves the model folder")):
        meta_path.write_text(json.dumps({**meta, "merged_adapters": stages}))
        rc = main(["export", str(plain_run), "--out", str(tmp_path / "export")])
        err = capsys.readouterr().err
        assert rc == 2 and needle in err and not (tmp_path / "export").exists(), err
    meta_path.write_text(json.dumps(meta))
    (plain_run / "final" / "notes.txt").symlink_to(secret / "id_rsa")  # a link out of the folder
    assert main(["export", str(plain_run), "--out", str(tmp_path / "export")]) == 0
    assert "skipped" in capsys.readouterr().err
    assert not any("PRIVATE KEY" in p.read_text(errors="ignore") for p in (tmp_path / "export").rglob("*")
                   if p.is_file() and p.stat().st_size < 10_000)


def test_a_pickled_checkpoint_is_refused_in_one_line(tmp_path, tiny_qwen2_audio_dir, capsys):
    import os
    import pickle

    model = tmp_path / "model"
    shutil.copytree(tiny_qwen2_audio_dir, model)
    for f in model.glob("*.safetensors"):
        f.unlink()

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'PWNED'}",))

    with open(model / "pytorch_model.bin", "wb") as f:
        pickle.dump({"w": Payload()}, f)
    write_audio(tmp_path / "clip.wav", tone(300.0, seconds=0.5))
    rc = main(["predict", "--checkpoint", str(model), "--audio", str(tmp_path / "clip.wav"), "--question", "q",
               f"model.path={model}", "model.backbone=embedded"])
    err = capsys.readouterr().err
    assert rc == 2 and "refused" in err and "safetensors" in err and "Traceback" not in err
    assert not (tmp_path / "PWNED").exists()


def test_a_run_from_another_machine_exports_without_its_plugin_files(plain_run, tmp_path):
    cfg = plain_run / "config.yaml"
    cfg.write_text(cfg.read_text() + "train: {reward_funcs: [/elsewhere/rewards.py:bonus]}\n")
    assert main(["export", str(plain_run), "--out", str(tmp_path / "exported")]) == 0
    with pytest.raises(ConfigError, match="not found"):  # the user's own config: still checked
        load_config(cfg)
