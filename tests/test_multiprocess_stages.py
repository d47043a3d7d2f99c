"""The other stages on two CPU processes (gloo, `accelerate launch`, under a timeout):

* warm-up (sft-noisy): both ranks end with identical weights (DDP), one final/, and the weights of a
  1-process warm-up of the same global batch (1e-5; small learning rate: see test_fsdp.py on Adam);
* evaluation: every (item, condition) predicted exactly once (3 items split 2 + 1 over the ranks), the
  same metrics.json numbers and answers as one process.
"""

from __future__ import annotations

import json
import textwrap

import pytest
import torch

from echodistill.train import loop as L
from echodistill.train.sft import run_warmup

from train_helpers import launch_two_processes, make_dataset, read_metrics, tiny_config, tiny_overrides

DUMP = textwrap.dedent('''
    import os, torch
    import echodistill.train.loop as L

    _finish = L.Recipe._finish

    def finish(self):  # every rank writes the student's weights it ends with
        w = {n: p.detach().clone() for n, p in self.model.model.named_parameters() if p.requires_grad}
        torch.save(w, os.path.join(self.out, f"weights_rank{self.accelerator.process_index}.pt"))
        return _finish(self)

    L.Recipe._finish = finish
''')

WARMUP = DUMP + textwrap.dedent('''
    import sys
    from echodistill.config import load_config
    from echodistill.train.sft import run_warmup
    run_warmup(load_config(None, sys.argv[1:]), progress=False)
''')

WARMUP_ARGS = ("warmup.noisy=true", "warmup.noise_versions=2", "warmup.max_steps=3", "warmup.save_steps=100",
               "warmup.eval_steps=3", "warmup.eval_items=3", "warmup.logging_steps=1", "warmup.learning_rate=1e-5",
               "warmup.warmup_ratio=0.0")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("stages_data"), n_train=6, n_val=3)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_process_warmup_equals_one(data_dir, tiny_qwen2_audio_dir, tmp_path, monkeypatch):
    one = tmp_path / "one"
    dumped = {}
    _finish = L.Recipe._finish

    def finish(self):
        dumped.update({n: p.detach().clone() for n, p in self.model.model.named_parameters() if p.requires_grad})
        return _finish(self)

    monkeypatch.setattr(L.Recipe, "_finish", finish)
    run_warmup(tiny_config(data_dir, tiny_qwen2_audio_dir, one, *WARMUP_ARGS, "warmup.prompts_per_device=2"),
               progress=False)

    two = tmp_path / "two"
    proc = launch_two_processes(WARMUP, tiny_overrides(data_dir, tiny_qwen2_audio_dir, two, *WARMUP_ARGS,
                                                       "warmup.prompts_per_device=1"), tmp_path, 240, "warm-up")
    assert "2 processes, student ddp" in proc.stderr
    w0, w1 = torch.load(two / "weights_rank0.pt"), torch.load(two / "weights_rank1.pt")
    assert set(w0) == set(w1) == set(dumped) and w0
    assert max(float((w0[k] - w1[k]).abs().max()) for k in w0) == 0.0  # DDP: one model on every rank
    assert max(float((w0[k] - dumped[k]).abs().max()) for k in w0) <= 1e-5  # == 1 process, global batch
    assert (two / "final" / "config.json").is_file() and not list(two.glob("final*[!l]"))  # one final/
    rows = read_metrics(two)
    assert [r["step"] for r in rows] == [0, 1, 2, 3] and rows[-1]["val_items"] == 3  # 3 val items on 2 ranks


EVAL = textwrap.dedent('''
    import sys
    from echodistill.config import load_config
    from echodistill.eval.evaluate import run_eval
    out, manifest, checkpoint = sys.argv[1:4]
    run_eval(load_config(None, sys.argv[4:]), checkpoint=checkpoint, manifest=manifest, out_dir=out)
''')

EVAL_ARGS = ("eval.noise_types=[white,music]", "eval.snr_levels=[0,10]", "eval.batch_size=3", "eval.bootstrap=50")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_process_eval_predicts_each_row_once_and_equals_one(data_dir, tiny_qwen2_audio_dir, tmp_path):
    """3 val items (an uneven split: 2 + 1) x (clean, silent, 2 noise types x 2 SNRs)."""
    from echodistill.eval.evaluate import run_eval

    manifest = data_dir / "val.jsonl"
    cfg_args = tiny_overrides(data_dir, tiny_qwen2_audio_dir, tmp_path / "unused", *EVAL_ARGS)
    one = tmp_path / "one"
    run_eval(tiny_config(data_dir, tiny_qwen2_audio_dir, tmp_path / "unused", *EVAL_ARGS),
             checkpoint=str(tiny_qwen2_audio_dir), manifest=manifest, out_dir=one)

    two = tmp_path / "two"
    launch_two_processes(EVAL, [str(two), str(manifest), str(tiny_qwen2_audio_dir), *cfg_args], tmp_path, 240, "eval")
    rows = [json.loads(line) for line in (two / "predictions.jsonl").read_text().splitlines()]
    keys = [(r["id"], r["condition"], r.get("noise_type"), r.get("snr")) for r in rows]
    assert len(keys) == len(set(keys)) == 3 * 6  # every (item, condition) predicted exactly once
    m1, m2 = (json.loads((d / "metrics.json").read_text()) for d in (one, two))
    assert m1["metrics"] == m2["metrics"] and m1["n_predictions"] == m2["n_predictions"] == 18
    by_key = {(r["id"], r["condition"], r.get("noise_type"), r.get("snr")): r["response"] for r in rows}
    for line in (one / "predictions.jsonl").read_text().splitlines():
        r = json.loads(line)
        assert by_key[(r["id"], r["condition"], r.get("noise_type"), r.get("snr"))] == r["response"]
