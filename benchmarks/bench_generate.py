"""Row 10 of ``run_all.py``: long completions (issue 22 item 7) -- the prompt's KV cache shared by its G samples.

Three layouts of ``adapter.generate(batch, G)``: ``repeated`` -- the prompt run G times (N = B*G
rows); ``kv_copied`` -- each prompt run once (B rows), its KV cache then repeated G times
(``share_prefix``); ``kv_shared`` -- each prompt run once and its KV cache kept once: item b's G
samples decode in row b behind it (``share_kv``, ``sampler.SharedPrefixMask``). Measured in one
process, each other layout alternated with ``kv_shared`` (A B A B ...), one torch thread, at G = 8,
T = 24:

* equal samples vs ``repeated``: greedy (temperature 0) ids and log-probs, and sampled ids at
  temperature 1 with the same seeded generator;
* the wall-time ratios repeated / kv_shared and kv_copied / kv_shared for the whole ``generate`` call;
* the bytes of the prompt's KV cache held while decoding (B*G rows, or B with ``kv_shared``);
* the decode loop's own overhead: the share of the kv_shared call's time spent outside the decoder and
  LM-head forwards (the loop's sampling, EOS bookkeeping and masks, the audio features, the texts).
"""

from __future__ import annotations

import time


LAYOUTS = {"repeated": (False, False), "kv_copied": (True, False), "kv_shared": (True, True)}  # share_prefix, share_kv


def bench_generate(adapter, name, a, rows, window_s, row):
    import torch

    from run_all import EncoderTimer, compare, make_examples, med

    B, G, T = a.B_step, a.G_gen, a.T_gen
    ex = make_examples(B, window_s * 0.75, seed=11)
    batch = adapter.build_inputs([e.prompt for e in ex], [e.noisy for e in ex])

    def run(layout: str, do_sample: bool, seed: int = 0):
        adapter.share_prefix, adapter.share_kv = LAYOUTS[layout]
        g = torch.Generator(device=adapter.device).manual_seed(seed)
        return adapter.generate(batch, G, max_new_tokens=T, do_sample=do_sample, temperature=1.0, generator=g)

    timer = EncoderTimer(adapter.family.text_model(adapter.hf), adapter.family.lm_head(adapter.hf))
    try:
        greedy = {k: run(k, False) for k in LAYOUTS}
        sampled = {k: run(k, True, seed=5) for k in LAYOUTS}
        ref = "repeated"
        equal = {k: {"greedy_ids_equal": bool(torch.equal(greedy[k].ids, greedy[ref].ids)),
                     "greedy_max_abs_logprob_diff": float((greedy[k].logprobs - greedy[ref].logprobs).abs().max()),
                     "sampled_ids_equal_share": float((sampled[k].ids == sampled[ref].ids).float().mean()),
                     "sampled_max_abs_logprob_diff": float((sampled[k].logprobs - sampled[ref].logprobs).abs().max())}
                 for k in LAYOUTS if k != ref}
        model_s, wall = [], []

        def shared():
            s0, t0 = timer.seconds, time.perf_counter()
            run("kv_shared", True)
            model_s.append(timer.seconds - s0)
            wall.append(time.perf_counter() - t0)

        times = {"kv_shared": []}
        for other in ("repeated", "kv_copied"):
            times[other], t_shared = compare(lambda o=other: run(o, True), shared, a.reps, a.warmup)
            times["kv_shared"] += t_shared
    finally:
        timer.remove()
        adapter.share_prefix, adapter.share_kv = LAYOUTS["kv_shared"]
    overhead = 1.0 - med(model_s) / med(wall)
    cfg = adapter.family.text_model(adapter.hf).config  # the prompt's KV cache held during decoding
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    per_row = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * head_dim * batch["input_ids"].shape[1] * \
        adapter.dtype.itemsize
    kv_bytes = {"repeated": B * G * per_row, "kv_copied": B * G * per_row, "kv_shared": B * per_row}
    ok = all(e["greedy_ids_equal"] and e["sampled_ids_equal_share"] == 1.0 for e in equal.values())
    for other in ("repeated", "kv_copied"):
        rows.append(row("10 generate", name, f"generate {other} / prompt KV shared (B={B}, G={G}, T={T})", other,
                        med(times[other]), "kv_shared", med(times["kv_shared"]), "s", ">= 1 at equal samples",
                        lambda r: r >= 1.0 and ok, vs_repeated=equal, prompt_kv_bytes=kv_bytes,
                        loop_overhead_share=overhead, B=B, G=G, T=T))


__all__ = ["bench_generate"]
