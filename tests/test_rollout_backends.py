"""The vLLM rollout backend's contract, against a real local HTTP server (stdlib, 127.0.0.1) that wraps
our own sampler and speaks vLLM's OpenAI-compatible protocol (``train/rollout_server.py``):

* the same ids as the built-in sampler under the same seed, log-probs recomputed by the trainer
  within 1e-4 of the sampler's, weights pushed to the server after they change (full and LoRA);
* a whole ``echodistill train`` run through the server writes the same metrics.jsonl as the built-in
  backend (timings aside) and ends with the same weights.

A real vLLM server cannot run here (no GPU): docs/scale-out.md says how to start one.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from echodistill.audio.noise import NoiseBank
from echodistill.data.manifest import read_manifest
from echodistill.models import load_adapter
from echodistill.train import trainer as T
from echodistill.train.data import load_examples
from echodistill.train.rollout_backends import (VLLMServerBackend, b64_to_wav, close_backends, messages_to_prompt,
                                                openai_messages, wav_to_b64, weights_version)
from echodistill.train.rollout_server import SamplerServer

from train_helpers import make_dataset, read_metrics, tiny_config


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("rollout_data"), n_train=4, n_val=2)


def test_audio_and_messages_round_trip_exactly():
    wav = (0.3 * np.random.default_rng(0).standard_normal(12345)).astype(np.float32)
    assert np.array_equal(b64_to_wav(wav_to_b64(wav)), wav)  # float WAV: the server hears our exact samples

    class M:
        def chat_messages(self, prompt):
            return [{"role": "system", "content": "sys"},
                    {"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": prompt}]}]

    system, text, back = messages_to_prompt(openai_messages(M(), "Which tone?", wav))
    assert (system, text) == ("sys", "Which tone?") and np.array_equal(back, wav)


def _examples(cfg, n):
    bank = NoiseBank(cfg.noise.noise_dir, [])
    items = read_manifest(cfg.data.train_manifest)[:n]
    examples, bad = load_examples(items, cfg, bank, position=0)
    assert not bad
    return examples


@pytest.mark.parametrize("lora", [False, True])
def test_server_rollout_equals_builtin_and_syncs_weights(data_dir, tiny_qwen2_audio_dir, tmp_path, lora):
    extra = ("model.lora.enabled=true", "model.lora.r=4", "model.lora.alpha=8") if lora else ()
    cfg = tiny_config(data_dir, tiny_qwen2_audio_dir, tmp_path / "run", "train.max_completion_length=6", *extra)
    torch.manual_seed(0)
    student = load_adapter(cfg.model, train=True)
    served = load_adapter(cfg.model, train=True)  # the server's own copy: it only learns weights by sync
    with torch.no_grad():  # make the copies differ: only a weight sync can make the server sample like us
        for p in served.trainable_parameters():
            p.add_(0.05 * torch.randn_like(p))
    ex = _examples(cfg, 1)
    with SamplerServer(served, sync_dir=tmp_path / "sync") as server:
        backend = VLLMServerBackend(server.url, sync_dir=str(tmp_path / "sync"), api_key=server.api_key)
        opt = torch.optim.SGD(student.trainable_parameters(), lr=1.0)
        for round_ in range(2):
            builtin = T.rollout(student, ex, cfg, T._generator(student.device, 3, "rollout", round_, 0))
            batch = student.build_inputs([e.prompt for e in ex], [e.noisy for e in ex])
            comp = backend.generate(student, batch, [e.prompt for e in ex], [e.noisy for e in ex], 4,
                                    max_new_tokens=6, temperature=1.0, top_p=1.0,
                                    generator=T._generator(student.device, 3, "rollout", round_, 0))
            assert torch.equal(comp.ids, builtin.ids) and torch.equal(comp.mask, builtin.mask)
            assert comp.texts == builtin.texts
            gap = float((comp.logprobs - builtin.behaviour_logp).abs().max())
            assert gap <= 1e-4, gap  # recomputed by the trainer vs the sampler's own
            assert backend.last_logprob_gap <= 1e-4
            assert server.weight_loads == round_ + 1  # synced once per change of the student's weights
            for p in student.trainable_parameters():  # an optimizer step: the next rollout must see it
                p.grad = 0.02 * torch.randn_like(p)
            opt.step()
        v = weights_version(student)
        backend.generate(student, batch, [ex[0].prompt], [ex[0].noisy], 4, max_new_tokens=6, temperature=1.0,
                         top_p=1.0, generator=T._generator(student.device, 3, "rollout", 9, 0))
        backend.generate(student, batch, [ex[0].prompt], [ex[0].noisy], 4, max_new_tokens=6, temperature=1.0,
                         top_p=1.0, generator=T._generator(student.device, 3, "rollout", 9, 0))
        assert weights_version(student) == v and server.weight_loads == 3  # reads never trigger a sync
        if lora:
            assert list(server.adapters) == ["echodistill-student-v3"]  # older versions unloaded
            assert sorted(p.name for p in (tmp_path / "sync").iterdir()) == ["v3"]


@pytest.mark.slow
def test_train_through_the_server_writes_the_same_metrics(data_dir, tiny_qwen2_audio_dir, tmp_path):
    args = ("train.prompts_per_device=1", "train.max_steps=2", "train.eval_steps=2", "model.lora.enabled=true",
            "model.lora.r=4", "model.lora.alpha=8", "train.learning_rate=5e-2")
    a = tmp_path / "builtin"
    T.run_train(tiny_config(data_dir, tiny_qwen2_audio_dir, a, *args))

    b = tmp_path / "vllm"
    cfg = tiny_config(data_dir, tiny_qwen2_audio_dir, b, *args)
    torch.manual_seed(1)
    with SamplerServer(load_adapter(cfg.model, train=True), sync_dir=b / "vllm_sync") as server:
        cfg.train.rollout_backend = "vllm"
        cfg.train.vllm_server_url = server.url
        cfg.train.vllm_api_key = server.api_key
        try:
            T.run_train(cfg)
        finally:
            close_backends()
        assert server.requests == 2 and server.weight_loads == 2  # one item per step; synced before each step

    def rows(out):
        return [{k: v for k, v in r.items() if not k.startswith("time_")} for r in read_metrics(out)]

    ra, rb = rows(a), rows(b)
    assert [r["step"] for r in ra] == [1, 2] and ra == rb
    from safetensors.torch import load_file
    wa = load_file(str(a / "final" / "adapter_model.safetensors"))
    wb = load_file(str(b / "final" / "adapter_model.safetensors"))
    assert set(wa) == set(wb)
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) <= 1e-6
