"""Shared fixtures: offline hub, one CPU thread, tiny random models built once per session, a tiny
training data dir per module, and the test helpers (``train_helpers``: the one tone maker, the one
metrics.jsonl reader) as fixtures.

Tiers: ``make test-fast`` runs every test not marked ``slow`` (unit and contract tests, seconds);
``make test`` (CI) runs everything. Mark a test ``@pytest.mark.slow`` when it trains a model for real,
launches two processes, opens Chromium or runs the demo."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import pytest
import torch

import train_helpers

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A tiny training set-up (train_helpers.make_dataset: 8 train and 4 val tone items, a noise dir),
    one per test module (a module's trainings may write next to it)."""
    return train_helpers.make_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture
def tone():
    """The one test tone maker (``train_helpers.tone``): ``tone(freq, seconds, sr, seed, n=, amp=, noise=,
    harmonics=, channels=)``."""
    return train_helpers.tone


@pytest.fixture
def read_metrics():
    """A run folder's metrics.jsonl rows (``train_helpers.read_metrics``)."""
    return train_helpers.read_metrics


@pytest.fixture(scope="session")
def tiny_qwen2_audio_dir(tmp_path_factory):
    """A tiny random Qwen2-Audio model + processor directory (1 s window, 25 audio tokens per second)."""
    from echodistill.models.tiny import build_tiny_qwen2_audio

    return build_tiny_qwen2_audio(tmp_path_factory.mktemp("tiny_qwen2_audio"), seed=0, window_s=1.0)


@pytest.fixture(scope="session")
def tiny_qwen_omni_dir(tmp_path_factory):
    """A tiny random Qwen2.5-Omni thinker + audio-only processor directory."""
    from echodistill.models.tiny import build_tiny_qwen_omni

    return build_tiny_qwen_omni(tmp_path_factory.mktemp("tiny_qwen_omni"), seed=0, window_s=1.0)


@pytest.fixture(scope="session")
def tiny_qwen3_omni_dir(tmp_path_factory):
    """A tiny random Qwen3-Omni-MoE thinker (4 experts) + audio-only processor directory."""
    from echodistill.models.tiny import build_tiny_qwen3_omni

    return build_tiny_qwen3_omni(tmp_path_factory.mktemp("tiny_qwen3_omni"), seed=0, window_s=1.0)


@pytest.fixture
def tiny_waveforms():
    """Two clips of different lengths (0.5 s and 1 s) at 16 kHz, fixed seed."""
    rng = np.random.default_rng(0)
    return [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (8000, 16000)]
