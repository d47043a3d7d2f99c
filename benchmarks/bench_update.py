"""Benchmarks of the update (issue 11), called by run_all.py: rows are ratios measured in one process.

* ``bench_update``   -- grpo step with the prompt repeated G times in the update (before) vs packed
  behind its prompt once (after), B = 8, G = 8; update time and activation bytes vs G (4, 8, 16) for
  both layouts (+ the repeated KV cache), and gradient checkpointing on/off.
* ``bench_trl``      -- the same GRPO step in TRL's GRPOTrainer at equal shapes (same LM weights, our
  chat-templated prompts with the audio span as the same number of text tokens), steps interleaved.
* ``bench_memmodel`` -- benchmarks/memory_model.py's activation term vs what autograd saves on tiny
  real Qwen2-Audio models scaled up in steps.

Activation bytes are measured exactly, not sampled: every tensor autograd saves for the backward
pass (unique storages, parameters excluded) through ``saved_tensors_hooks``, plus the layer inputs
that gradient checkpointing keeps instead. That is the activation memory of a forward at its peak
(just before backward), on any device, without allocator noise.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

LAYOUTS = {"repeated": (False, True), "kv_cache": (True, False), "packed": (True, True)}  # share_prefix_grad, pack


def med(xs) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def set_layout(adapter, layout: str) -> None:
    adapter.share_prefix_grad, adapter.pack_completions = LAYOUTS[layout]


def saved_bytes(adapter, fn):
    """(bytes autograd keeps for backward during ``fn()``, fn's result); see the module docstring."""
    import torch

    params = {p.untyped_storage().data_ptr() for p in adapter.model.parameters()}
    seen: dict[int, int] = {}

    def note(t):
        st = t.untyped_storage()
        if st.data_ptr() not in params and st.data_ptr() not in seen:
            seen[st.data_ptr()] = st.nbytes()

    def pack(t):
        note(t)
        return t

    def layer_input(mod, args, kwargs):  # checkpointing keeps each layer's input instead of its activations
        if adapter.gradient_checkpointing and torch.is_grad_enabled():
            note(args[0] if args else kwargs["hidden_states"])

    hooks = [layer.register_forward_pre_hook(layer_input, with_kwargs=True)
             for layer in adapter.text_model(adapter.hf).layers]
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = fn()
    finally:
        for h in hooks:
            h.remove()
    return sum(seen.values()), out


def _prepared(adapter, backbone, path, window_s, B, G, T, variant="grpo"):
    """A rollout of B items x G samples with teacher passes, rewards and advantages (the trainer's phases)."""
    from run_all import make_examples, model_cfg

    from echodistill.train import trainer as TR

    from echodistill.train.signals import build_signals

    cfg = model_cfg(backbone, path, G=G, B=B, T=T, variant=variant, window_s=window_s)
    signals = build_signals(cfg)
    r = TR.prepare(adapter, make_examples(B, window_s * 0.75), cfg, signals,
                   TR._generator(adapter.device, 0, "rollout", G, 0))
    return r, cfg


def _update(adapter, r, cfg, opt, params):
    import torch

    from echodistill.train import trainer as TR
    from echodistill.train.signals import build_signals

    loss, _ = TR.micro_loss(adapter, r, build_signals(cfg), cfg.train, first_iteration=True, num_tokens=None)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)


