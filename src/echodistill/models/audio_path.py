"""Audio features of a batch under one HF model, through the feature-cache service: the cache policy.

* The whole audio path (encoder + projector) frozen: the projected features are kept for the batch
  (``FeatureCache.of_batch``), so scoring the batch after sampling does not encode again.
* Only the encoder frozen (the projector trains, ``has_separate_projector``): the encoder's output
  is kept for the batch instead and only the projector reruns (with gradients), so rollout and
  update share one encoder pass.
* The frozen teacher (a teacher view, not ``teacher_mode = self``): projected features per clip
  across steps (``FeatureCache.clips``, keyed by the audio path's weights fingerprint and the clip's
  content); on a miss with a separate projector the encoder output per clip comes from the same
  store (the warm-up's encodings), and only the projector runs.
* A frozen inference model with a disk folder (``cache.keeps_batches``: eval, predict): the whole
  batch's encoder output (the projected features where the family has no separate projector) is kept
  on disk under the batch's content, so evaluating the next checkpoint from the same base model on the
  same grid encodes nothing; per batch, not per clip, so the predictions keep every bit.
* ``cache_encoder_output = False`` (benchmarks): one encoder pass per call.

``m`` is the HF model computing (the student's, or the teacher's frozen copy); ``family`` the
backbone family (module paths, encoding); ``cache`` the service.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Optional

import torch
from torch import nn

from .family import Family
from .feature_cache import FeatureCache, batch_key


def _frozen(modules: list[nn.Module]) -> bool:
    return not any(p.requires_grad for mod in modules for p in mod.parameters())


def audio_features(family: Family, cache: FeatureCache, m: nn.Module, batch: Any, *, device: torch.device,
                   teacher: bool, cache_encoder_output: bool = True) -> torch.Tensor:
    """Projected audio features [n_placeholders, D] of ``batch`` under ``m`` (cached where frozen)."""
    frozen = _frozen(family.audio_modules(m))
    store = cache.of_batch(batch)
    key = ("projected", id(family.audio_modules(m)[-1]), str(device))
    if frozen and key in store:
        return store[key]
    clip_keys = cache.clip_keys(batch)
    n_clips = family.clip_count(batch)
    if frozen and cache_encoder_output and teacher and cache.clips.enabled and clip_keys is not None:
        feats = teacher_clip_features(family, cache, m, batch, clip_keys, device=device)
    elif frozen and cache_encoder_output and cache.keeps_batches and clip_keys is not None:
        feats = kept_batch_features(family, cache, m, batch, clip_keys, device=device)
    elif (not frozen and cache_encoder_output and family.has_separate_projector
          and _frozen([family.audio_encoder(m)])):
        hkey = ("hidden", id(family.audio_encoder(m)), str(device))
        if hkey not in store:
            with torch.no_grad():
                store[hkey] = family.encode_audio_hidden(m, batch)
            cache.encoder_clips += n_clips
        return family.project_audio(m, store[hkey])
    else:
        with torch.no_grad() if frozen else nullcontext():
            feats = family.encode_audio(m, batch)
        cache.encoder_clips += n_clips
    if frozen:
        store[key] = feats
    return feats


def teacher_clip_features(family: Family, cache: FeatureCache, m: nn.Module, batch: Any, clip_keys: list[str], *,
                          device: torch.device) -> torch.Tensor:
    """The frozen teacher's projected features, per clip, from ``cache.clips`` where it has them."""
    fp = cache.fingerprint(family.audio_modules(m))
    counts = placeholder_counts(family, m, batch)
    parts: list[Optional[torch.Tensor]] = [cache.clips.get((fp, k)) for k in clip_keys]
    missing = [i for i, p in enumerate(parts) if p is None]
    if missing:
        with torch.no_grad():
            if family.has_separate_projector:
                hidden = encoder_output(family, cache, m, batch, missing)
                feats = family.project_audio(m, torch.cat([h.to(device) for h in hidden]))
            else:
                feats = family.encode_audio(m, family.clip_features(batch, missing))
                cache.encoder_clips += len(missing)
        for i, part in zip(missing, feats.split([counts[i] for i in missing])):
            parts[i] = part
            cache.clips.put((fp, clip_keys[i]), part)
    return torch.cat([p.to(device) for p in parts])


def kept_batch_features(family: Family, cache: FeatureCache, m: nn.Module, batch: Any, clip_keys: list[str], *,
                        device: torch.device) -> torch.Tensor:
    """A frozen inference model's projected features [n_placeholders, D] of ``batch``, its encoder output
    ([n, H], or the projected features without a separate projector) read from or written to the disk
    layer under the whole batch's content key (``batch_key``): exact, as the same batch is the same
    computation. No gradients."""
    separate = family.has_separate_projector
    fp = (encoder_fingerprint(family, cache, m) if separate
          else "audio-" + cache.fingerprint(family.audio_modules(m)))
    key = (fp, batch_key(clip_keys, str(device)))
    with torch.no_grad():
        kept = cache.clips.get(key)
        if kept is None:
            kept = family.encode_audio_hidden(m, batch) if separate else family.encode_audio(m, batch)
            cache.encoder_clips += len(clip_keys)
            cache.clips.put(key, kept)
        kept = kept.to(device)
        return family.project_audio(m, kept) if separate else kept


def encoder_output(family: Family, cache: FeatureCache, m: nn.Module, batch: Any, rows: list[int],
                   pin: bool = False) -> list[torch.Tensor]:
    """The frozen encoder's output per clip (``has_separate_projector``): [n_i, H] for ``rows`` of ``batch``.

    From ``cache.clips`` where present, keyed by (the encoder's weights fingerprint, clip content):
    the warm-up's encodings (``pin``: kept for its every epoch) serve the RL teacher's clean clips
    (same frozen encoder, same clip), across processes with a disk folder. No gradients.
    """
    fp = encoder_fingerprint(family, cache, m)
    keys = cache.clip_keys(batch)
    out: list[Optional[torch.Tensor]] = [cache.clips.get((fp, keys[i])) for i in rows]
    todo = [j for j, h in enumerate(out) if h is None]
    if pin:  # found in the bounded layers (an earlier run's disk folder): keep them for every epoch too
        for j, h in enumerate(out):
            if h is not None:
                cache.clips.pin((fp, keys[rows[j]]), h)
    if todo:
        sel = [rows[j] for j in todo]
        counts = [placeholder_counts(family, m, batch)[i] for i in sel]
        with torch.no_grad():
            h = family.encode_audio_hidden(m, family.clip_features(batch, sel))
        cache.encoder_clips += len(todo)
        for j, part in zip(todo, h.split(counts)):
            out[j] = part
            cache.clips.put((fp, keys[rows[j]]), part, pin=pin)
    return out


def encoder_fingerprint(family: Family, cache: FeatureCache, m: nn.Module) -> str:
    """The key prefix of the frozen encoder's per-clip outputs in ``cache.clips``."""
    return "encoder-" + cache.fingerprint([family.audio_encoder(m)])


def placeholder_counts(family: Family, m: nn.Module, batch: Any) -> list[int]:
    """Audio placeholders per prompt of ``batch`` (= feature frames per clip)."""
    return (batch["input_ids"] == family.audio_token_id(m)).sum(-1).tolist()


__all__ = ["audio_features", "teacher_clip_features", "kept_batch_features", "encoder_output", "encoder_fingerprint",
           "placeholder_counts"]
