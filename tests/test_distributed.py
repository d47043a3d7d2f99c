"""Two CPU processes (gloo) under `accelerate launch`: both finish, weights agree, a bad item is
skipped by every rank together (a rank that skips alone would hang the job: the timeout catches it).

Runs in CI (``make test``); about 40-80 s on 2 shared cores.
"""

from __future__ import annotations

import textwrap

import pytest
import torch

from train_helpers import launch_two_processes, make_dataset, read_metrics


SCRIPT = textwrap.dedent('''
    import os, sys
    import torch
    import echodistill.train.loop as L
    import echodistill.train.trainer as T
    from echodistill.config import load_config

    cfg = load_config(None, sys.argv[1:])
    orig = L.save_checkpoint

    def save_and_dump(*a, **k):  # every rank writes its own copy of the student's weights
        path = orig(*a, **k)
        rank = k["accelerator"].process_index
        w = {n: p.detach().clone() for n, p in k["model"].named_parameters() if p.requires_grad}
        torch.save(w, os.path.join(cfg.run.output_dir, f"weights_rank{rank}.pt"))
        return path

    L.save_checkpoint = save_and_dump
    T.run_train(cfg)
    open(os.path.join(cfg.run.output_dir, f"done_rank{int(os.environ.get('RANK', 0))}"), "w").write("ok")
''')


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_two_process_ddp_with_a_bad_item(tiny_qwen2_audio_dir, tmp_path):
    data = make_dataset(tmp_path / "data", n_train=6, n_val=2, bad_ids=("train3",))
    out = tmp_path / "run"
    overrides = [
        f"run.output_dir={out}", "run.num_threads=1", "run.log_with=null", "run.seed=5",
        f"data.bench_dir={data}", "data.max_duration_s=1.0", "noise.train_types=[white,music]",
        f"model.path={tiny_qwen2_audio_dir}", "train.variant=echodistill-token",
        "train.num_generations=4", "train.prompts_per_device=1", "train.max_completion_length=4",
        # 6 items, 2 per micro-batch: 4 steps pass the bad item twice (once per epoch)
        "train.max_steps=4", "train.save_steps=100", "train.eval_steps=4", "train.eval_items=2",
        "train.learning_rate=1e-3",
    ]
    proc = launch_two_processes(SCRIPT, overrides, tmp_path, 200, "a rank skipping alone?")
    assert (out / "done_rank0").is_file() and (out / "done_rank1").is_file()
    w0, w1 = torch.load(out / "weights_rank0.pt"), torch.load(out / "weights_rank1.pt")
    assert set(w0) == set(w1) and w0
    assert max(float((w0[k] - w1[k]).abs().max()) for k in w0) == 0.0  # averaged gradients: identical
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert sum(r["skipped_items"] for r in rows) >= 1  # the bad item was met and skipped...
    assert "skipped bad item train3" in proc.stderr  # ...and named
    assert "2 processes, student ddp" in proc.stderr  # accelerate's DDP wrapper (train/distributed.py)
    assert "val_noisy_acc" in rows[-1] and rows[-1]["val_items"] == 2
    assert (out / "final" / "config.json").is_file()
