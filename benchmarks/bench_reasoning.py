"""Benchmark row set ``reasoning`` (issue 22): a training step in the reasoning response format
(``<think>evidence</think><answer>choice</answer>``, ``max_completion_length`` 24) against the answer
format (``Sizes.T`` tokens), same items, same model, interleaved; the phase split of each.

The untrained embedded model never stops early, so every completion runs its full length: the worst
case of each format. Variants: grpo and echodistill (the teacher scores every completion token).
"""

from __future__ import annotations

import time

REASONING_T = 24  # config.FORMAT_PRESETS["reasoning"]["train.max_completion_length"]


def bench_reasoning(adapter, backbone, path, window_s, name, a, rows, row, model_cfg, make_examples, med,
                    clock=time.perf_counter) -> None:
    import torch

    from run_all import timed_step

    from echodistill.data.prompts import format_question
    from echodistill.train.signals import build_signals

    G, B = a.G, a.B_step
    answer_ex = make_examples(B, window_s * 0.75)
    reasoning_ex = [type(e)(e.item, format_question(e.item.question, e.choices, "reasoning"), e.choices, e.target,
                            e.clean, e.noisy, e.noise_type, e.snr, "reasoning") for e in answer_ex]
    cases = {}
    for variant in ("grpo", "echodistill"):
        cases[("answer", variant)] = (model_cfg(backbone, path, G=G, B=B, T=a.T, variant=variant, window_s=window_s),
                                      answer_ex)
        cases[("reasoning", variant)] = (model_cfg(backbone, path, G=G, B=B, T=REASONING_T, variant=variant,
                                                   window_s=window_s, extra=("data.response_format=reasoning",)),
                                         reasoning_ex)
    signals = {k: build_signals(c) for k, (c, _) in cases.items()}
    params = adapter.trainable_parameters()
    opt = torch.optim.AdamW(params, lr=0.0, weight_decay=0.0)  # lr 0: the weights stay fixed

    def step(key) -> dict:
        cfg, ex = cases[key]
        phases, r = timed_step(adapter, ex, cfg, signals[key], opt, params, clock)
        return {**phases, "tokens": float(r.mask.sum()) / max(1, r.mask.shape[0])}

    for _ in range(a.warmup):
        for k in cases:
            step(k)
    runs = {k: [] for k in cases}
    for _ in range(a.reps):  # interleaved: load drift hits every case alike
        for k in cases:
            runs[k].append(step(k))
    res = {k: {p: med([x[p] for x in v]) for p in v[0]} for k, v in runs.items()}
    for variant in ("grpo", "echodistill"):
        r_, a_ = res[("reasoning", variant)], res[("answer", variant)]
        rows.append(row("11 reasoning", name, f"{variant} step time reasoning (T={REASONING_T}) / answer (T={a.T})",
                        "reasoning", r_["total"], "answer", a_["total"], "s", "(cost of the format)", True,
                        reasoning_phases=r_, answer_phases=a_, B=B, G=G))
