"""Test helpers (conftest.py hands them to tests as fixtures): the one tone maker, the metrics.jsonl
reader, a tiny training set-up (tone clips, a manifest, a noise dir, a config), two-process launches."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np

from echodistill.audio.io import write_audio
from echodistill.config import load_config

WORDS = ["low", "high", "mid", "rising"]


def tone(freq: float = 440.0, seconds: float = 0.6, sr: int = 16000, seed: int = 0, *, n: Optional[int] = None,
         amp: float = 0.3, noise: float = 0.01, harmonics: int = 1, channels: int = 1) -> np.ndarray:
    """A test clip [S] (or [S, 2] for ``channels=2``: right = half the left): ``amp`` x the sum of the
    first ``harmonics`` partials of ``freq`` (the k-th at 1/k), plus ``noise`` x seeded Gaussian noise.
    ``n``: the length in samples instead of ``seconds``."""
    t = np.arange(int(seconds * sr) if n is None else n) / sr
    x = amp * sum(np.sin(2 * np.pi * k * freq * t) / k for k in range(1, harmonics + 1))
    if noise:
        x = x + noise * np.random.default_rng(seed).standard_normal(t.size)
    x = x.astype(np.float32)
    return np.stack([x, 0.5 * x], axis=1) if channels == 2 else x


def read_jsonl(path: Path) -> list[dict]:
    """The rows of a JSON-lines file (blank lines skipped)."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def read_metrics(run_dir: Path) -> list[dict]:
    """A run's ``metrics.jsonl`` rows (train rows and eval rows, in order)."""
    return read_jsonl(Path(run_dir) / "metrics.jsonl")


def make_dataset(root: Path, n_train: int = 8, n_val: int = 4, bad_ids: tuple[str, ...] = ()) -> Path:
    """root/{train,val}.jsonl, root/audio/*.wav, root/noise/music/*.wav. ``bad_ids``: audio missing."""
    root = Path(root)
    (root / "audio").mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("val", n_val)):
        rows = []
        for i in range(n):
            iid = f"{split}{i}"
            k = i % len(WORDS)
            path = root / "audio" / f"{iid}.wav"
            if iid not in bad_ids:
                write_audio(path, tone(200 + 150 * k + 7 * i, seed=i))
            rows.append({"id": iid, "audio": str(path), "question": "Which tone is it?",
                         "choices": list(WORDS), "target": WORDS[k], "task": "tone", "split": split})
        (root / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    rng = np.random.default_rng(1)
    write_audio(root / "noise" / "music" / "m0.wav", (0.2 * rng.standard_normal(32000)).astype(np.float32))
    return root


def tiny_config(data_dir: Path, model_dir: Path, out_dir: Path, *overrides: str):
    return load_config(None, tiny_overrides(data_dir, model_dir, out_dir, *overrides))


def tiny_overrides(data_dir: Path, model_dir: Path, out_dir: Path, *overrides: str) -> list[str]:
    """``tiny_config``'s settings as command-line overrides (for a script under ``accelerate launch``)."""
    base = [
        f"run.output_dir={out_dir}", "run.num_threads=1", "run.log_with=null", "run.seed=3",
        f"data.bench_dir={data_dir}", f"data.train_manifest={data_dir}/train.jsonl",
        f"data.val_manifest={data_dir}/val.jsonl", "data.max_duration_s=1.0",
        f"noise.noise_dir={data_dir}/noise", "noise.train_types=[white,pink,music]",
        "noise.train_snr_min=-5", "noise.train_snr_max=5",
        "model.backbone=embedded", f"model.path={model_dir}",
        "train.num_generations=4", "train.prompts_per_device=2", "train.max_completion_length=4",
        "train.max_steps=2", "train.save_steps=1", "train.eval_steps=2", "train.eval_items=2",
        "train.learning_rate=1e-3", "train.warmup_ratio=0.0", "eval.batch_size=4", "eval.max_new_tokens=4",
    ]
    return base + list(overrides)


REPO = Path(__file__).resolve().parents[1]


def launch_two_processes(script: str, overrides: list[str], cwd: Path, timeout: float, what: str):
    """Run ``script`` (text) under ``accelerate launch`` with 2 CPU processes (gloo, configs/accelerate/
    ddp_cpu.yaml) and ``overrides`` as its arguments; a run past ``timeout`` seconds fails the test as a hang."""
    import os
    import signal
    import socket
    import subprocess
    import sys

    import pytest

    path = Path(cwd) / "launch_script.py"
    path.write_text(script)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1",
               TOKENIZERS_PARALLELISM="false", PYTHONPATH=str(REPO / "src"))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(REPO / "configs" / "accelerate" / "ddp_cpu.yaml"), "--num_processes", "2", "--main_process_port",
           str(port), str(path), *overrides]
    # its own process group: on a hang the launcher AND its workers are killed (a plain timeout kills
    # only the launcher and leaves the workers spinning)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(cwd),
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"2-process run hung ({what}): {(stderr or '')[-3000:]}")
    assert proc.returncode == 0, stderr[-4000:]
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


OPEN_QUESTIONS = ["Describe the sound.", "Is the tone high or low?"]


def make_unlabeled_dataset(root: Path, n_train: int = 8, n_val: int = 4) -> Path:
    """``make_dataset``'s clips and noise, but the manifests have no ``target`` and mix multiple-choice
    items (even index) with open-ended ones (odd index: no ``choices``)."""
    root = make_dataset(root, n_train, n_val)
    for split in ("train", "val"):
        rows = []
        for i, line in enumerate((root / f"{split}.jsonl").read_text().splitlines()):
            row = json.loads(line)
            del row["target"]
            if i % 2:
                del row["choices"]
                row["question"] = OPEN_QUESTIONS[(i // 2) % len(OPEN_QUESTIONS)]
            rows.append(row)
        (root / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root