def bench_update(adapter, backbone, path, window_s, name, a, rows, row):
    import torch

    from run_all import compare, make_examples, model_cfg

    from echodistill.train import trainer as TR
    from echodistill.train.signals import build_signals

    B, T = a.B_step, a.T
    params = adapter.trainable_parameters()
    opt = torch.optim.AdamW(params, lr=0.0, weight_decay=0.0)  # lr 0: the weights stay fixed
    # ---- whole grpo step, before (prompt repeated G times in the update) / after (packed), B=8, G=8
    G = 8
    cfg = model_cfg(backbone, path, G=G, B=B, T=T, variant="grpo", window_s=window_s)
    examples = make_examples(B, window_s * 0.75)
    phases: dict[str, list[dict]] = {"repeated": [], "packed": []}

    def step(layout):
        def f():
            set_layout(adapter, layout)
            t0 = time.perf_counter()
            r = TR.prepare(adapter, examples, cfg, build_signals(cfg), TR._generator(adapter.device, 0, "rollout", 0, 0))
            t1 = time.perf_counter()
            _update(adapter, r, cfg, opt, params)
            t2 = time.perf_counter()
            phases[layout].append({"before_update": t1 - t0, "update": t2 - t1, "total": t2 - t0})
        return f

    compare(step("repeated"), step("packed"), a.reps, a.warmup)
    before = {k: med([p[k] for p in phases["repeated"][a.warmup:]]) for k in ("before_update", "update", "total")}
    after = {k: med([p[k] for p in phases["packed"][a.warmup:]]) for k in ("before_update", "update", "total")}
    rows.append(row("7 update", name, f"grpo step after / before (B={B}, G={G})", "after", after["total"], "before",
                    before["total"], "s", "<= 0.5", lambda x: x <= 0.5, before=before, after=after))
    rows.append(row("7 update", name, f"update phase after / before (B={B}, G={G})", "after", after["update"],
                    "before", before["update"], "s", "(factor)", True,
                    update_share_before=before["update"] / before["total"]))
    # ---- update time and activation bytes vs G, per layout
    sweep = {}
    for g in (4, 8, 16):
        r, cfg_g = _prepared(adapter, backbone, path, window_s, B, g, T)
        times = {k: [] for k in LAYOUTS}
        act = {}
        for k in LAYOUTS:
            set_layout(adapter, k)
            act[k], _ = saved_bytes(adapter, lambda: TR.micro_loss(adapter, r, build_signals(cfg_g), cfg_g.train,
                                                                   first_iteration=True, num_tokens=None)[0].backward())
            opt.zero_grad(set_to_none=True)
        for _ in range(a.warmup + a.reps):  # interleaved: every repetition runs each layout once
            for k in LAYOUTS:
                set_layout(adapter, k)
                t0 = time.perf_counter()
                _update(adapter, r, cfg_g, opt, params)
                times[k].append(time.perf_counter() - t0)
        sweep[g] = {k: {"update_s": med(times[k][a.warmup:]), "activation_bytes": act[k]} for k in LAYOUTS}
        rows.append(row("7 update", name, f"update time repeated / packed (G={g})", "repeated",
                        sweep[g]["repeated"]["update_s"], "packed", sweep[g]["packed"]["update_s"], "s", "> 1",
                        lambda x: x > 1.0, kv_cache_s=sweep[g]["kv_cache"]["update_s"]))
        rows.append(row("7 update", name, f"activation bytes repeated / packed (G={g})", "repeated",
                        act["repeated"], "packed", act["packed"], "bytes", "> 1", lambda x: x > 1.0,
                        kv_cache_bytes=act["kv_cache"]))
    # prompt part = intercept of bytes vs G (a straight line: prompt + G * completions)
    for k in ("repeated", "packed"):
        gs = np.array([4, 8, 16], dtype=float)
        ys = np.array([sweep[g][k]["activation_bytes"] for g in (4, 8, 16)], dtype=float)
        slope, icpt = np.polyfit(gs, ys, 1)
        sweep[f"{k}_fit"] = {"per_sample_bytes": float(slope), "constant_bytes": float(icpt)}
    pk, rp = sweep["packed_fit"], sweep["repeated_fit"]
    rows.append(row("7 update", name, "activation bytes per extra sample (slope in G) repeated / packed",
                    "repeated", rp["per_sample_bytes"], "packed", pk["per_sample_bytes"], "bytes",
                    "> 1 (packed: completions only)", lambda x: x > 1.0, fit=sweep))
    # ---- gradient checkpointing at G=8, packed
    r, cfg8 = _prepared(adapter, backbone, path, window_s, B, 8, T)
    set_layout(adapter, "packed")
    ck = {}
    for on in (False, True):
        adapter.gradient_checkpointing = on
        ck[on], _ = saved_bytes(adapter, lambda: TR.micro_loss(adapter, r, build_signals(cfg8), cfg8.train,
                                                               first_iteration=True, num_tokens=None)[0].backward())
        opt.zero_grad(set_to_none=True)

    def upd(on):
        def f():
            adapter.gradient_checkpointing = on
            _update(adapter, r, cfg8, opt, params)
        return f

    t_on, t_off = compare(upd(True), upd(False), a.reps, a.warmup)
    adapter.gradient_checkpointing = False
    rows.append(row("7 update", name, "activation bytes checkpointing off / on (G=8, packed)", "off", ck[False], "on",
                    ck[True], "bytes", "> 1", lambda x: x > 1.0))
    rows.append(row("7 update", name, "update time checkpointing on / off (G=8, packed)", "on", med(t_on), "off",
                    med(t_off), "s", "(cost of recompute)", True))
    set_layout(adapter, "packed")


