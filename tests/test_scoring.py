"""The teacher's cheap passes equal the plain ones (train/scoring.py, issue 11).

Scoring each item's distinct completions once gives the same log-probs as scoring all G; the greedy
answer read off the scoring pass is the one ``generate`` decodes (same tokens, choice, confidence,
logits), for items covered by a sample on the greedy path and for the items decoded as a fallback.
"""

from __future__ import annotations

import numpy as np
import torch
from omegaconf import OmegaConf

from echodistill.config import ModelConfig
from echodistill.data.manifest import Item
from echodistill.models import load_adapter
from echodistill.train.data import Example
from echodistill.train.scoring import distinct_completions, distinct_logits, distinct_logprobs, greedy_from_scores
from echodistill.train.teacher import teacher_answer as _teacher_answer
from echodistill.train.trainer import Rollout


def teacher_answer(a, r, cfg, **kw):
    return _teacher_answer(a, r, cfg.train.max_completion_length, **kw)

G, T = 4, 4
TOL = dict(rtol=1e-5, atol=1e-5)


def test_distinct_completions_ignore_pads_and_map_back():
    ids = torch.tensor([[5, 6, 2, 0], [5, 6, 2, 9], [7, 2, 0, 0], [5, 6, 2, 0],  # item 0: 2 distinct
                        [1, 1, 1, 1], [1, 1, 1, 2], [3, 2, 0, 0], [4, 2, 0, 0]])  # item 1: 4 distinct
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 0],
                         [1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0]])
    d = distinct_completions(ids, mask, G)
    assert d.per_item == 4 and d.ids.shape == (8, 4)
    assert int(d.mask.view(2, 4, 4)[0].any(-1).sum()) == 2  # two placeholders (all-0 mask) for item 0
    torch.testing.assert_close(d.ids[d.inverse] * mask, ids * mask)
    torch.testing.assert_close(d.mask[d.inverse], mask)
    assert len(set(d.inverse[:4].tolist())) == 2 and d.inverse[0] == d.inverse[1] == d.inverse[3]


def _setup(tiny_qwen2_audio_dir):
    torch.manual_seed(0)
    a = load_adapter(ModelConfig(backbone="qwen2_audio", path=str(tiny_qwen2_audio_dir)), train=True)
    rng = np.random.default_rng(0)
    choices = ["alpha", "bravo", "charlie"]
    examples = []
    for i, sec in enumerate((0.5, 1.0, 0.75)):
        clean = (0.1 * rng.standard_normal(int(16000 * sec))).astype(np.float32)
        item = Item(id=f"x{i}", audio="", question=f"Which word? ({i})", choices=choices, target=choices[0])
        examples.append(Example(item, f"Which word is spoken? Item {i}.", choices, 0, clean, clean + 0.01, "white", 0.0))
    clean_batch = a.build_inputs([e.prompt for e in examples], [e.clean for e in examples])
    return a, examples, clean_batch


def test_greedy_answer_read_off_the_scoring_pass_equals_decoding(tiny_qwen2_audio_dir):
    a, examples, clean = _setup(tiny_qwen2_audio_dir)
    cfg = OmegaConf.create({"train": {"max_completion_length": T, "num_generations": G}})
    with a.teacher() as t:
        y = t.generate(clean, 1, max_new_tokens=T, do_sample=False)
        # candidates: item 0 all on the greedy path; item 1 one on it among others sharing only its
        # first token; item 2 none on it (decoded as a fallback)
        g = torch.Generator().manual_seed(3)
        ids = torch.randint(5, 50, (3 * G, y.ids.shape[1]), generator=g)
        mask = torch.ones_like(ids)
        ids[0:G] = y.ids[0]
        mask[0:G] = y.mask[0]
        ids[G] = y.ids[1]
        mask[G] = y.mask[1]
        ids[G + 1:2 * G, 0] = y.ids[1, 0]
        ids[2 * G:, 0] = (y.ids[2, 0] + 1) % 50 + 5
        r = Rollout(examples, None, ids, mask, mask, [""] * len(ids), torch.zeros(ids.shape), clean_batch=clean)
        plain = teacher_answer(t, r, cfg, with_logits=True)
        scored = distinct_logits(t, clean, ids, mask, G)
        assert len(set(scored[1].inverse[:G].tolist())) == 1  # item 0: one distinct candidate
        fast = teacher_answer(t, r, cfg, with_logits=True, scored=scored)
        suppress = torch.tensor([i for i in t.suppress_token_ids if i < scored[0].shape[-1]])
        path = greedy_from_scores(*scored, eos_ids=t.eos_token_ids, suppress=suppress, pad_id=t.pad_token_id,
                                  max_new_tokens=T)
    assert path.covered.tolist() == [True, True, False]  # read off for items 0, 1; item 2 decoded
    torch.testing.assert_close(fast.ids, plain.ids)
    torch.testing.assert_close(fast.mask, plain.mask)
    assert fast.choice == plain.choice
    torch.testing.assert_close(fast.confidence, plain.confidence, **TOL)
    m = plain.mask.bool()
    torch.testing.assert_close(fast.logits[m], plain.logits[m], **TOL)


def test_distinct_logprobs_equal_scoring_every_row(tiny_qwen2_audio_dir):
    a, examples, clean = _setup(tiny_qwen2_audio_dir)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 50, (3 * G, T), generator=g)
    ids[1], ids[2] = ids[0], ids[0]  # repeats within item 0
    mask = torch.ones_like(ids)
    mask[5, 2:] = 0
    with a.teacher() as t:
        full = t.token_logprobs(clean, ids, mask, num_samples=G)
        once = distinct_logprobs(t, clean, ids, mask, G)
    torch.testing.assert_close(once, full, **TOL)


