"""FSDP2 through our own code path on two CPU processes (gloo), under `accelerate launch` and a timeout:

* a 2-process run of ``echodistill-token`` (full fine-tuning, sharded student) ends with the weights of a
  1-process run of the same global batch (1e-5);
* a run stopped at its step-2 sharded checkpoint and resumed ends exactly where the straight run ends;
* the same with LoRA (the teacher is the sharded model with its adapter disabled);
* ranks never hang: one rank's rollouts end at the first token (early EOS) while the other's run to the
  length limit, and the validation shard is uneven (3 items on 2 ranks); one rank distils (rescue KD)
  while the other has no item to distil.

Sampling runs at a tiny temperature so the draws do not depend on how items are split over ranks
(the sampler's generator is seeded per rank); everything else (noise, items, teacher) already does not.
The learning rate is small because Adam's first steps scale a gradient element by 1/(|g| + eps): an
element whose gradient is float noise (~1e-9, it differs between a batch of 2 and two batches of 1)
moves by ~0.1 * lr either way; at lr = 1e-2 that alone is a 1e-3 difference.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from echodistill.train import trainer as T
from echodistill.train.checkpoint import latest_checkpoint, load_weights

from train_helpers import launch_two_processes, make_dataset, tiny_config, tiny_overrides


SCRIPT = textwrap.dedent('''
    import os, sys
    import echodistill.train.trainer as T
    from echodistill.config import load_config
    from echodistill.models.base import AudioLLM

    import accelerate
    # several runs in one launch: keep the process group alive between them (end_training destroys it)
    accelerate.Accelerator.end_training = lambda self: [t.finish() for t in self.trackers]

    LORA = %r
    base = sys.argv[1:]
    rank = int(os.environ.get("RANK", 0))
    out = [a.split("=", 1)[1] for a in base if a.startswith("run.output_dir=")][0]
    # A: straight, 4 steps
    T.run_train(load_config(None, base + ["train.max_steps=4"]))
    # B: 2 steps (sharded checkpoint at step 2), then resumed to 4
    b = [a for a in base if not a.startswith("run.output_dir=")] + [f"run.output_dir={out}_resumed"]
    T.run_train(load_config(None, b + ["train.max_steps=2"]))
    T.run_train(load_config(None, b + ["train.max_steps=4"]), resume=True)
    # C: rank 1 stops every rollout at its first token; 3 val items on 2 ranks
    if rank == 1:
        original = AudioLLM.generate
        def early_eos(self, batch, num_samples=1, *, max_new_tokens, **kw):
            return original(self, batch, num_samples, max_new_tokens=1 if kw.get("do_sample", True) else max_new_tokens, **kw)
        AudioLLM.generate = early_eos
    c = [a for a in base if not a.startswith("run.output_dir=")] + [f"run.output_dir={out}_uneven"]
    T.run_train(load_config(None, c + ["train.max_steps=2", "train.eval_steps=1", "train.eval_items=3"]))
    open(os.path.join(out + "_uneven", f"done_rank{rank}"), "w").write("ok")
    if rank == 1:
        AudioLLM.generate = original
    # D: LoRA (teacher = adapter disabled) sharded
    d = [a for a in base if not a.startswith("run.output_dir=")] + [f"run.output_dir={out}_lora"]
    T.run_train(load_config(None, d + ["train.max_steps=2"] + LORA))
    # E: rescue KD on rank 0's item only: rank 1's KD pass runs one row at weight 0 (same forward calls)
    import torch
    from echodistill.train.signals.distill import Distill
    Distill.select = lambda self, r, G: setattr(r, "kd_items", torch.full((len(r.examples),), rank == 0))
    e = [a for a in base if not a.startswith("run.output_dir=")] + [f"run.output_dir={out}_rescue"]
    T.run_train(load_config(None, e + ["train.max_steps=2", "train.variant=echodistill-rescue"]))
    open(os.path.join(out + "_rescue", f"done_rank{rank}"), "w").write("ok")
''')

LORA = ["model.lora.enabled=true", "model.lora.r=4", "model.lora.alpha=8"]
ARGS = ("train.variant=echodistill-token", "train.temperature=1e-6", "train.save_steps=2", "train.eval_steps=0",
        "train.learning_rate=1e-5", "train.num_iterations=1")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_fsdp2_two_processes_equal_one_and_resume_exactly(tiny_qwen2_audio_dir, tmp_path):
    data = make_dataset(tmp_path / "data", n_train=4, n_val=3)
    # the reference: one process, the global batch (2 items per micro-batch)
    ref = tmp_path / "one"
    T.run_train(tiny_config(data, tiny_qwen2_audio_dir, ref, *ARGS, "train.prompts_per_device=2", "train.max_steps=4"))
    ref_lora = tmp_path / "one_lora"
    T.run_train(tiny_config(data, tiny_qwen2_audio_dir, ref_lora, *ARGS, *LORA, "train.prompts_per_device=2",
                            "train.max_steps=2"))

    out = tmp_path / "two"
    proc = launch_two_processes(SCRIPT % LORA, tiny_overrides(data, tiny_qwen2_audio_dir, out, *ARGS, "train.prompts_per_device=1",
                                                "run.fsdp=true"), tmp_path, 480, "FSDP2")

    assert "2 processes, student fsdp2" in proc.stderr
    one, two = load_weights(latest_checkpoint(ref)), load_weights(latest_checkpoint(out))
    resumed = load_weights(latest_checkpoint(Path(f"{out}_resumed")))
    start = load_weights(latest_checkpoint(ref).parent / "checkpoint-2")  # moved between steps 2 and 4
    assert set(one) == set(two) == set(resumed) and one
    assert max(float((one[k] - two[k]).abs().max()) for k in one) <= 1e-5  # 2 processes == 1, global batch
    assert max(float((two[k] - resumed[k]).abs().max()) for k in two) == 0.0  # sharded resume: exact
    assert max(float((one[k] - start[k]).abs().max()) for k in one) > 1.5e-5  # and steps 3-4 did move them
    uneven = Path(f"{out}_uneven")
    assert (uneven / "done_rank0").is_file() and (uneven / "done_rank1").is_file()
    assert (uneven / "final" / "config.json").is_file()
    rows = (uneven / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 2 and '"val_items": 3.0' in rows[-1]
    rescue = Path(f"{out}_rescue")
    assert (rescue / "done_rank0").is_file() and (rescue / "done_rank1").is_file()
    assert '"kd_items_frac": 0.5' in (rescue / "metrics.jsonl").read_text()  # one rank of two distilled
    one, two = load_weights(latest_checkpoint(ref_lora)), load_weights(latest_checkpoint(Path(f"{out}_lora")))
    assert set(one) == set(two) and all("lora_" in k for k in one)  # LoRA sharded: adapters only train
    assert max(float((one[k] - two[k]).abs().max()) for k in one) <= 1e-5