# ============================================================== TRL peer
def _trl_prompts(adapter, examples):
    """Our chat-templated prompts with each clip's audio span as the same number of ordinary text tokens."""
    batch = adapter.build_inputs([e.prompt for e in examples], [e.noisy for e in examples])
    tok = adapter.tokenizer
    filler = tok(" a", add_special_tokens=False).input_ids
    assert len(filler) == 1, "the filler must be one token"
    texts, lengths = [], []
    for ids, am in zip(batch["input_ids"], batch["attention_mask"]):
        ids = ids[am.bool()]
        ids = [filler[0] if int(t) == adapter.audio_token_id else int(t) for t in ids]
        texts.append(tok.decode(ids, skip_special_tokens=False))
        lengths.append(len(ids))
    return texts, lengths


def bench_trl(adapter, backbone, path, window_s, name, a, rows, row, T=None, clock=time.perf_counter):
    """TRL GRPOTrainer (1.16) vs our grpo step at B x G x T (default ``a.T``), interleaved step by step via a
    callback. ``clock``: wall (``perf_counter``) or this process's CPU seconds (``run_all.py --clock cpu``)."""
    try:
        import trl
        from datasets import Dataset
        from transformers import Qwen2ForCausalLM, TrainerCallback
        from trl import GRPOConfig, GRPOTrainer
    except Exception as e:  # noqa: BLE001 -- optional peer: a row that says why
        rows.append(row("8 peer", name, "grpo step ours / TRL GRPOTrainer", "ours", float("nan"), "TRL", float("nan"),
                        "s", "<= 0.35", False, error=f"TRL not importable ({e}); pip install --no-deps trl"))
        return
    import torch

    from run_all import make_examples, model_cfg

    from echodistill.train import trainer as TR
    from echodistill.train.signals import build_signals

    B, G, T = a.B_step, 8, T or a.T
    examples = make_examples(B, window_s * 0.75)
    texts, lengths = _trl_prompts(adapter, examples)
    ours_lengths = adapter.build_inputs([e.prompt for e in examples], [e.noisy for e in examples])["attention_mask"].sum(-1)
    retok = [len(adapter.tokenizer(t, add_special_tokens=False).input_ids) for t in texts]
    lm = Qwen2ForCausalLM(adapter.hf.config.text_config)
    lm.model.load_state_dict(adapter.text_model(adapter.hf).state_dict())
    lm.lm_head.load_state_dict(adapter.lm_head(adapter.hf).state_dict())
    lm.generation_config.eos_token_id = adapter.eos_token_ids
    lm.generation_config.pad_token_id = adapter.pad_token_id
    targets = [e.choices[e.target] for e in examples]
    ds = Dataset.from_list([{"prompt": t, "target": y} for t, y in zip(texts, targets)])

    def reward(completions, target, **kw):
        return [float(y in c) for c, y in zip(completions, target)]

    cfg = model_cfg(backbone, path, G=G, B=B, T=T, variant="grpo", window_s=window_s)
    params = adapter.trainable_parameters()
    opt = torch.optim.AdamW(params, lr=0.0, weight_decay=0.0)
    times = {"trl": [], "ours": []}

    def ours_step():
        t0 = clock()
        r = TR.prepare(adapter, examples, cfg, build_signals(cfg), TR._generator(adapter.device, 0, "rollout", 0, 0))
        _update(adapter, r, cfg, opt, params)
        times["ours"].append(clock() - t0)

    class Interleave(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t0 = clock()

        def on_step_end(self, args, state, control, **kw):
            times["trl"].append(clock() - self.t0)
            ours_step()  # one of ours after each of TRL's: load drift hits both alike

    steps = a.warmup + a.reps
    with tempfile.TemporaryDirectory() as out:
        args = GRPOConfig(output_dir=out, per_device_train_batch_size=B * G, num_generations=G,
                          max_completion_length=T, learning_rate=0.0, loss_type="dr_grpo", beta=0.0,
                          temperature=1.0, max_steps=steps, logging_steps=1, report_to="none", save_strategy="no",
                          use_cpu=True, bf16=False, fp16=False, dataloader_num_workers=0, seed=0,
                          disable_tqdm=True, gradient_checkpointing=False, shuffle_dataset=False)
        trainer = GRPOTrainer(model=lm, reward_funcs=reward, args=args, train_dataset=ds,
                              processing_class=adapter.tokenizer, callbacks=[Interleave()])
        trainer.train()
    tr, ou = med(times["trl"][a.warmup:]), med(times["ours"][a.warmup:])
    rows.append(row("8 peer", name, f"grpo step ours / TRL {trl.__version__} GRPOTrainer (B={B}, G={G}, T={T})", "ours",
                    ou, "TRL", tr, "s", "<= 0.35", lambda x: x <= 0.35, prompt_tokens_ours=ours_lengths.tolist(),
                    prompt_tokens_trl=retok, trl_steps=times["trl"], our_steps=times["ours"]))


# ============================================================== memory model check
def bench_memmodel(a, rows, row):
    """Predicted (memory_model.py) vs measured activation bytes on tiny Qwen2-Audio models scaled up."""
    import torch

    import memory_model as MM

    from echodistill.config import ModelConfig
    from echodistill.models import load_adapter
    from echodistill.models.tiny import build_tiny_qwen2_audio

    steps = [(64, 2, 1), (128, 2, 2), (256, 4, 2), (512, 4, 4)] if not a.quick else [(64, 2, 1), (128, 2, 2)]
    B, G, T, r_lora = 2, 4, 6, 8
    measured: dict[str, list[float]] = {k: [] for k in LAYOUTS}
    predicted: dict[str, list[float]] = {k: [] for k in LAYOUTS}
    sizes = []
    with tempfile.TemporaryDirectory() as tmp:
        for d, layers, w in steps:
            path = build_tiny_qwen2_audio(Path(tmp) / f"d{d}", seed=0, window_s=w, hidden_size=d, text_layers=layers)
            cfg = ModelConfig(backbone="qwen2_audio", path=str(path))
            cfg.lora.enabled, cfg.lora.r = True, r_lora
            m = load_adapter(cfg, train=True)
            rng = np.random.default_rng(0)
            b = m.build_inputs(["What is the spoken word? Choices: yes, no, maybe."] * B,
                               [(0.1 * rng.standard_normal(16000 * w)).astype(np.float32)] * B)
            L = int(b["input_ids"].shape[1])
            ids = torch.randint(20, 300, (B * G, T), generator=torch.Generator().manual_seed(0))
            mask = torch.ones_like(ids)
            tc = m.hf.config.text_config
            lm = MM.LM(tc.hidden_size, tc.intermediate_size, tc.num_hidden_layers, tc.num_attention_heads,
                       tc.num_key_value_heads, tc.vocab_size)
            sizes.append({"hidden": d, "layers": layers, "L": L})
            for k in LAYOUTS:
                set_layout(m, k)
                got, _ = saved_bytes(m, lambda: m.token_logprobs(b, ids, mask, num_samples=G, with_grad=True,
                                                                 return_entropy=True))
                measured[k].append(got)
                predicted[k].append(MM.update_activation_bytes(lm, B=B, G=G, L=L, T=T, s=4, lora_r=r_lora,
                                                               layout=k)["total"])
    for k in LAYOUTS:
        for i in range(1, len(steps)):
            g_meas = measured[k][i] / measured[k][i - 1]
            g_pred = predicted[k][i] / predicted[k][i - 1]
            rows.append(row("9 memmodel", f"tiny qwen2-audio {sizes[i - 1]['hidden']}->{sizes[i]['hidden']}",
                            f"activation growth predicted / measured ({k})", "predicted", g_pred, "measured", g_meas,
                            "x", "within 20 %", lambda x: 0.8 <= x <= 1.2, sizes=sizes,
                            predicted_bytes=predicted[k][i], measured_bytes=measured[k][i]))
        rows.append(row("9 memmodel", f"tiny qwen2-audio {sizes[-1]['hidden']}", f"activation bytes predicted / measured ({k})",
                        "predicted", predicted[k][-1], "measured", measured[k][-1], "bytes", "within 20 %",
                        lambda x: 0.8 <= x <= 1.2))


# ============================================================== peak RSS of one update (one process per point)
def update_probe(backbone: str, path: str, layout: str, G: int, B: int, T: int, window_s: float) -> dict:
    """In a fresh process: peak RSS growth (VmHWM, reset after setup) of one update with ``layout``."""
    import gc
    import os

    import torch

    torch.set_num_threads(1)
    from echodistill.models import load_adapter
    from run_all import model_cfg

    cfg = model_cfg(backbone, Path(path), G=G, B=B, T=T, variant="grpo", window_s=window_s)
    adapter = load_adapter(cfg.model, train=True)
    r, cfg = _prepared(adapter, backbone, Path(path), window_s, B, G, T)
    set_layout(adapter, layout)
    params = adapter.trainable_parameters()
    opt = torch.optim.AdamW(params, lr=0.0)
    _update(adapter, r, cfg, opt, params)  # optimizer state and allocator warm: not this update's cost
    gc.collect()

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    base = rss()
    _update(adapter, r, cfg, opt, params)
    peak = next(int(line.split()[1]) * 1024 for line in Path("/proc/self/status").read_text().splitlines()
                if line.startswith("VmHWM:"))
    return {"layout": layout, "G": G, "peak_rss_growth": peak - base}


def bench_update_peak(backbone, path, window_s, name, a, rows, row):
    """Peak RSS growth of one update, repeated vs packed, G = 4, 8, 16 (subprocesses: clean peaks)."""
    import json
    import subprocess

    res = {}
    for g in (4, 8, 16):
        for layout in ("repeated", "packed"):
            cmd = [sys.executable, str(HERE / "run_all.py"), "--_update-probe", backbone, str(path), layout, str(g),
                   str(a.B_step), str(a.T), str(window_s)]
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            if p.returncode != 0:
                raise RuntimeError(f"update probe {layout} G={g} failed: {p.stderr[-2000:]}")
            res[(layout, g)] = json.loads(p.stdout.strip().splitlines()[-1])["peak_rss_growth"]
        rows.append(row("7 update", name, f"peak RSS growth of one update repeated / packed (G={g})", "repeated",
                        res[("repeated", g)], "packed", res[("packed", g)], "bytes", "> 1", lambda x: x > 1.0))