def test_greedy_path_stops_at_eos_skips_suppressed_and_flags_uncovered_items():
    """Synthetic logits: V = 6, EOS = 5, token 4 suppressed, pad 0, one completion per item."""
    ids = torch.tensor([[2, 5, 0], [3, 1, 1], [1, 2, 2]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 1, 1]])
    d = distinct_completions(ids, mask, 1)
    prefer = {(0, 0): 2, (0, 1): 5, (1, 0): 3, (1, 1): 1, (1, 2): 1, (2, 0): 2}
    logits = torch.zeros(3, 3, 6)
    for (b, t), tok in prefer.items():
        logits[b, t, tok] = 2.0
    logits[1, 0, 4] = 9.0  # suppressed: never chosen although largest
    path = greedy_from_scores(logits, d, eos_ids=[5], suppress=torch.tensor([4]), pad_id=0, max_new_tokens=3)
    assert path.covered.tolist() == [True, True, False]  # item 2's greedy token 2 starts no completion
    longer = greedy_from_scores(logits, d, eos_ids=[5], suppress=torch.tensor([4]), pad_id=0, max_new_tokens=5)
    assert longer.covered.tolist() == [True, False, False]  # item 1 would decode past the 3 scored tokens
    assert path.ids[:2].tolist() == [[2, 5, 0], [3, 1, 1]] and path.mask[:2].tolist() == [[1, 1, 0], [1, 1, 1]]
    torch.testing.assert_close(path.logprobs[0, :2], logits[0, :2].log_softmax(-1)[[0, 1], [2, 5]])
    assert float(path.logprobs[0, 2]) == 0.0


def _rescue_rollout(a, examples, clean):
    """Item 0 mixed, item 1 all wrong, item 2 all right (accuracy from the texts)."""
    from echodistill.config import load_config

    cfg = load_config(None, ["train.variant=echodistill-rescue", f"train.num_generations={G}",
                             f"train.max_completion_length={T}"])
    texts = ["alpha", "bravo", "bravo", "alpha"] + ["charlie"] * G + ["alpha"] * G
    ids = torch.randint(5, 50, (3 * G, T), generator=torch.Generator().manual_seed(4))
    mask = torch.ones_like(ids)
    noisy = a.build_inputs([e.prompt for e in examples], [e.noisy for e in examples])
    r = Rollout(examples, noisy, ids, mask, mask, texts, torch.zeros(ids.shape), clean_batch=clean)
    return r, cfg


def test_rescue_answers_only_its_all_wrong_items(tiny_qwen2_audio_dir):
    from echodistill.train.signals import build_signals
    from echodistill.train.trainer import teacher_phase

    a, examples, clean = _setup(tiny_qwen2_audio_dir)
    r, cfg = _rescue_rollout(a, examples, clean)
    signals = build_signals(cfg)
    labels = torch.tensor([[1., 0., 0., 1.], [0.] * G, [1.] * G])  # accuracy of the texts above: kinds of group
    from echodistill.train.signals import group_kinds
    assert signals.answer_scope(lambda: group_kinds(labels)) == [1]
    teacher_phase(a, r, signals, cfg.train)
    with a.teacher() as t:
        full = teacher_answer(t, r, cfg, with_logits=True)
    ta = r.teacher_answer
    assert ta.answered.tolist() == [False, True, False]
    assert ta.mask[[0, 2]].sum() == 0 and ta.confidence[[0, 2]].tolist() == [0.0, 0.0]
    n = int(ta.mask[1].sum())
    assert ta.ids[1, :n].tolist() == full.ids[1, :n].tolist() and n == int(full.mask[1].sum())
    torch.testing.assert_close(ta.logits[1, :n], full.logits[1, :n], **TOL)
    torch.testing.assert_close(ta.confidence[1], full.confidence[1], **TOL)


def test_kd_on_selected_items_equals_masking_the_whole_batch(tiny_qwen2_audio_dir):
    from echodistill.train import grpo
    from echodistill.train.signals.distill import answer_kd

    a, examples, clean = _setup(tiny_qwen2_audio_dir)
    r, cfg = _rescue_rollout(a, examples, clean)
    with a.teacher() as t:
        r.teacher_answer = teacher_answer(t, r, cfg, with_logits=True)
    params = a.trainable_parameters()
    ta, rows = r.teacher_answer, torch.tensor([False, True, False])

    def loss_and_grads(fn):
        for p in params:
            p.grad = None
        loss = fn()
        loss.backward()
        return loss.detach(), [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]

    def whole_batch():  # the former computation: every item through the student, the others masked out
        student = a.completion_logits(r.noisy_batch, ta.ids, ta.mask, num_samples=1, with_grad=True)
        return grpo.kd_loss(ta.logits, student, ta.mask * rows.unsqueeze(1), num_items=3, max_completion_length=T)

    ref, ref_g = loss_and_grads(whole_batch)
    got, got_g = loss_and_grads(lambda: answer_kd(a, r, rows, T))
    assert float(ref) > 0
    torch.testing.assert_close(got, ref, **TOL)
    for x, y in zip(got_g, ref_g):
        torch.testing.assert_close(x, y, **TOL)
    none, none_g = loss_and_grads(lambda: answer_kd(a, r, torch.zeros(3, dtype=torch.bool), T))
    assert float(none) == 0.0 and all(float(g.abs().max()) == 0.0 for g in none_g)
