"""Row 12 of ``run_all.py``: evaluation batches kept on disk (``model.feature_cache_dir`` with eval/predict).

Round 4 evaluates ~250 checkpoints from one base model on one grid. An inference model with a disk folder
keeps each batch's frozen-encoder output under the batch's content (``audio_path.kept_batch_features``),
so every later evaluation on that grid encodes nothing. Two inference adapters of the same weights, as two
``echodistill eval`` processes load them, both with the memory cache off:

* ``encoded`` -- no folder: every batch runs through the audio encoder;
* ``from disk`` -- a folder filled by one pass before timing: every batch is read back, as a fresh
  process reads it.

Greedy generation over the same batches (inputs built anew each pass), alternated (A B A B ...), one
torch thread. The folder must keep every bit, so equal ids and log-probs, and no encoder pass from the
filled folder, are part of the target. The filling pass is timed once too (it encodes and writes every
batch; after one encoded pass, so that it carries no start-up cost).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path


def bench_eval_cache(backbone, path, window_s, name, a, rows, row):
    import torch

    from echodistill.models import load_adapter
    from run_all import compare, make_examples, med, model_cfg

    B, n_batches = a.B_step, (2 if a.quick else 4)
    n = B * n_batches
    examples = make_examples(n, window_s * 0.75, seed=13)
    batches = [examples[i:i + B] for i in range(0, n, B)]

    def inference_adapter(extra):
        cfg = model_cfg(backbone, path, G=a.G, B=B, T=a.T, variant="grpo", window_s=window_s,
                        extra=["model.feature_cache_mb=0", *extra])
        return load_adapter(cfg.model, train=False)

    def evaluate(model):
        """Greedy outputs of every batch: [(ids [B, <=T], logprobs [B, <=T]), ...]."""
        outs = [model.generate(model.build_inputs([e.prompt for e in b], [e.noisy for e in b]), 1,
                               max_new_tokens=a.T, do_sample=False) for b in batches]
        return [(o.ids, o.logprobs) for o in outs]

    def same(x, y) -> bool:
        return all(torch.equal(i, j) and torch.equal(p, q) for (i, p), (j, q) in zip(x, y))

    with tempfile.TemporaryDirectory(prefix="echodistill-evalcache-") as folder:
        encoded, from_disk = inference_adapter([]), inference_adapter([f"model.feature_cache_dir={folder}"])
        reference = evaluate(encoded)  # first: the process's one-time start-up costs fall here, not in the filling
        t0 = time.perf_counter()
        filled = evaluate(from_disk)  # writes every batch's encoder output to the folder
        fill_s = time.perf_counter() - t0
        clips_before, hits_before = from_disk.features.encoder_clips, from_disk.features.clips.disk_hits
        t_encoded, t_disk = compare(lambda: evaluate(encoded), lambda: evaluate(from_disk), a.reps, a.warmup)
        read_back = evaluate(from_disk)
        encoded_from_folder = from_disk.features.encoder_clips - clips_before
        disk_hits = from_disk.features.clips.disk_hits - hits_before
        folder_bytes = sum(p.stat().st_size for p in Path(folder).rglob("*.safetensors"))
    equal = same(reference, filled) and same(reference, read_back)
    rows.append(row("12 evalcache", name, f"eval items/s, batches from the disk folder / encoded ({n} items, "
                                          f"B={B}, T={a.T})", "from disk", n / med(t_disk), "encoded",
                    n / med(t_encoded), "items/s", "> 1 at bit-equal outputs",
                    lambda r: r > 1.0 and equal and encoded_from_folder == 0, equal_ids_and_logprobs=equal,
                    encoder_clips_from_folder=encoded_from_folder, disk_hits=disk_hits,
                    filling_items_per_s=n / fill_s, folder_bytes=folder_bytes, B=B, T=a.T))


__all__ = ["bench_eval_cache"]
