"""Gradient checkpointing of the decoder layers that keeps the shared-prompt KV cache working.

Why not transformers' own (``model.gradient_checkpointing_enable()``): it is gated on
``module.training`` (our model stays in ``eval()``: no dropout, so sampling and scoring see the same
function) and it drops the KV cache of every checkpointed layer (``cache=None``), which the
prompt-once update needs: the G completions run on top of the prompt's repeated cache.

How: each decoder layer's ``forward`` is wrapped in ``torch.utils.checkpoint`` (non-reentrant) when
gradients are on. A layer appends its keys/values to the cache during the forward; the backward's
recomputation would append them a second time, so the wrapper snapshots the cache layers' state
before the call and restores it before the recomputation: the replay sees exactly the cache the
original call saw (the cache only ever rebinds its tensors, ``torch.cat``, never writes in place).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


def _caches(args: tuple, kwargs: dict) -> list[Any]:
    from transformers.cache_utils import Cache

    return [v for v in list(args) + list(kwargs.values()) if isinstance(v, Cache)]


def _snapshot(caches: list[Any]) -> list[tuple[Any, dict]]:
    return [(layer, dict(layer.__dict__)) for c in caches for layer in c.layers]


def _restore(snap: list[tuple[Any, dict]]) -> None:
    for layer, state in snap:
        layer.__dict__.update(state)


def wrap_layers(layers: nn.ModuleList, enabled: Callable[[], bool]) -> None:
    """Checkpoint every layer of ``layers`` whenever ``enabled()`` and gradients are on (idempotent).

    The class's ``forward`` is looked up at call time, so wrappers installed on the class (hooks,
    counters in tests) run inside the checkpoint and are replayed with it.
    """
    for layer in layers:
        if getattr(layer, "_echodistill_ckpt", False):
            continue

        def forward(*args, _layer=layer, **kwargs):
            fwd = type(_layer).forward
            if not (enabled() and torch.is_grad_enabled()):
                return fwd(_layer, *args, **kwargs)
            snap = _snapshot(_caches(args, kwargs))

            def run(*a, **k):
                _restore(snap)  # the recomputation sees the cache as the original call did
                return fwd(_layer, *a, **k)

            return checkpoint(run, *args, use_reentrant=False, **kwargs)

        layer.forward = forward
        layer._echodistill_ckpt = True


__all__ = ["wrap_layers"]
