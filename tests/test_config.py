"""Config: defaults <- variant preset <- YAML <- dotted overrides, with clear errors."""

import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from echodistill.config import VARIANTS, ConfigError, load_config, save_config


def test_defaults_validate_and_resolve():
    cfg = load_config()
    assert cfg.train.variant == "echodistill-rescue" and cfg.signals.distill.weight == 1.0
    assert cfg.data.train_manifest == "data/bench/train.jsonl"  # interpolation resolved


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_variant_is_selectable_with_one_key(variant):
    cfg = load_config(overrides=[f"train.variant={variant}"])
    for key, value in VARIANTS[variant].overrides().items():
        assert OmegaConf.select(cfg, key) == value


def test_explicit_values_win_over_the_variant_preset(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  variant: grpo\nsignals:\n  distill: {weight: 0.3}\n")
    cfg = load_config(f, ["train.learning_rate=3e-5"])
    assert cfg.signals.consistency.weight == 0 and cfg.signals.distill.weight == 0.3
    assert cfg.train.learning_rate == 3e-5


@pytest.mark.parametrize("override, needle", [
    (["train.bogus=1"], "train.bogus"),
    (["train.learning_rate=fast"], "learning_rate"),
    (["train.loss_type=ppo"], "train.loss_type"),
    (["train.num_generations=1"], "num_generations"),
    (["train.variant=magic"], "train.variant"),
    (["warmup.lr_scheduler_type=onecycle"], "warmup.lr_scheduler_type"),
    (["noplace"], "key.sub=value"),
])
def test_bad_values_name_the_key(override, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        load_config(overrides=override)


def test_every_lr_schedule_name_builds_a_transformers_scheduler():
    """Both sections' schedules are transformers' get_scheduler (one implementation), with the loop's
    arguments: the names config validation accepts are the ones it builds."""
    import torch
    from transformers import get_scheduler

    from echodistill.config import LR_SCHEDULES

    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    for name in LR_SCHEDULES:
        get_scheduler(name, opt, num_warmup_steps=1, num_training_steps=4)


def test_bad_yaml_names_the_file(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(f)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_saved_config_reloads_identically(tmp_path):
    cfg = load_config(overrides=["train.variant=echodistill-token", "run.seed=7"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert OmegaConf.to_container(again) == OmegaConf.to_container(cfg)


def test_cli_reports_config_errors_without_traceback():
    out = subprocess.run([sys.executable, "-m", "echodistill.cli", "config", "show", "train.beta=oops"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "train.beta" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("old,new", [("train.per_device_batch_size=4", "train.prompts_per_device"),
                                     ("warmup.batch_size=4", "warmup.prompts_per_device"),
                                     ("warmup.eval_every=5", "warmup.eval_steps"),
                                     ("warmup.log_every=5", "warmup.logging_steps"),
                                     ("warmup.lr_scheduler=linear", "warmup.lr_scheduler_type"),
                                     ("warmup.resume=true", "--resume")])
def test_renamed_keys_name_the_new_key(tmp_path, old, new):
    with pytest.raises(ConfigError, match=f"{old.split('=')[0]}.*renamed.*{new}"):
        load_config(None, [old])
    key, value = old.split("=")
    section, name = key.split(".")
    (tmp_path / "old.yaml").write_text(f"{section}:\n  {name}: {value}\n")
    with pytest.raises(ConfigError, match=f"old.yaml.*{new}"):
        load_config(tmp_path / "old.yaml")
    # a run's own config.yaml saved before the rename still loads (predict reads it beside a checkpoint)
    cfg = load_config(tmp_path / "old.yaml", saved=True)
    if not new.startswith("--"):
        assert str(OmegaConf.select(cfg, new)) == value.replace("true", "True")


def test_env_secrets_are_not_written_in_clear(tmp_path, monkeypatch):
    """`${oc.env:...}` values reach the run but not config.yaml / TensorBoard hparams / `config show`."""
    from echodistill.config import save_config, to_dict

    monkeypatch.setenv("ECHO_TEST_TOKEN", "s3cr3t-token-value")
    yaml = tmp_path / "c.yaml"
    yaml.write_text("run:\n  output_dir: runs/${oc.env:ECHO_TEST_TOKEN}\nmodel:\n  path: ${oc.env:ECHO_TEST_TOKEN}\n")
    cfg = load_config(yaml, ["data.bench_dir=${oc.env:ECHO_TEST_TOKEN}"])
    assert cfg.model.path == "s3cr3t-token-value"  # the run itself gets the value
    out = tmp_path / "saved.yaml"
    save_config(cfg, out)
    text = out.read_text()
    assert "s3cr3t" not in text and "${oc.env:ECHO_TEST_TOKEN}" in text
    assert "s3cr3t" not in repr(to_dict(cfg))  # what TensorBoard's hparams are made from
    monkeypatch.setenv("ECHO_TEST_TOKEN", "other")
    assert load_config(out).model.path == "other"  # the saved config re-resolves from the environment
