"""The teacher's clean-clip features: keyed by content and weights, bounded, reused across runs (disk)."""

from __future__ import annotations

import numpy as np
import torch

from echodistill.config import ModelConfig
from echodistill.models import load_adapter
from echodistill.models.feature_cache import ClipFeatureCache

PROMPTS = ["What is the spoken word?", "Which number is said?"]


def _waves(seed=0):
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (8000, 16000)]


def _load(path, lora, train=True, **kw):
    cfg = ModelConfig(backbone="qwen2_audio", path=str(path), **kw)
    cfg.lora.enabled, cfg.lora.r, cfg.lora.alpha = lora, 4, 8
    torch.manual_seed(0)
    return load_adapter(cfg, train=train)


def _teacher_scores(a, waves):
    b = a.build_inputs(PROMPTS, waves)
    ids = torch.full((4, 3), a.eos_token_ids[0])
    with a.teacher() as t:
        return t.token_logprobs(b, ids, torch.ones_like(ids), num_samples=2)


def test_a_later_run_has_no_first_epoch_miss(tiny_qwen2_audio_dir, tmp_path):
    for lora in (True, False):  # adapter-disabled teacher, frozen-copy teacher
        disk = tmp_path / f"feats{lora}"
        first = _load(tiny_qwen2_audio_dir, lora, feature_cache_dir=str(disk))
        c0 = first.encoder_clips
        ref = _teacher_scores(first, _waves())
        assert first.encoder_clips - c0 == 2
        again = _teacher_scores(first, _waves())  # the next epoch, same process: memory hit
        assert first.encoder_clips - c0 == 2 and torch.equal(again, ref)
        later = _load(tiny_qwen2_audio_dir, lora, feature_cache_dir=str(disk))  # another run, same model
        c1 = later.encoder_clips
        out = _teacher_scores(later, _waves())
        assert later.encoder_clips == c1 and later.features.clips.disk_hits == 2  # no encoder pass in epoch 1
        torch.testing.assert_close(out, ref, rtol=0, atol=0)
        new_clip = [_waves()[0], _waves(seed=5)[1]]  # keyed by content: one clip changed, one miss
        _teacher_scores(later, new_clip)
        assert later.encoder_clips - c1 == 1


def test_the_warmup_encodings_serve_the_teacher(tiny_qwen2_audio_dir, tmp_path):
    """The warm-up (projector trains) encodes the clean clips once; the RL run after it, whose teacher is
    the warmed-up model (another projector), runs only the projector on its first epoch."""
    warm = _load(tiny_qwen2_audio_dir, False, feature_cache_dir=str(tmp_path))
    b = warm.build_inputs(PROMPTS, _waves())
    hidden = warm.encoder_output(b, [0, 1])  # what sft.prepare_rows does for the clips it trains on
    assert warm.encoder_clips == 2 and [h.shape[0] for h in hidden] == [12, 25]
    rl = _load(tiny_qwen2_audio_dir, False, feature_cache_dir=str(tmp_path))
    with torch.no_grad():
        rl.hf.model.multi_modal_projector.linear.weight.mul_(1.5)  # the warmed-up projector
        rl.teacher_model.model.multi_modal_projector.linear.weight.mul_(1.5)
    c0 = rl.encoder_clips
    got = _teacher_scores(rl, _waves())
    assert rl.encoder_clips == c0  # no encoder pass: the warm-up's encodings, this teacher's projector
    rl.features.clips.max_mb, rl.features.clips.disk_dir = 0, None  # the same scores when encoding afresh
    torch.testing.assert_close(_teacher_scores(rl, _waves()), got, rtol=0, atol=1e-6)
    assert rl.encoder_clips == c0 + 2


