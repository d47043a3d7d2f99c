"""Mixed precision from the accelerate config (``ACCELERATE_MIXED_PRECISION``, what `accelerate launch`
sets from ``mixed_precision:``): bf16 autocast on CPU runs the same training as fp32 up to bf16 rounding."""

from __future__ import annotations

import pytest

from echodistill.train import trainer as T

from train_helpers import make_dataset, read_metrics, tiny_config


@pytest.fixture
def fresh_accelerate_state():
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)  # mixed precision is fixed per process state
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.mark.slow
def test_bf16_autocast_matches_fp32(tiny_qwen2_audio_dir, tmp_path, monkeypatch, fresh_accelerate_state):
    from accelerate.state import AcceleratorState

    data = make_dataset(tmp_path / "data", n_train=4, n_val=2)
    args = ("train.variant=echodistill-token", "train.max_steps=2", "train.eval_steps=0")
    T.run_train(tiny_config(data, tiny_qwen2_audio_dir, tmp_path / "fp32", *args))
    AcceleratorState._reset_state(reset_partial_state=True)
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    T.run_train(tiny_config(data, tiny_qwen2_audio_dir, tmp_path / "bf16", *args))
    assert AcceleratorState().mixed_precision == "bf16"

    def rows(name):
        return read_metrics(tmp_path / name)

    for a, b in zip(rows("fp32"), rows("bf16")):
        assert a["completion_length"] == b["completion_length"]  # the same samples...
        assert a["reward_accuracy_mean"] == b["reward_accuracy_mean"]
        for k in ("loss", "grad_norm", "entropy"):  # ...scored in bf16: close, not equal
            assert b[k] == pytest.approx(a[k], rel=3e-2, abs=1e-4), k
        assert a["loss"] != b["loss"]  # autocast really was on
