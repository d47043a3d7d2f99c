"""EchoDistill performance benchmarks: ``make bench`` (or ``python benchmarks/run_all.py [--quick]``).

Every row is the RATIO of two variants measured in the same process on the same inputs (median of
``--reps`` repetitions after ``--warmup`` warm-up runs; A and B alternate within each repetition so
that load drift on a shared machine hits both alike). Models: the embedded model (``models/embedded``,
built if missing is NOT attempted: the row set is skipped with a note) and a tiny random Qwen2.5-Omni
thinker built into a temporary folder.

Benchmarks (docs/performance.md explains each target):

1. step   -- step-time breakdown (rollout, teacher, rewards, update), grpo vs echodistill, the
             trainer's own phase functions on the same batch; + encoder cache on vs off.
2. encode -- our generate (each clip encoded once for its G samples) vs the naive way (each clip
             repeated G times through processor and encoder, 1 sample each).
3. memory -- adapter-disabled LoRA teacher vs a frozen copy: parameter bytes, peak RSS growth
             (one subprocess per variant).
4. teacher-- one batched teacher forward for all G candidates vs one forward per candidate.
5. noise  -- our mixer vs a straightforward Python reference and audiomentations, at equal SNR.
6. eval   -- greedy evaluation throughput, batched vs one item at a time.
7. update -- the update with each prompt once (packed) vs repeated G times: grpo step before/after at
             B = 8, G = 8; update time and activation bytes vs G; gradient checkpointing (bench_update.py).
8. trl    -- the same grpo step in TRL's GRPOTrainer at equal shapes, interleaved (optional: TRL installed);
             with `reasoning` also at the reasoning format's T = 24.
9. memmodel -- memory_model.py's activation term vs measured on tiny Qwen2-Audio models scaled up.
10. generate -- long completions (G = 8, T = 24): each prompt run once and its KV cache shared by its
             G samples vs the prompt repeated G times; equal samples at temperature 0 and 1 (bench_generate.py).
11. reasoning -- a step in the reasoning format (T = 24) vs the answer format, grpo and echodistill
             (bench_reasoning.py).
12. evalcache -- evaluation with each batch's encoder output read from the disk folder vs encoded, at
             bit-equal outputs (bench_eval_cache.py).

One torch thread per process by default (``--threads``): on 2 shared cores two multi-threaded runs slow
each other 5-20x. The embedded model is built into the temporary folder when ``--embedded-path`` has none.

Output: a Markdown table on stdout and JSON (``--out``, default benchmarks/results.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_eval_cache import bench_eval_cache  # noqa: E402 -- issue 27: round 4's evaluations
from bench_generate import bench_generate  # noqa: E402 -- issue 22 item 7
from bench_update import (bench_memmodel, bench_trl, bench_update, bench_update_peak,  # noqa: E402 -- issue 11
                          update_probe)
from bench_reasoning import REASONING_T, bench_reasoning  # noqa: E402 -- issue 22

WORDS = ["low", "high", "mid", "rising"]
SR = 16000


# ============================================================== helpers
def machine_info() -> dict:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return {"nproc": os.cpu_count(), "cpu_model": cpu or platform.processor(), "loadavg_start": list(os.getloadavg()),
            "python": platform.python_version(), "torch": torch.__version__, "torch_threads": torch.get_num_threads()}


# What a timing reads: wall seconds, or with --clock cpu this process's CPU seconds (on a shared machine
# the time spent waiting for a core is not the code's cost; pin the process and use one thread).
clock = time.perf_counter


def compare(fa, fb, reps: int, warmup: int) -> tuple[list[float], list[float]]:
    """Seconds (``clock``) of fa and fb, alternated (A B A B ...), after ``warmup`` runs of each."""
    for _ in range(warmup):
        fa()
        fb()
    ta, tb = [], []
    for _ in range(reps):
        t0 = clock()
        fa()
        ta.append(clock() - t0)
        t0 = clock()
        fb()
        tb.append(clock() - t0)
    return ta, tb


def med(xs) -> float:
    return float(statistics.median(xs)) if len(xs) else float("nan")


def row(bench, model, metric, a_name, a, b_name, b, unit, target_txt, met, **extra) -> dict:
    ratio = a / b if b else float("inf")
    return {"bench": bench, "model": model, "metric": metric, "a_name": a_name, "a": a, "b_name": b_name, "b": b,
            "unit": unit, "ratio": ratio, "target": target_txt, "met": met(ratio) if callable(met) else met,
            "extra": extra}


def tone(freq: float, seconds: float, seed: int) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(seed)
    return (0.05 * np.sin(2 * np.pi * freq * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
            + 0.003 * rng.standard_normal(t.size)).astype(np.float32)


def make_examples(n: int, seconds: float, seed: int = 0):
    from echodistill.audio.noise import mix_at_snr
    from echodistill.data.manifest import Item
    from echodistill.data.prompts import format_question
    from echodistill.train.data import Example

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        clean = tone(200 + 60 * i, seconds, seed + i)
        snr = float(rng.uniform(-5, 5))
        noisy = mix_at_snr(clean, rng.standard_normal(clean.size).astype(np.float32), snr)
        k = i % len(WORDS)
        item = Item(id=f"b{i}", audio="", question="Which tone is it?", choices=list(WORDS), target=WORDS[k])
        out.append(Example(item, format_question(item.question, WORDS), list(WORDS), k, clean, noisy, "white", snr))
    return out


class EncoderTimer:
    """Wall time spent inside the forwards of ``modules`` (the audio encoder; pre/post hooks; not nested)."""

    def __init__(self, *modules):
        self.seconds = 0.0
        self._t0 = None
        self._h = [h for m in modules for h in (m.register_forward_pre_hook(self._pre),
                                                 m.register_forward_hook(self._post))]

    def _pre(self, *a):
        self._t0 = clock()

    def _post(self, *a):
        self.seconds += clock() - self._t0

    def remove(self):
        for h in self._h:
            h.remove()


def model_cfg(backbone: str, path: Path, *, G: int, B: int, T: int, variant: str, window_s: float, lora=False,
              extra=()):
    from echodistill.config import load_config

    ov = [f"model.backbone={backbone}", f"model.path={path}", f"train.variant={variant}",
          f"train.num_generations={G}", f"train.prompts_per_device={B}", f"train.max_completion_length={T}",
          f"data.max_duration_s={window_s}", "run.log_with=null", f"model.lora.enabled={str(lora).lower()}"]
    return load_config(None, ov + list(extra))


# ============================================================== 1. step-time breakdown
def _clear(adapter) -> None:
    adapter.features.clear()


def real_examples(bench_dir: Path, n: int, window_s: float):
    """``n`` training items of a built benchmark spread over its tasks, with their training noise draw."""
    from echodistill.audio.noise import NoiseBank
    from echodistill.config import load_config
    from echodistill.data.manifest import read_manifest
    from echodistill.train.data import load_examples

    cfg = load_config(None, [f"data.bench_dir={bench_dir}", f"data.max_duration_s={window_s}"])
    items = read_manifest(cfg.data.train_manifest)
    items = items[:: max(1, len(items) // n)][:n]
    examples, bad = load_examples(items, cfg, NoiseBank(cfg.noise.noise_dir), position=0)
    if bad:
        raise SystemExit(f"--real-bench {bench_dir}: unusable items: {bad[:3]}")
    return examples


def timed_step(adapter, examples, cfg, sig, opt, params, clock, clip_grad_norm=None):
    """One training step on ``examples`` -- rollout, teacher, rewards + advantages, update -- each phase
    timed with ``clock``. Returns ({rollout, teacher, rewards, update, total: seconds}, the rollout)."""
    import torch

    from echodistill.train import trainer as T

    t0 = clock()
    r = T.rollout(adapter, examples, cfg, T._generator(adapter.device, 0, "rollout", 0, 0), sample=sig.samples)
    t1 = clock()
    T.teacher_phase(adapter, r, sig, cfg.train)
    t2 = clock()
    T.compute_rewards(r, sig, cfg.train)
    T.compute_advantages(r, sig, cfg.train)
    t3 = clock()
    loss, _ = T.micro_loss(adapter, r, sig, cfg.train, first_iteration=True, num_tokens=None)
    loss.backward()
    if clip_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)
    opt.step()
    opt.zero_grad(set_to_none=True)
    t4 = clock()
    return {"rollout": t1 - t0, "teacher": t2 - t1, "rewards": t3 - t2, "update": t4 - t3, "total": t4 - t0}, r


def bench_step(adapter, backbone, path, window_s, name, a, rows, examples=None, extra_variants=()):
    """``examples``: the items stepped on (default: synthetic tones whose answers an untrained model
    does not know, so all G samples differ: the teacher's worst case). ``extra_variants``: more
    variants timed against grpo in the same interleaved repetitions."""
    import torch

    from echodistill.train.signals import build_signals

    G, B, L = a.G, a.B_step, a.T
    variants = ("grpo", "echodistill", *extra_variants)
    cfgs = {v: model_cfg(backbone, path, G=G, B=B, T=L, variant=v, window_s=window_s) for v in variants}
    signals = {v: build_signals(c) for v, c in cfgs.items()}
    examples = examples or make_examples(B, window_s * 0.75)
    params = adapter.trainable_parameters()
    opt = torch.optim.AdamW(params, lr=0.0, weight_decay=0.0)  # lr 0: weights stay fixed across repetitions

    def step(v) -> dict:
        return timed_step(adapter, examples, cfgs[v], signals[v], opt, params, clock, clip_grad_norm=1.0)[0]

    def set_opt(optimised: bool):
        adapter.cache_encoder_output = optimised  # encoder-output cache + per-clip teacher cache
        adapter.share_prefix = optimised  # prompt once per item, KV cache repeated G times
        adapter.share_prefix_grad = optimised  # the update: each prompt once, completions packed behind it

    def run_all(modes):
        """Interleaved: every repetition runs each (mode, variant) once, so load drift hits all alike."""
        phases = {(o, v): [] for o in modes for v in variants}
        clips = {}
        for o in modes:
            set_opt(o)
            _clear(adapter)
            for _ in range(a.warmup):
                for v in variants:
                    step(v)
        for _ in range(a.reps):
            for o in modes:
                set_opt(o)  # same batch each repetition: the per-clip teacher cache hits (as from epoch 2 on)
                for v in variants:
                    c0 = adapter.encoder_clips
                    phases[(o, v)].append(step(v))
                    clips[(o, v)] = adapter.encoder_clips - c0
        set_opt(True)
        out = {}
        for o in modes:
            out[o] = ({v: {k: med([p[k] for p in phases[(o, v)]]) for k in phases[(o, v)][0]}
                       for v in variants}, {v: clips[(o, v)] for v in variants})
        return out

    modes = (True, False) if not a.quick else (True,)
    allres = run_all(modes)

    def run(optimised: bool):
        return allres[optimised]

    res, clips = run(True)
    g, e = res["grpo"], res["echodistill"]
    share = e["teacher"] / e["total"]
    rows.append(row("1 step", name, "step time echodistill / grpo", "echodistill", e["total"], "grpo", g["total"], "s",
                    "<= 1.10", lambda r: r <= 1.10, grpo_phases=g, echodistill_phases=e,
                    teacher_share_echodistill=share, encoder_clips_per_step=clips, B=B, G=G, T=L))
    rows.append(row("1 step", name, "teacher phase / echodistill step", "teacher", e["teacher"], "step", e["total"],
                    "s", "(share)", True))
    targets = {"clean-distill": ("< 1.0 (samples nothing)", lambda r: r < 1.0)}  # issue 21
    for v in extra_variants:
        txt, ok = targets.get(v, ("(no target)", lambda r: True))
        rows.append(row("1 step", name, f"step time {v} / grpo", v, res[v]["total"], "grpo", g["total"], "s",
                        txt, ok, **{f"{v}_phases": res[v]}))
    if not a.quick:
        res0, clips0 = run(False)
        g0, e0 = res0["grpo"], res0["echodistill"]
        rows.append(row("1 step", name, "[before opt.] step time echodistill / grpo", "echodistill", e0["total"],
                        "grpo", g0["total"], "s", "<= 1.15", lambda r: r <= 1.15, grpo_phases=g0,
                        echodistill_phases=e0, teacher_share_echodistill=e0["teacher"] / e0["total"],
                        encoder_clips_per_step=clips0))
        rows.append(row("1 step", name, "echodistill step before / after opt.", "before", e0["total"], "after",
                        e["total"], "s", "> 1 (faster after)", lambda r: r > 1.0))
        rows.append(row("1 step", name, "teacher phase before / after opt.", "before", e0["teacher"], "after",
                        e["teacher"], "s", "> 1 (faster after)", lambda r: r > 1.0))
        set_opt(True)
    _clear(adapter)


# ============================================================== 2. audio encoding in the rollout
def bench_encode(adapter, name, a, rows, window_s):
    G, B, L = a.G, a.B, a.T
    ex = make_examples(B, window_s * 0.75)
    prompts, wavs = [e.prompt for e in ex], [e.noisy for e in ex]
    timer = EncoderTimer(adapter.family.audio_encoder(adapter.hf))
    stats = {"ours": [0.0, 0], "naive": [0.0, 0]}

    def ours():
        s0, c0 = timer.seconds, adapter.encoder_clips
        b = adapter.build_inputs(prompts, wavs)
        adapter.generate(b, G, max_new_tokens=L, do_sample=True)
        stats["ours"] = [timer.seconds - s0, adapter.encoder_clips - c0]

    def naive():
        s0, c0 = timer.seconds, adapter.encoder_clips
        b = adapter.build_inputs([p for p in prompts for _ in range(G)], [w for w in wavs for _ in range(G)])
        adapter.generate(b, 1, max_new_tokens=L, do_sample=True)
        stats["naive"] = [timer.seconds - s0, adapter.encoder_clips - c0]

    enc = {"ours": [], "naive": []}

    def wrap(f, k):
        def g():
            f()
            enc[k].append(stats[k][0])
        return g

    ta, tb = compare(wrap(naive, "naive"), wrap(ours, "ours"), a.reps, a.warmup)
    timer.remove()
    clips_naive, clips_ours = stats["naive"][1], stats["ours"][1]
    rows.append(row("2 encode", name, "encoder clip passes naive / ours", "naive", clips_naive, "ours", clips_ours,
                    "clips", f">= G ({G})", lambda r: r >= G))
    rows.append(row("2 encode", name, "encoder time naive / ours", "naive", med(enc["naive"][a.warmup:]), "ours",
                    med(enc["ours"][a.warmup:]), "s", "> 1", lambda r: r > 1.0))
    rows.append(row("2 encode", name, "rollout time naive / ours", "naive", med(ta), "ours", med(tb), "s",
                    ">= 1.2 (clear factor)", lambda r: r >= 1.2, B=B, G=G, T=L))


# ============================================================== 4. batched teacher scoring
def bench_teacher(adapter, name, a, rows, window_s):
    import torch

    G, B, L = a.G, a.B, a.T
    ex = make_examples(B, window_s * 0.75)
    prompts = [e.prompt for e in ex]
    noisy = adapter.build_inputs(prompts, [e.noisy for e in ex])
    torch.manual_seed(0)
    comp = adapter.generate(noisy, G, max_new_tokens=L, do_sample=True)
    ids, mask = comp.ids, comp.mask
    with adapter.teacher() as teacher:
        clean = teacher.build_inputs(prompts, [e.clean for e in ex])
        singles = [teacher.build_inputs([prompts[i]], [ex[i].clean]) for i in range(B)]
        out = {}

        def batched():
            out["b"] = teacher.token_logprobs(clean, ids, mask, num_samples=G)

        def per_candidate():
            rows_ = []
            for i in range(B):
                for j in range(G):
                    k = i * G + j
                    rows_.append(teacher.token_logprobs(singles[i], ids[k:k + 1], mask[k:k + 1], num_samples=1))
            out["p"] = torch.cat(rows_)

        tp, tb = compare(per_candidate, batched, a.reps, a.warmup)
    diff = float((out["b"] - out["p"]).abs().max())
    rows.append(row("4 teacher", name, f"teacher scoring per-candidate / batched (G={G})", "per-candidate", med(tp),
                    "batched", med(tb), "s", ">= 2", lambda r: r >= 2.0, max_abs_logprob_diff=diff, B=B, G=G, T=L))


# ============================================================== 6. evaluation throughput
def bench_eval(student, name, a, rows, window_s):
    n = a.eval_items
    ex = make_examples(n, window_s * 0.75, seed=7)
    prompts, wavs = [e.prompt for e in ex], [e.noisy for e in ex]
    texts = {}
    from echodistill.models.teacher import teacher_view
    adapter = teacher_view(student)  # eval runs the untrained model with nothing trainable: the teacher path

    def batched():
        b = adapter.build_inputs(prompts, wavs)
        texts["b"] = adapter.generate(b, 1, max_new_tokens=a.T, do_sample=False).texts

    def single():
        out = []
        for p, w in zip(prompts, wavs):
            out += adapter.generate(adapter.build_inputs([p], [w]), 1, max_new_tokens=a.T, do_sample=False).texts
        texts["s"] = out

    ts, tb = compare(single, batched, a.reps, a.warmup)
    same = sum(x == y for x, y in zip(texts["b"], texts["s"])) / n
    rows.append(row("6 eval", name, f"items/s batched / one-at-a-time ({n} items)", "batched", n / med(tb),
                    "single", n / med(ts), "items/s", ">= 2", lambda r: r >= 2.0, same_answer_share=same))


# ============================================================== 3. teacher memory (subprocess per variant)
def memory_probe(backbone: str, path: str, mode: str, window_s: float) -> dict:
    """Runs in a fresh process: load with LoRA, teacher = adapter_disabled or frozen_copy; one step's forwards."""
    import gc

    import torch

    torch.set_num_threads(1)
    from echodistill.models import load_adapter

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    from echodistill.models import adapter_class

    adapter_class(backbone).hf_class()  # import the model code before the baseline
    gc.collect()
    try:  # reset the peak (VmHWM) so that it measures this probe's model only
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    rss0 = rss()
    cfg = model_cfg(backbone, Path(path), G=4, B=2, T=4, variant="echodistill", window_s=window_s, lora=True,
                    extra=[f"model.teacher_mode={mode}", "model.lora.r=8", "model.lora.alpha=16"])
    m = load_adapter(cfg.model, train=True)
    ex = make_examples(2, window_s * 0.75)
    prompts = [e.prompt for e in ex]
    b = m.build_inputs(prompts, [e.noisy for e in ex])
    c = m.generate(b, 4, max_new_tokens=4)
    with m.teacher() as t:
        t.token_logprobs(t.build_inputs(prompts, [e.clean for e in ex]), c.ids, c.mask, num_samples=4)
    m.token_logprobs(b, c.ids, c.mask, num_samples=4, with_grad=True).sum().backward()
    rss1 = rss()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB (not reset by clear_refs)
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peak = int(line.split()[1]) * 1024
    except OSError:
        pass

    def nbytes(mod):
        seen, total = set(), 0
        for p in mod.parameters():
            if p.data_ptr() not in seen:
                seen.add(p.data_ptr())
                total += p.numel() * p.element_size()
        return total, seen

    student, ptrs = nbytes(m.model)
    teacher_extra = 0
    if m.teacher_model is not None:
        for p in m.teacher_model.parameters():
            if p.data_ptr() not in ptrs:
                ptrs.add(p.data_ptr())
                teacher_extra += p.numel() * p.element_size()
    return {"mode": m.teacher_mode, "student_param_bytes": student, "teacher_extra_param_bytes": teacher_extra,
            "param_bytes_total": student + teacher_extra, "rss_growth": rss1 - rss0, "peak_rss_growth": peak - rss0}


def bench_memory(backbone, path, name, rows, window_s):
    res = {}
    for mode in ("frozen_copy", "adapter_disabled"):
        cmd = [sys.executable, __file__, "--_memory-probe", backbone, str(path), mode, str(window_s)]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if p.returncode != 0:
            raise RuntimeError(f"memory probe {mode} failed: {p.stderr[-2000:]}")
        res[mode] = json.loads(p.stdout.strip().splitlines()[-1])
    fc, ad = res["frozen_copy"], res["adapter_disabled"]
    rows.append(row("3 memory", name, "weight bytes frozen-copy / LoRA-disabled", "frozen_copy",
                    fc["param_bytes_total"], "adapter_disabled", ad["param_bytes_total"], "bytes",
                    "LoRA teacher adds 0 bytes", ad["teacher_extra_param_bytes"] == 0,
                    lora_teacher_extra_bytes=ad["teacher_extra_param_bytes"],
                    frozen_copy_teacher_extra_bytes=fc["teacher_extra_param_bytes"]))
    rows.append(row("3 memory", name, "peak RSS growth frozen-copy / LoRA-disabled", "frozen_copy",
                    fc["peak_rss_growth"], "adapter_disabled", ad["peak_rss_growth"], "bytes", "> 1",
                    lambda r: r > 1.0, probes=res))


# ============================================================== 5. noise mixing
def naive_mix(clean: np.ndarray, noise_type: str, snr_db: float, seed: int, noise_file: str) -> np.ndarray:
    """A straightforward reference: fresh RNG per call, file re-read per call, Python loops for powers."""
    import soundfile as sf

    rs = np.random.RandomState(seed)
    n = len(clean)
    if noise_type == "white":
        noise = rs.randn(n)
    elif noise_type == "pink":
        spec = np.fft.rfft(rs.randn(n))
        f = np.fft.rfftfreq(n, 1.0 / SR)
        f[0] = 1.0
        spec = spec / np.sqrt(np.maximum(f, 20.0))
        spec[0] = 0
        noise = np.fft.irfft(spec, n)
    else:
        wav, _ = sf.read(noise_file, dtype="float32")
        start = rs.randint(0, len(wav) - n + 1)
        noise = wav[start:start + n]
    pc = sum(float(v) * float(v) for v in clean) / n
    pn = sum(float(v) * float(v) for v in noise) / n
    g = (pc / (pn * 10 ** (snr_db / 10))) ** 0.5
    out = [float(c) + g * float(v) for c, v in zip(clean, noise)]
    top = max(abs(v) for v in out)
    if top > 0.99:
        out = [v * 0.99 / top for v in out]
    return np.asarray(out, dtype=np.float32)


def measured_snr(clean: np.ndarray, noisy: np.ndarray) -> float:
    c = clean.astype(np.float64)
    y = noisy.astype(np.float64)
    s = float(np.dot(y, c) / np.dot(c, c))  # undo a common peak scaling, if any
    s = 1.0 if abs(s - 1.0) < 0.02 else s
    return 10 * np.log10(np.mean((s * c) ** 2) / np.mean((y - s * c) ** 2))


def bench_noise(a, rows, tmp: Path):
    from echodistill.audio.io import write_audio
    from echodistill.audio.noise import NoiseBank, draw_noisy, seeded_rng

    noise_dir = tmp / "noise"
    rng = np.random.default_rng(5)
    music = (0.2 * np.sin(2 * np.pi * 220 * np.arange(5 * SR) / SR) + 0.1 * rng.standard_normal(5 * SR))
    write_audio(noise_dir / "music" / "m0.wav", music.astype(np.float32))
    mfile = str(noise_dir / "music" / "m0.wav")
    bank = NoiseBank(noise_dir)
    n = a.noise_items
    clips = [tone(200 + 30 * i, 1.0, i) for i in range(n)]
    snr = 0.0
    kinds = {"white": "white", "pink": "pink", "file": "music"}
    outs: dict = {}

    def ours(kind):
        def f():
            outs[("ours", kind)] = [draw_noisy(c, bank, [kinds[kind]], seeded_rng(0, i), snr_levels=[snr]).noisy
                                    for i, c in enumerate(clips)]
        return f

    def naive(kind):
        def f():
            outs[("naive", kind)] = [naive_mix(c, kind, snr, i, mfile) for i, c in enumerate(clips)]
        return f

    def snr_err(key):
        return float(np.mean([abs(measured_snr(c, y) - snr) for c, y in zip(clips, outs[key])]))

    tn, to = [], []
    for kind in kinds:
        x, y = compare(naive(kind), ours(kind), a.reps, a.warmup)
        tn += x
        to += y
    errs = {f"{w}_{k}": snr_err((w, k)) for w in ("ours", "naive") for k in kinds}
    rows.append(row("5 noise", "-", f"items/s ours / naive Python reference (white+pink+file, {n} x 1 s)", "ours",
                    3 * n / sum(to) * a.reps, "naive", 3 * n / sum(tn) * a.reps, "items/s",
                    "> 1 at equal SNR", lambda r: r > 1.0 and max(errs.values()) < 0.1, snr_abs_err_db=errs))
    try:
        from audiomentations import AddBackgroundNoise, AddColorNoise, AddGaussianSNR
    except Exception as e:  # noqa: BLE001
        rows.append(row("5 noise", "-", "audiomentations", "ours", float("nan"), "audiomentations", float("nan"),
                        "items/s", "n/a", False, error=f"import failed: {e}"))
        return
    augs = {"white": ("AddGaussianSNR", AddGaussianSNR(min_snr_db=snr, max_snr_db=snr, p=1.0)),
            "pink": ("AddColorNoise", AddColorNoise(min_snr_db=snr, max_snr_db=snr, min_f_decay=-3.01,
                                                    max_f_decay=-3.01, p=1.0)),
            "file": ("AddBackgroundNoise", AddBackgroundNoise(sounds_path=str(noise_dir / "music"), min_snr_db=snr,
                                                              max_snr_db=snr, p=1.0))}
    for kind, (aname, aug) in augs.items():
        def am(kind=kind, aug=aug):
            np.random.seed(0)
            outs[("am", kind)] = [aug(samples=c, sample_rate=SR) for c in clips]

        x, y = compare(am, ours(kind), a.reps, a.warmup)
        e_ours, e_am = snr_err(("ours", kind)), snr_err(("am", kind))
        rows.append(row("5 noise", "-", f"items/s ours / audiomentations {aname} ({kind})", "ours", n / med(y),
                        aname, n / med(x), "items/s", "~>= 1 at equal SNR", lambda r: r >= 0.9,
                        snr_abs_err_db_ours=e_ours, snr_abs_err_db_audiomentations=e_am))


# ============================================================== driver
class Sizes:
    def __init__(self, quick: bool, reps: int | None, warmup: int | None):
        self.quick = quick
        self.reps = reps if reps is not None else (1 if quick else 3)
        self.warmup = warmup if warmup is not None else (0 if quick else 1)
        self.G = 4 if quick else 8
        self.B = 2
        self.B_step = 2 if quick else 8  # the step, update and TRL rows (issue 11: B = 8, G = 8)
        self.T = 3 if quick else 6
        self.eval_items = 3 if quick else 8
        self.G_gen, self.T_gen = (4, 6) if quick else (8, 24)  # the generate row: long completions
        self.noise_items = 3 if quick else 16


def run_model(name, backbone, path, window_s, a, rows, which):
    from echodistill.models import load_adapter

    cfg = model_cfg(backbone, path, G=a.G, B=a.B, T=a.T, variant="echodistill", window_s=window_s)
    adapter = load_adapter(cfg.model, train=True)  # default: full fine-tuning, encoder frozen, frozen-copy teacher
    if "step" in which:
        bench_step(adapter, backbone, path, window_s, name, a, rows)
    if "encode" in which:
        bench_encode(adapter, name, a, rows, window_s)
    if "teacher" in which:
        bench_teacher(adapter, name, a, rows, window_s)
    if "eval" in which:
        bench_eval(adapter, name, a, rows, window_s)
    if "generate" in which:
        bench_generate(adapter, name, a, rows, window_s, row)
    if "evalcache" in which:
        bench_eval_cache(backbone, path, window_s, name, a, rows, row)
    if "memory" in which:
        bench_memory(backbone, path, name, rows, window_s)
    if "update" in which and backbone == "embedded":
        bench_update(adapter, backbone, path, window_s, name, a, rows, row)
        if not a.quick:
            bench_update_peak(backbone, path, window_s, name, a, rows, row)
    if "trl" in which and backbone == "embedded":
        bench_trl(adapter, backbone, path, window_s, name, a, rows, row, clock=clock)
        if "reasoning" in which:  # issue 22: the peer again at the reasoning format's completion length
            bench_trl(adapter, backbone, path, window_s, name, a, rows, row, T=REASONING_T, clock=clock)
    if "reasoning" in which and backbone == "embedded":
        bench_reasoning(adapter, backbone, path, window_s, name, a, rows, row, model_cfg, make_examples, med,
                        clock=clock)


def run_real(model_path: Path, bench_dir: Path, a, rows):
    """Row 1 again on a trained model and real benchmark items: the completions are real answers,
    so an item's G samples repeat each other as they do in training (what the teacher's cost
    depends on). The window is the experiments' (2 s)."""
    from echodistill.models import load_adapter

    window_s = 2.0
    cfg = model_cfg("embedded", model_path, G=a.G, B=a.B_step, T=a.T, variant="echodistill", window_s=window_s)
    adapter = load_adapter(cfg.model, train=True)
    bench_step(adapter, "embedded", model_path, window_s, "embedded, trained (real items)", a, rows,
               examples=real_examples(bench_dir, a.B_step, window_s),
               extra_variants=("echodistill-rescue", "clean-distill"))


def fmt(x, unit) -> str:
    if isinstance(x, float) and x != x:
        return "n/a"
    if unit == "bytes":
        return f"{x / 2 ** 20:.1f} MiB"
    if unit == "s":
        return f"{x * 1000:.0f} ms" if x < 10 else f"{x:.1f} s"
    if unit == "clips":
        return f"{int(x)}"
    return f"{x:.1f}"


def table(rows) -> str:
    out = ["| # | model | metric | A | B | A/B | target | met |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['bench']} | {r['model']} | {r['metric']} | {r['a_name']}: {fmt(r['a'], r['unit'])} | "
                   f"{r['b_name']}: {fmt(r['b'], r['unit'])} | {r['ratio']:.2f} | {r['target']} | "
                   f"{'yes' if r['met'] else 'NO'} |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: small sizes, 1 repetition")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results.json"))
    ap.add_argument("--models", default="embedded,omni", help="comma list of embedded, omni")
    ap.add_argument("--bench", help="comma list of benchmarks",
                    default="step,encode,memory,teacher,noise,eval,update,trl,memmodel,generate,reasoning,evalcache")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="wall seconds, or this process's CPU seconds (robust to other load on a shared machine)")
    ap.add_argument("--embedded-path", default=str(ROOT / "models" / "embedded"))
    ap.add_argument("--real-model", help="a trained embedded model (e.g. a warm-up's final/): row 1 again on "
                                         "real items of --real-bench")
    ap.add_argument("--real-bench", help="a built benchmark folder (echodistill data build) for --real-model")
    ap.add_argument("--_memory-probe", nargs=4, metavar=("BACKBONE", "PATH", "MODE", "WINDOW"), help=argparse.SUPPRESS)
    ap.add_argument("--_update-probe", nargs=7, help=argparse.SUPPRESS)  # backbone path layout G B T window
    args = ap.parse_args(argv)
    if args._update_probe:
        bb, p, layout, g, b, t, w = args._update_probe
        print(json.dumps(update_probe(bb, p, layout, int(g), int(b), int(t), float(w))))
        return 0
    if args._memory_probe:
        bb, p, mode, w = args._memory_probe
        print(json.dumps(memory_probe(bb, p, mode, float(w))))
        return 0
    import torch

    torch.set_num_threads(max(1, args.threads))
    global clock
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    a = Sizes(args.quick, args.reps, args.warmup)
    which = set(args.bench.split(","))
    models = [m for m in args.models.split(",") if m]
    info = machine_info()
    rows: list[dict] = []
    notes: list[str] = []
    t_start = time.time()
    with tempfile.TemporaryDirectory(prefix="echodistill-bench-") as tmp:
        tmp = Path(tmp)
        for m in models:
            t0 = time.time()
            if m == "embedded":
                path = Path(args.embedded_path)
                if not (path / "config.json").is_file():
                    from echodistill.models.embedded import build_embedded_model

                    notes.append(f"embedded model not found at {path}: built a fresh one (seed 0, 2 s window)")
                    path = build_embedded_model(tmp / "embedded", seed=0, window_s=2.0, verbose=False)
                run_model("embedded", "embedded", path, 2.0, a, rows, which)
            elif m == "omni":
                from echodistill.models.tiny import build_tiny_qwen_omni

                path = build_tiny_qwen_omni(tmp / "tiny_omni", seed=0, window_s=1.0)
                run_model("tiny-omni", "qwen2_5_omni", path, 1.0, a, rows, which)
            else:
                raise SystemExit(f"unknown model {m!r}: use embedded, omni")
            print(f"[bench] {m}: {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
        if args.real_model and "step" in which:
            if not args.real_bench:
                raise SystemExit("--real-model needs --real-bench (the benchmark it was trained on)")
            run_real(Path(args.real_model), Path(args.real_bench), a, rows)
        if "noise" in which:
            bench_noise(a, rows, tmp)
        if "memmodel" in which:
            bench_memmodel(a, rows, row)
    info["loadavg_end"] = list(os.getloadavg())
    info["clock"] = args.clock
    info["wall_s"] = time.time() - t_start
    result = {"machine": info, "sizes": vars(a), "quick": args.quick, "rows": rows, "notes": notes}
    md = table(rows)
    print(md)
    for n in notes:
        print(f"\nnote: {n}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=float))
    print(f"\n[bench] {len(rows)} rows, {info['wall_s']:.0f} s; JSON: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
