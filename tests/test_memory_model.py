"""benchmarks/memory_model.py: the shape of the model (its numbers are checked against measured
activations by `make bench`, row 9; here only what must hold by construction)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import memory_model as MM  # noqa: E402

LM7 = MM.LM(hidden=4096, intermediate=11008, layers=32, heads=32, kv_heads=32, vocab=156032)


def _act(layout, G, **kw):
    return MM.update_activation_bytes(LM7, B=4, G=G, L=850, T=16, s=2, lora_r=16, layout=layout, **kw)


def test_packed_prompt_part_is_constant_in_G_and_repeated_is_not():
    assert _act("packed", 4)["prompt"] == _act("packed", 16)["prompt"]
    assert _act("repeated", 16)["prompt"] == 4 * _act("repeated", 4)["prompt"]
    for G in (4, 8, 16):  # packed < repeated KV cache < repeated prompt
        assert _act("packed", G)["total"] < _act("kv_cache", G)["total"] < _act("repeated", G)["total"]
        assert _act("packed", G, checkpointing=True)["total"] < _act("packed", G)["total"] / 5


def test_7b_repeated_prompt_does_not_fit_80gb_and_packed_does():
    weights = 8.4e9 * 2
    assert weights + _act("repeated", 8)["total"] > 80 * 2 ** 30
    assert weights + _act("packed", 8)["total"] < 60 * 2 ** 30
    kv = MM.rollout_kv_bytes(LM7, B=4, G=8, L=850, T=16, s=2)
    assert abs(kv / 2 ** 30 - 13.5) < 0.1  # 32 layers x 2 x 4096 x 2 bytes x 32 rows x 866 tokens
