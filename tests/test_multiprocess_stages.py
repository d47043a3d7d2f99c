"""The other stages on two CPU processes (gloo, `accelerate launch`, under a timeout):

* warm-up (sft-noisy): both ranks end with identical weights (DDP), one final/, and the weights of a
  1-process warm-up of the same global batch (1e-5; small learning rate: see test_fsdp.py on Adam).
"""

from __future__ import annotations

import json
import textwrap

import pytest
import torch

from echodistill.train import loop as L
from echodistill.train.sft import run_warmup

from train_helpers import launch_two_processes, make_dataset, tiny_config, tiny_overrides

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
    rows = [json.loads(line) for line in (two / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2, 3] and rows[-1]["val_items"] == 3  # 3 val items on 2 ranks
