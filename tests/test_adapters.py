"""The adapter contract on tiny random Qwen2-Audio and Qwen2.5-Omni thinkers (models/base.py et al.)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from echodistill.config import ConfigError, ModelConfig
from echodistill.models import load_adapter
from echodistill.models.base import Completions, top_p_filter
from echodistill.models.small_tokenizer import SPECIAL_TOKENS, build_small_tokenizer

BACKBONES = ["qwen2_audio", "qwen2_5_omni", "qwen3_omni"]
PROMPTS = ["What is the spoken word?", "Which number is said? Answer with one choice."]


@pytest.fixture(params=BACKBONES)
def model_dir(request):
    fixture = {"qwen2_audio": "tiny_qwen2_audio_dir", "qwen2_5_omni": "tiny_qwen_omni_dir",
               "qwen3_omni": "tiny_qwen3_omni_dir"}[request.param]
    return request.param, request.getfixturevalue(fixture)


def _cfg(backbone, path, lora=False, **kw) -> ModelConfig:
    cfg = ModelConfig(backbone=backbone, path=str(path), **kw)
    cfg.lora.enabled = lora
    cfg.lora.r = 4
    cfg.lora.alpha = 8
    return cfg


def _perturb_lora(adapter, scale=0.5, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in adapter.model.named_parameters():
            if "lora_B" in name:
                p.add_(torch.randn(p.shape, generator=g) * scale)


def _perturb_all(adapter, scale=0.05, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter.trainable_parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)


# ------------------------------------------------------------------ small tokenizer
def test_small_tokenizer_specials_and_template():
    tok = build_small_tokenizer(["the answer is seven", "one two three"], vocab_size=300)
    ids = tok.convert_tokens_to_ids(SPECIAL_TOKENS)
    assert ids == sorted(ids) and len(set(ids)) == 6
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>" and tok.audio_token == "<|AUDIO|>"
    text = tok.apply_chat_template([{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": "hi"}]}],
                                   tokenize=False, add_generation_prompt=True)
    assert "<|audio_bos|><|AUDIO|><|audio_eos|>" in text and text.endswith("<|im_start|>assistant\n")
    enc = tok(text).input_ids
    assert tok.convert_tokens_to_ids("<|AUDIO|>") in enc  # specials are single tokens
    assert tok.decode(tok("héllo wörld 42").input_ids) == "héllo wörld 42"  # byte-level: any text round-trips


# ------------------------------------------------------------------ prompts
def test_build_inputs(model_dir, tiny_waveforms):
    backbone, path = model_dir
    a = load_adapter(_cfg(backbone, path), train=False)
    b = a.build_inputs(PROMPTS, tiny_waveforms)
    ids, am = b["input_ids"], b["attention_mask"]
    assert ids.shape[0] == 2 and b["input_features"].shape[0] == 2
    n_audio = (ids == a.audio_token_id).sum(-1)
    # 0.5 s and 1 s clips: 25 placeholders per second (Qwen3-Omni's encoder: 12.5 per second)
    assert n_audio.tolist() == ([7, 13] if backbone == "qwen3_omni" else [12, 25])
    assert am[:, -1].all() and (am[0] == 0).any()  # left padding: the shorter-audio prompt is padded on the left
    text = a.tokenizer.decode(ids[1][am[1].bool()])
    assert "You are a helpful assistant." in text and PROMPTS[1] in text and text.endswith("assistant\n")
    with pytest.raises(ValueError):
        a.build_inputs(PROMPTS, tiny_waveforms[:1])


# ------------------------------------------------------------------ generation and scoring
def test_generate_shapes_encoder_once_and_logprobs_match(model_dir, tiny_waveforms):
    backbone, path = model_dir
    a = load_adapter(_cfg(backbone, path, lora=True))
    _perturb_lora(a)
    b = a.build_inputs(PROMPTS, tiny_waveforms)
    calls0 = a.encoder_calls
    torch.manual_seed(0)
    c = a.generate(b, 4, max_new_tokens=12, do_sample=True, temperature=1.0, top_p=1.0)
    assert a.encoder_calls - calls0 == 1 and a.encoder_clips == 2  # once per clip, not once per sample
    assert isinstance(c, Completions) and c.ids.shape == (8, c.ids.shape[1]) and c.ids.shape[1] <= 12
    assert c.ids.dtype == torch.long and c.mask.shape == c.ids.shape and len(c.texts) == 8
    # mask: 1 up to and including the first EOS, 0 after
    for row, mrow in zip(c.ids.tolist(), c.mask.tolist()):
        eos_at = [i for i, t in enumerate(row) if t in a.eos_token_ids]
        n = eos_at[0] + 1 if eos_at else len(row)
        assert mrow == [1] * n + [0] * (len(row) - n)
    # scoring the sampled tokens reproduces the sampler's raw log-probs; the encoder is not rerun
    lp, ent = a.token_logprobs(b, c.ids, c.mask, num_samples=4, return_entropy=True)
    assert a.encoder_calls - calls0 == 1
    assert lp.shape == c.ids.shape and ent.shape == c.ids.shape
    assert torch.allclose(lp, c.logprobs, atol=1e-4)
    assert (ent[c.mask.bool()] > 0).all() and (lp[c.mask.bool()] <= 0).all()
    # gradients flow into LoRA only
    lp_g = a.token_logprobs(b, c.ids, c.mask, num_samples=4, with_grad=True)
    (lp_g.sum()).backward()
    grads = [p.grad for p in a.trainable_parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_scoring_matches_hf_forward_and_left_padding(model_dir, tiny_waveforms):
    backbone, path = model_dir
    a = load_adapter(_cfg(backbone, path), train=False)
    solo = a.build_inputs(PROMPTS[:1], tiny_waveforms[:1])  # unpadded
    c = a.generate(solo, 1, max_new_tokens=6, do_sample=False)
    lp_solo = a.token_logprobs(solo, c.ids, c.mask)
    full = torch.cat([solo["input_ids"], c.ids], 1)
    with torch.no_grad():
        out = a.hf(input_ids=full, attention_mask=torch.ones_like(full), input_features=solo["input_features"],
                   feature_attention_mask=solo["feature_attention_mask"])
    L = solo["input_ids"].shape[1]
    ref = out.logits[:, L - 1:-1].float().log_softmax(-1).gather(-1, c.ids[..., None]).squeeze(-1) * c.mask
    assert torch.allclose(lp_solo, ref, atol=1e-4)
    # the same prompt left-padded in a batch (with a longer-prompt neighbour) scores identically
    batch = a.build_inputs([PROMPTS[0], PROMPTS[1] + " Please think about it carefully."], tiny_waveforms[:1] * 2)
    assert (batch["attention_mask"][0] == 0).any()
    ids2 = torch.cat([c.ids, c.ids]); mask2 = torch.cat([c.mask, c.mask])
    lp_batch = a.token_logprobs(batch, ids2, mask2)
    assert torch.allclose(lp_batch[0], lp_solo[0], atol=1e-4)
    greedy = a.generate(batch, 1, max_new_tokens=6, do_sample=False)
    n = int(c.mask[0].sum())
    assert greedy.ids[0, :n].tolist() == c.ids[0, :n].tolist()


def test_special_tokens_never_sampled(model_dir, tiny_waveforms):
    backbone, path = model_dir
    a = load_adapter(_cfg(backbone, path), train=False)

    class Boost(torch.nn.Module):  # the placeholder and every other special become the likeliest tokens
        def __init__(self, head, ids):
            super().__init__()
            self.head, self.ids = head, torch.tensor(ids)

        def forward(self, h):
            out = self.head(h)
            return out.index_add(-1, self.ids, torch.full((*out.shape[:-1], len(self.ids)), 30.0))

    a.hf.lm_head = Boost(a.hf.lm_head, a.suppress_token_ids)
    b = a.build_inputs(PROMPTS, tiny_waveforms)
    probe = torch.full((2, 1), a.audio_token_id)
    assert a.token_logprobs(b, probe, torch.ones_like(probe)).exp().min() > 1e-3  # genuinely likely
    torch.manual_seed(0)
    c = a.generate(b, 8, max_new_tokens=10, do_sample=True, temperature=2.0)
    assert not set(c.ids[c.mask.bool()].tolist()) & set(a.suppress_token_ids)
    g = a.generate(b, 1, max_new_tokens=4, do_sample=False)
    assert not set(g.ids[g.mask.bool()].tolist()) & set(a.suppress_token_ids)
    assert a.audio_token_id in a.suppress_token_ids
    assert not set(a.eos_token_ids) & set(a.suppress_token_ids)


def test_top_p_filter_keeps_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = torch.isfinite(top_p_filter(logits, 0.7))
    assert kept.tolist() == [[True, True, False, False]]
    assert torch.isfinite(top_p_filter(logits, 0.01)).sum() == 1


# ------------------------------------------------------------------ teacher
def test_lora_teacher_is_base_model(model_dir, tiny_waveforms):
    backbone, path = model_dir
    base = load_adapter(_cfg(backbone, path), train=False)
    a = load_adapter(_cfg(backbone, path, lora=True))
    assert a.teacher_mode == "adapter_disabled"
    lora_names = [n for n, _ in a.hf.named_modules() if n.endswith("lora_A")]
    assert lora_names and all(n.startswith("model.language_model.") for n in lora_names)
    assert not any("audio_tower" in n for n, p in a.model.named_parameters() if p.requires_grad)
    _perturb_lora(a)
    b = a.build_inputs(PROMPTS, tiny_waveforms)
    c = a.generate(b, 2, max_new_tokens=6)
    student = a.token_logprobs(b, c.ids, c.mask, num_samples=2)
    with a.teacher() as t:
        teacher = t.token_logprobs(b, c.ids, c.mask, num_samples=2)
    ref = base.token_logprobs(base.build_inputs(PROMPTS, tiny_waveforms), c.ids, c.mask, num_samples=2)
    assert torch.allclose(teacher, ref, atol=1e-5)
    assert (student - teacher).abs().max() > 1e-3
    after = a.token_logprobs(b, c.ids, c.mask, num_samples=2)  # adapter re-enabled on exit
    assert torch.allclose(after, student, atol=1e-6)


def test_frozen_copy_teacher(tiny_qwen2_audio_dir, tiny_waveforms):
    path = tiny_qwen2_audio_dir
    base = load_adapter(_cfg("qwen2_audio", path), train=False)
    a = load_adapter(_cfg("qwen2_audio", path, teacher_mode="frozen_copy"))  # full fine-tuning
    assert a.teacher_mode == "frozen_copy" and a.peft is None
    assert not any(p.requires_grad for p in a.hf.model.audio_tower.parameters())  # freeze_audio_encoder
    assert any(p.requires_grad for p in a.hf.model.multi_modal_projector.parameters())
    _perturb_all(a)
    b = a.build_inputs(PROMPTS, tiny_waveforms)
    c = a.generate(b, 2, max_new_tokens=6)
    student = a.token_logprobs(b, c.ids, c.mask, num_samples=2)
    with a.teacher() as t:
        teacher = t.token_logprobs(b, c.ids, c.mask, num_samples=2)
    ref = base.token_logprobs(base.build_inputs(PROMPTS, tiny_waveforms), c.ids, c.mask, num_samples=2)
    assert torch.allclose(teacher, ref, atol=1e-5)
    assert (student - teacher).abs().max() > 1e-3
    # the trainable projector: the frozen encoder's output is cached on the batch, only the projector
    # reruns (with gradients when asked)
    calls = a.encoder_calls
    a.token_logprobs(b, c.ids, c.mask, num_samples=2)
    assert a.encoder_calls == calls
    a.token_logprobs(b, c.ids, c.mask, num_samples=2, with_grad=True).sum().backward()
    assert a.encoder_calls == calls
    assert all(p.grad is not None for p in a.hf.model.multi_modal_projector.parameters())


def test_adapter_disabled_without_lora_is_an_error(tiny_qwen2_audio_dir):
    with pytest.raises(ConfigError):
        load_adapter(_cfg("qwen2_audio", tiny_qwen2_audio_dir, teacher_mode="adapter_disabled"))


def test_lora_regex_outside_lm_is_rejected(tiny_qwen2_audio_dir):
    cfg = _cfg("qwen2_audio", tiny_qwen2_audio_dir, lora=True)
    cfg.lora.target_modules = r".*\.(q_proj|k_proj)"  # would also hit the audio tower
    with pytest.raises(ConfigError, match="outside the language model"):
        load_adapter(cfg)


# ------------------------------------------------------------------ save / load
def test_save_load_lora_round_trip(model_dir, tiny_waveforms, tmp_path):
    from peft import PeftModel

    backbone, path = model_dir
    a = load_adapter(_cfg(backbone, path, lora=True))
    _perturb_lora(a)
    b = a.build_inputs(PROMPTS, tiny_waveforms)
    c = a.generate(b, 2, max_new_tokens=6)
    before = a.token_logprobs(b, c.ids, c.mask, num_samples=2)
    out = a.save(tmp_path / "ckpt")
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    assert json.loads((out / "echodistill_model.json").read_text())["backbone"] == backbone
    # reload through the factory (config points at the base; the checkpoint carries the adapter)
    r = load_adapter(_cfg(backbone, path), path=out, train=False)
    assert r.peft is not None and not r.trainable_parameters()
    assert torch.allclose(r.token_logprobs(r.build_inputs(PROMPTS, tiny_waveforms), c.ids, c.mask, num_samples=2),
                          before, atol=1e-5)
    # and with plain peft
    hf = a.family.hf_class().from_pretrained(str(path))
    pm = PeftModel.from_pretrained(hf, str(out))
    w = [p for n, p in pm.named_parameters() if "lora_B" in n][0]
    w0 = [p for n, p in a.model.named_parameters() if "lora_B" in n][0]
    assert torch.equal(w, w0)


def test_save_load_full_round_trip(tiny_qwen2_audio_dir, tiny_waveforms, tmp_path):
    path = tiny_qwen2_audio_dir
    a = load_adapter(_cfg("qwen2_audio", path))
    _perturb_all(a)
    b = a.build_inputs(PROMPTS, tiny_waveforms)
    c = a.generate(b, 1, max_new_tokens=5)
    before = a.token_logprobs(b, c.ids, c.mask)
    out = a.save(tmp_path / "full")
    r = load_adapter(_cfg("qwen2_audio", "/nonexistent"), path=out, train=False)
    assert torch.allclose(r.token_logprobs(r.build_inputs(PROMPTS, tiny_waveforms), c.ids, c.mask), before, atol=1e-5)


def test_missing_model_dir_is_user_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist|no config.json"):
        load_adapter(_cfg("qwen2_audio", tmp_path / "nope"))


def test_lora_stage_after_lora_warmup_has_the_warmup_as_teacher(tiny_qwen2_audio_dir, tiny_waveforms, tmp_path):
    """GRPO from a LoRA warm-up: the teacher is the warmed-up model (adapter folded in), not the base."""
    path = tiny_qwen2_audio_dir
    warm = load_adapter(_cfg("qwen2_audio", path, lora=True))
    _perturb_lora(warm, seed=3)
    warm_dir = warm.save(tmp_path / "warmup")
    warm_eval = load_adapter(_cfg("qwen2_audio", path), path=warm_dir, train=False)

    rl = load_adapter(_cfg("qwen2_audio", path, lora=True), path=warm_dir, train=True)
    assert rl.teacher_mode == "adapter_disabled" and rl.merged_adapters == [str(warm_dir.resolve())]
    _perturb_lora(rl, seed=4)  # the new stage's own adapter moves away from the warm-up
    b = rl.build_inputs(PROMPTS, tiny_waveforms)
    c = rl.generate(b, 2, max_new_tokens=6)
    student = rl.token_logprobs(b, c.ids, c.mask, num_samples=2)
    with rl.teacher() as t:
        teacher = t.token_logprobs(b, c.ids, c.mask, num_samples=2)
    ref = warm_eval.token_logprobs(warm_eval.build_inputs(PROMPTS, tiny_waveforms), c.ids, c.mask, num_samples=2)
    assert torch.allclose(teacher, ref, atol=1e-5)
    assert (student - teacher).abs().max() > 1e-3

    # the saved stage re-applies the warm-up it was trained on
    final = load_adapter(_cfg("qwen2_audio", path), path=rl.save(tmp_path / "rl"), train=False)
    again = final.token_logprobs(final.build_inputs(PROMPTS, tiny_waveforms), c.ids, c.mask, num_samples=2)
    assert torch.allclose(again, student, atol=1e-5)


# ------------------------------------------------------------------ families and the teacher view
def test_every_backbone_name_resolves_to_a_registered_family():
    from echodistill.config import BACKBONES
    from echodistill.models.family import Family, family_for

    for name in BACKBONES:
        assert issubclass(family_for(name), Family)
    assert family_for("embedded") is family_for("qwen2_audio")  # the embedded default is a small Qwen2-Audio
    assert family_for("embedded").name == "qwen2_audio"  # the name a checkpoint records
    with pytest.raises(ConfigError, match="unknown"):
        family_for("no_such_backbone")


def test_teacher_is_a_read_only_view_and_the_student_stays_the_student(tiny_qwen2_audio_dir, tiny_waveforms, tmp_path):
    a = load_adapter(_cfg("qwen2_audio", tiny_qwen2_audio_dir, lora=True))
    _perturb_lora(a)
    b = a.build_inputs(PROMPTS, tiny_waveforms)
    c = a.generate(b, 2, max_new_tokens=6)
    student = a.token_logprobs(b, c.ids, c.mask, num_samples=2)
    with a.teacher() as t:
        assert t is not a and t.is_teacher and not a.is_teacher and t.features is a.features
        teacher = t.token_logprobs(b, c.ids, c.mask, num_samples=2)
        # the student computes as the student while its teacher view exists
        torch.testing.assert_close(a.token_logprobs(b, c.ids, c.mask, num_samples=2), student, rtol=0, atol=0)
        assert not t.trainable_parameters() and a.trainable_parameters()
        with pytest.raises(TypeError, match="read-only"):
            t.save(tmp_path / "nope")
    assert (student - teacher).abs().max() > 1e-3
    with pytest.raises(RuntimeError, match="as teacher"):  # the old idiom would score with the student
        with a.teacher():
            a.token_logprobs(b, c.ids, c.mask, num_samples=2)


# ------------------------------------------------------------------ shared-prefix generation (issue 22 item 7)
def test_shared_prefix_generation_equals_the_repeated_prompt(model_dir, tiny_waveforms):
    """Each prompt run once, its KV cache kept once (``share_kv``) or copied G times, gives the samples of
    the prompt repeated G times: equal greedy ids and log-probs, and equal draws at temperature 1 from
    the same seed."""
    backbone, path = model_dir
    a = load_adapter(_cfg(backbone, path), train=False)
    b = a.build_inputs(PROMPTS, tiny_waveforms)
    out = {}
    for layout in ((False, False), (True, False), (True, True)):  # (share_prefix, share_kv)
        a.share_prefix, a.share_kv = layout
        greedy = a.generate(b, 4, max_new_tokens=8, do_sample=False)
        sampled = a.generate(b, 4, max_new_tokens=8, do_sample=True, temperature=1.0,
                             generator=torch.Generator().manual_seed(0))
        out[layout] = (greedy, sampled)
    g0, s0 = out[(False, False)]
    assert len(set(map(tuple, s0.ids.tolist()))) > 1  # real sampling: the G draws differ
    for layout in ((True, False), (True, True)):
        g1, s1 = out[layout]
        assert torch.equal(g1.ids, g0.ids) and torch.equal(g1.mask, g0.mask) and g1.texts == g0.texts
        torch.testing.assert_close(g1.logprobs, g0.logprobs, rtol=0, atol=2e-6)
        assert torch.equal(s1.ids, s0.ids)
        torch.testing.assert_close(s1.logprobs, s0.logprobs, rtol=0, atol=2e-6)
