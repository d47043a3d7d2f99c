"""The reasoning format in training: the evidence-token mask, the evidence-grounding signal, consistency over
the whole trajectory, on hand-built completions and hand-computed values."""

from __future__ import annotations

import torch

from echodistill.config import load_config
from echodistill.models.small_tokenizer import build_small_tokenizer
from echodistill.train import rewards as R
from echodistill.train.signals import build_signals
from echodistill.train.spans import evidence_mask

CORPUS = ["<think>x ray</think><answer>X</answer>", "<think>piano, two notes</think><answer>piano</answer>",
          "x ray piano two notes X"] * 20


def _encode(tok, texts: list[str], eos: int) -> tuple[torch.Tensor, torch.Tensor]:
    rows = [tok(t, add_special_tokens=False).input_ids + [eos] for t in texts]
    T = max(map(len, rows)) + 1
    ids = torch.full((len(rows), T), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.long)
    for n, r in enumerate(rows):
        ids[n, :len(r)] = torch.tensor(r)
        mask[n, :len(r)] = 1
    return ids, mask


def test_evidence_mask_marks_the_think_span_only():
    tok = build_small_tokenizer(CORPUS, vocab_size=400)
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    texts = ["<think>x ray</think><answer>X</answer>", "<think></think><answer>X</answer>", "X",
             "<think>piano, two notes</think><answer>piano</answer>"]
    ids, mask = _encode(tok, texts, eos)
    m = evidence_mask(tok, ids, mask)
    assert m.dtype == mask.dtype and m.shape == ids.shape
    for n, text in enumerate(texts):
        marked = tok.decode(ids[n][m[n].bool()].tolist())
        if n in (1, 2):  # empty think / no think span: nothing to ground
            assert m[n].sum() == 0
        else:
            inner = text[len("<think>"):text.index("</think>")]
            assert inner in marked and "answer" not in marked  # the evidence, never the answer
    assert (m <= mask).all()  # never on padding


def test_evidence_grounding_and_whole_trajectory_consistency():
    cfg = load_config(overrides=["train.variant=echodistill-evidence", "data.response_format=reasoning"])
    signals = build_signals(cfg)
    assert signals.names == ["consistency", "evidence_grounding"] and signals.passes.silent

    class R_:  # the Rollout fields the two signals read
        pass

    r = R_()
    r.mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    r.answer_mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])  # every token but EOS: the whole trajectory
    r.evidence_mask = torch.tensor([[0, 1, 0, 0], [0, 0, 0, 0]])  # row 1 stated no evidence
    r.teacher_logp = torch.log(torch.tensor([[0.5, 0.8, 0.9, 0.9], [0.25, 0.5, 0.9, 1.0]]))
    r.noaudio_logp = torch.log(torch.tensor([[0.5, 0.1, 0.9, 0.9], [0.25, 0.5, 0.9, 1.0]]))
    r.teacher_argmax_match = None
    r.rewards = {}
    score = signals.teacher_score(r)
    c = torch.tensor([(0.5 + 0.8 + 0.9) / 3, (0.25 + 0.5) / 2])
    assert torch.allclose(r.rewards["consistency"], c)
    g0 = min(float(torch.log(torch.tensor(0.8 / 0.1))), 2.0) / 2.0  # clipped at k = 2
    assert torch.allclose(r.rewards["evidence_grounding"], torch.tensor([g0, 0.0]))
    assert torch.allclose(score, c + torch.tensor([g0, 0.0]))
    # the whole-completion grounding differs: it averages the answer and tag tokens in
    assert not torch.allclose(R.grounding(r.teacher_logp, r.noaudio_logp, r.mask, 2.0), r.rewards["evidence_grounding"])