def test_other_weights_do_not_hit(tiny_qwen2_audio_dir, tmp_path):
    a = _load(tiny_qwen2_audio_dir, True, feature_cache_dir=str(tmp_path))
    ref = _teacher_scores(a, _waves())
    b = _load(tiny_qwen2_audio_dir, True, feature_cache_dir=str(tmp_path))
    with torch.no_grad():
        b.hf.model.multi_modal_projector.linear.weight.mul_(1.5)  # another projector: its own features
    c0 = b.encoder_clips
    assert not torch.allclose(_teacher_scores(b, _waves()), ref)
    assert b.encoder_clips == c0  # ... from the same encoder's cached output
    c = _load(tiny_qwen2_audio_dir, True, feature_cache_dir=str(tmp_path))
    with torch.no_grad():
        c.family.audio_encoder(c.hf).layer_norm.weight.mul_(1.1)  # another encoder: nothing cached applies
    c0 = c.encoder_clips
    _teacher_scores(c, _waves())
    assert c.encoder_clips == c0 + 2


def test_bounds_memory_and_disk(tmp_path):
    cache = ClipFeatureCache(max_mb=3 * 4096 / 2 ** 20, disk_dir=tmp_path, disk_mb=5 * 4096 / 2 ** 20)
    for i in range(8):
        cache.put(("fp", f"clip{i}"), torch.full((1024,), float(i)))  # 4 KiB each
    assert len(cache) == 3  # memory: the 3 most recent
    files = list(tmp_path.rglob("*.safetensors"))
    assert 4 <= len(files) <= 5 and sum(f.stat().st_size for f in files) <= 5 * 4096 + 5 * 200
    cache.clear()
    assert cache.get(("fp", "clip7")) is not None and cache.get(("fp", "clip0")) is None  # oldest evicted
    # a torn file is a miss, not a crash
    next(tmp_path.rglob("*clip7*.safetensors")).write_bytes(b"torn")
    cache.clear()
    assert cache.get(("fp", "clip7")) is None and cache.misses == 2
    assert not ClipFeatureCache(max_mb=0).enabled


def test_batch_features_live_in_the_service_not_on_the_batch(tiny_qwen2_audio_dir):
    """Sampling then scoring one batch encodes its clips once; the batch object carries nothing of
    ours, and its entry in the service ends when the batch is collected."""
    import gc

    a = _load(tiny_qwen2_audio_dir, True)  # LoRA: the whole audio path is frozen
    b = a.build_inputs(PROMPTS, _waves())
    attrs = set(vars(b))
    held, c0 = a.features.batches_held, a.encoder_clips
    c = a.generate(b, 2, max_new_tokens=3)
    a.token_logprobs(b, c.ids, c.mask, num_samples=2)
    assert a.encoder_clips - c0 == 2 and set(vars(b)) == attrs and a.features.clip_keys(b) is not None
    del b
    gc.collect()
    assert a.features.batches_held == held - 1


def _batch_files(folder):
    return sorted(p.name for p in folder.rglob("batch-*.safetensors"))


def test_an_inference_model_keeps_whole_batches_on_disk(tiny_qwen2_audio_dir, tmp_path):
    """Evaluating a second checkpoint of the same base on the same batches encodes nothing, and its
    features are the uncached ones bit for bit; another batch of the same clips is another entry."""
    waves = _waves() + _waves(seed=3)
    prompts = PROMPTS * 2
    plain = _load(tiny_qwen2_audio_dir, False, train=False)  # no disk folder: the reference computation
    ref = plain.audio_features(plain.build_inputs(prompts, waves))
    first = _load(tiny_qwen2_audio_dir, False, train=False, feature_cache_dir=str(tmp_path))
    assert torch.equal(first.audio_features(first.build_inputs(prompts, waves)), ref)
    assert len(_batch_files(tmp_path)) == 1
    later = _load(tiny_qwen2_audio_dir, False, train=False, feature_cache_dir=str(tmp_path))  # next checkpoint
    c0 = later.encoder_calls
    assert torch.equal(later.audio_features(later.build_inputs(prompts, waves)), ref)
    assert later.encoder_calls == c0 and later.features.clips.disk_hits == 1
    later.audio_features(later.build_inputs(prompts[:2], waves[:2]))  # a sub-batch: its own entry
    assert later.encoder_calls == c0 + 1 and len(_batch_files(tmp_path)) == 2
    # a training run's batches never recur: its disk folder holds the teacher's clips only
    trainee = _load(tiny_qwen2_audio_dir, True, feature_cache_dir=str(tmp_path / "train"))
    trainee.audio_features(trainee.build_inputs(prompts, waves))
    assert _batch_files(tmp_path / "train") == []
