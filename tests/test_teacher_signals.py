"""Where the clean teacher enters the update (issue 13), on hand-computed groups.

Three groups of G = 4 samples: a mixed group (2 right, 2 wrong), an all-wrong group whose teacher
scores barely differ, and an all-right group. Each test states what the advantages become.
"""

from types import SimpleNamespace

import pytest
import torch

from echodistill.config import load_config
from echodistill.data.labels import split_labeled, write_label_sheet
from echodistill.data.manifest import Item
from echodistill.train import grpo, rewards as R
from echodistill.train.signals import Passes, build_signals
from echodistill.train.teacher import TeacherAnswer
from echodistill.train.trainer import Rollout, compute_advantages as _compute_advantages

from train_helpers import read_metrics

G = 4
ACC = torch.tensor([[1., 1., 0., 0.],  # mixed
                    [0., 0., 0., 0.],  # all wrong
                    [1., 1., 1., 1.]])  # all right
TEACHER = torch.tensor([[0.90, 0.80, 0.30, 0.20],
                        [0.30, 0.31, 0.29, 0.30],
                        [0.95, 0.96, 0.95, 0.94]])
# batch RMS of the group-centred teacher scores: sqrt((.35^2+.25^2+.25^2+.35^2 + 4 * .01^2) / 12)
RMS = ((0.35 ** 2 * 2 + 0.25 ** 2 * 2 + 4 * 0.01 ** 2) / 12) ** 0.5


def _cfg(*overrides):
    return load_config(None, ["noise.train_snr_min=-5", "noise.train_snr_max=5", f"train.num_generations={G}",
                              *overrides])


def compute_advantages(r, cfg):
    _compute_advantages(r, build_signals(cfg), cfg.train)


def reward_targets(r, cfg):
    targets = build_signals(cfg).targets(r)
    return [e.target for e in r.examples] if targets is None else targets


def _rollout(cfg, acc=ACC, teacher=TEACHER, snr=(-5.0, -5.0, -5.0), answer=None):
    B = acc.shape[0]
    examples = [SimpleNamespace(snr=s, target=0, choices=["a", "b", "c", "d"]) for s in snr]
    mask = torch.ones(B * G, 2, dtype=torch.long)
    r = Rollout(examples, None, torch.zeros(B * G, 2, dtype=torch.long), mask, mask, [""] * (B * G),
                torch.zeros(B * G, 2), teacher_answer=answer)
    w = R.expand_per_item(R.snr_weight(list(snr), cfg.teacher.w0, cfg.teacher.snr_lo, cfg.teacher.snr_hi,
                                       cfg.teacher.w_min), G)
    r.rewards.update(accuracy=acc.reshape(-1), task=acc.reshape(-1), snr_weight=w)
    if "consistency" in build_signals(cfg):
        r.rewards["teacher"] = teacher.reshape(-1)
        r.rewards["total"] = acc.reshape(-1) + w * teacher.reshape(-1)
    return r


def test_joint_z_score_amplifies_a_near_constant_bonus_in_the_all_wrong_group():
    """The paper's mix (one z-score of accuracy + bonus): in the mixed group the bonus barely moves the
    advantages; in the all-wrong group a 0.01 spread becomes a full-strength +-1.20 push."""
    r = _rollout(_cfg("train.variant=echodistill"))
    compute_advantages(r, _cfg("train.variant=echodistill"))
    a = r.advantages.view(3, G)
    plain = grpo.group_advantages(ACC)
    cos = torch.nn.functional.cosine_similarity(a[0], plain[0], dim=0)
    assert cos > 0.99
    # bonus w0 * 0.01 = 0.005 over the group std 0.5 * 0.00816 (+ eps 1e-4)
    spread = 0.5 * torch.tensor([0.30, 0.31, 0.29, 0.30]).std().item()
    assert a[1].abs().max() == pytest.approx(0.005 / (spread + 1e-4), rel=1e-3)
    assert a[1].abs().max() > 1.19


def test_decoupled_keeps_tiny_teacher_gaps_tiny_and_the_weight_sets_the_share():
    cfg = _cfg("train.variant=echodistill-decoupled")
    r = _rollout(cfg)
    compute_advantages(r, cfg)
    a_task, a_teacher = r.adv_task.view(3, G), r.adv_teacher.view(3, G)
    # accuracy part: the usual group z-score in the mixed group, 0 in the equal groups
    assert a_task[0].tolist() == pytest.approx([0.8659, 0.8659, -0.8659, -0.8659], abs=1e-3)
    assert a_task[1:].abs().max() == 0
    # teacher part: w0 = 0.5 at SNR -5 (the bottom of the training band) times the centred score / batch RMS
    assert a_teacher[0].tolist() == pytest.approx([0.5 * d / RMS for d in (0.35, 0.25, -0.25, -0.35)], abs=1e-3)
    assert a_teacher[1].tolist() == pytest.approx([0.0, 0.5 * 0.01 / RMS, -0.5 * 0.01 / RMS, 0.0], abs=1e-4)
    assert a_teacher[1].abs().max() < 0.03  # was 1.20 under the joint z-score
    # doubling the weight doubles the teacher part and leaves the accuracy part alone
    cfg2 = _cfg("train.variant=echodistill-decoupled", "teacher.w0=1.0")
    r2 = _rollout(cfg2)
    compute_advantages(r2, cfg2)
    assert torch.allclose(r2.adv_teacher, 2 * r.adv_teacher, atol=1e-6)
    assert torch.equal(r2.adv_task, r.adv_task)


def test_gate_equal_groups_puts_the_teacher_only_where_grpo_has_no_signal():
    cfg = _cfg("train.variant=echodistill-gated")
    r = _rollout(cfg, answer=_answer([0, 0, 0], [0.9, 0.9, 0.9]))
    compute_advantages(r, cfg)
    a_teacher = r.adv_teacher.view(3, G)
    assert a_teacher[0].abs().max() == 0  # mixed: accuracy decides alone
    assert a_teacher[1].abs().max() > 0 and a_teacher[2].abs().max() > 0
    assert torch.equal(r.adv_task.view(3, G)[0], grpo.group_advantages(ACC)[0])


def test_gate_confidence_scales_the_teacher_term_by_its_answer_probability():
    cfg = _cfg("train.variant=echodistill-decoupled", "teacher.gate=confidence")
    r = _rollout(cfg, answer=_answer([0, 0, 0], [1.0, 0.5, 0.0]))
    compute_advantages(r, cfg)
    base = _rollout(_cfg("train.variant=echodistill-decoupled"))
    compute_advantages(base, _cfg("train.variant=echodistill-decoupled"))
    scale = torch.tensor([1.0, 0.5, 0.0]).repeat_interleave(G)
    assert torch.allclose(r.adv_teacher, base.adv_teacher * scale, atol=1e-6)


def _answer(choices, conf):
    B = len(choices)
    return TeacherAnswer(torch.zeros(B, 2, dtype=torch.long), torch.ones(B, 2, dtype=torch.long), list(choices),
                         torch.tensor(conf))


def test_rescue_kd_only_on_confident_teacher_answers_in_all_wrong_groups():
    cfg = _cfg("train.variant=echodistill-rescue", "teacher.min_confidence=0.5")
    r = _rollout(cfg, answer=_answer([0, 1, 2], [0.9, 0.9, 0.9]))
    compute_advantages(r, cfg)
    assert r.kd_items.tolist() == [False, True, False]
    assert r.adv_teacher.abs().max() == 0  # no consistency term in this variant
    r = _rollout(cfg, answer=_answer([0, None, 2], [0.9, 0.9, 0.9]))  # the teacher names no choice
    compute_advantages(r, cfg)
    assert r.kd_items.tolist() == [False, False, False]
    r = _rollout(cfg, answer=_answer([0, 1, 2], [0.9, 0.4, 0.9]))  # not confident enough
    compute_advantages(r, cfg)
    assert not r.kd_items.any()
    r = _rollout(_cfg("train.variant=grpo"), answer=_answer([0, 1, 2], [0.9, 0.9, 0.9]))
    compute_advantages(r, _cfg("train.variant=grpo"))
    assert r.kd_items is None


def test_pseudo_labels_teacher_and_majority():
    cfg = _cfg("train.variant=echodistill-labelfree")  # min_confidence 0.5
    texts = ["a", "a", "b", "c",  # majority a
             "b", "c", "b", "c",  # tie: b named first
             "zzz", "", "none", "?"]  # no choice named
    r = _rollout(cfg, answer=_answer([2, 1, None], [0.8, 0.3, 0.9]))
    r.texts = texts
    assert reward_targets(r, cfg) == [2, None, None]  # 0.3 < 0.5; the teacher named no choice
    assert reward_targets(r, _cfg("train.variant=ttrl")) == [0, 1, None]
    assert reward_targets(r, _cfg("train.variant=grpo")) == [0, 0, 0]
    # no target = no accuracy signal for that item
    acc = R.accuracy_rewards(texts, [e.choices for e in r.examples], [0, None, None], G)
    assert acc.view(3, G)[1:].abs().max() == 0


def test_snr_shaping_spans_the_training_band_in_either_direction():
    cfg = _cfg()
    assert (cfg.teacher.snr_lo, cfg.teacher.snr_hi) == (-5.0, 5.0)
    w = R.snr_weight([-5.0, 0.0, 5.0], 1.0, -5.0, 5.0, 0.2)
    assert w.tolist() == pytest.approx([1.0, 0.5, 0.2])
    w = R.snr_weight([-5.0, 0.0, 5.0], 1.0, -5.0, 5.0, 0.2, direction="cleaner")
    assert w.tolist() == pytest.approx([0.2, 0.5, 1.0])


def test_kd_normaliser_is_per_item_like_dr_grpo():
    """Selecting fewer rows does not raise the weight of the ones kept."""
    torch.manual_seed(0)
    t, s = torch.randn(4, 3, 7), torch.randn(4, 3, 7)
    mask = torch.tensor([[1, 1, 0]] * 4)
    per_row = [grpo.kd_loss(t[i:i + 1], s[i:i + 1], mask[i:i + 1]) * 2 for i in range(4)]  # 2 tokens each
    only_first = mask * torch.tensor([1, 0, 0, 0]).unsqueeze(1)
    assert grpo.kd_loss(t, s, only_first, num_items=4, max_completion_length=3).item() == \
        pytest.approx(per_row[0].item() / (4 * 3), rel=1e-5)
    assert grpo.kd_loss(t, s, mask, num_items=4, max_completion_length=3).item() == \
        pytest.approx(sum(p.item() for p in per_row) / 12, rel=1e-5)


def test_teacher_passes_are_the_union_of_the_signals_passes():
    def passes(*o):
        return build_signals(_cfg(*o)).passes

    assert passes("train.variant=grpo") == Passes()
    p = passes("train.variant=echodistill")
    assert p.scores and not p.answer and not p.answer_logits and p.clean  # no greedy answer it does not use
    assert passes("train.variant=echodistill", "signals.consistency.mode=argmax_agree").argmax
    assert passes("train.variant=echodistill-decoupled", "teacher.gate=confidence").answer
    assert not passes("train.variant=ttrl").clean
    p = passes("train.variant=echodistill-rescue")
    assert p.answer_logits and not p.scores
    assert passes("train.variant=grpo", "signals.clean_retention.weight=0.5").answer_logits
    assert passes("train.variant=echodistill", "signals.grounding.weight=0.5").silent


def test_what_a_run_pays_for_follows_its_signals():
    """No term reads samples: nothing is sampled. A signal that replaces the labels: none is read."""
    s = build_signals(_cfg("train.variant=clean-distill"))
    assert not s.samples and not s.needs_labels and s.names == ["distill"]
    assert build_signals(_cfg("train.variant=distill-only")).names == ["distill"]  # the old name resolves
    assert build_signals(_cfg("train.variant=clean-distill", "train.beta=0.04")).samples  # the KL reads samples
    s = build_signals(_cfg("train.variant=echodistill-rescue"))
    assert s.samples and s.needs_labels  # its scope is the all-wrong groups of the label accuracy
    assert not build_signals(_cfg("train.variant=ttrl")).needs_labels
    assert not build_signals(_cfg("train.variant=echodistill-labelfree")).needs_labels


def test_old_teacher_keys_name_the_signal_and_saved_configs_migrate(tmp_path):
    from echodistill.config import ConfigError, load_config
    with pytest.raises(ConfigError, match="signals.distill.weight"):
        _cfg("teacher.lambda_kd=0.5")
    with pytest.raises(ConfigError, match="signals.pseudo_label.weight"):
        _cfg("train.reward_source=teacher")
    saved = tmp_path / "config.yaml"  # a run folder written before signals: the rescue and a labelfree run
    saved.write_text("train: {variant: echodistill, reward_source: label, lambda_clean: 0.0}\n"
                     "teacher: {enabled: false, lambda_kd: 1.0, kd_scope: all_wrong, token_credit: false, "
                     "eta: 0.5, lambda_g: 0.3}\n")
    cfg = load_config(saved, saved=True)
    assert build_signals(cfg).describe() == "distill x1"
    assert cfg.signals.distill.scope == "all_wrong" and cfg.signals.grounding.weight == 0
    saved.write_text("train: {variant: echodistill-labelfree, reward_source: teacher}\n"
                     "teacher: {enabled: true, token_credit: true, eta: 0.25}\n")
    assert build_signals(load_config(saved, saved=True)).describe() == \
        "consistency x1, pseudo_label x1, token_credit x0.25"


def test_labeled_split_per_task_seeded_disjoint(tmp_path):
    items = [Item(id=f"{task}-{i}", audio="x.wav", question="q", choices=["a", "b"], target="a", task=task,
                  split="train") for task in ("num", "nato", "melody") for i in range(20)]
    cfg = _cfg("data.labeled_fraction=0.3", "data.label_seed=3")
    lab, unl = split_labeled(items, 0.3, 3)
    assert len(lab) == 18 and len(unl) == 42 and not {i.id for i in lab} & {i.id for i in unl}
    assert all(sum(i.task == t for i in lab) == 6 for t in ("num", "nato", "melody"))
    assert split_labeled(list(reversed(items)), 0.3, 3)[0] == [i for i in reversed(items) if i in lab]
    assert {i.id for i in split_labeled(items, 0.3, 4)[0]} != {i.id for i in lab}
    import json
    sheet = json.loads(write_label_sheet(tmp_path, items, cfg, "unlabeled").read_text())
    assert sheet["labeled_ids"] == sorted(i.id for i in lab) and sheet["stage_uses"] == "unlabeled"
    assert sheet["counts_per_task"]["num"] == {"labeled": 6, "unlabeled": 14}


def test_gate_needs_decoupled_advantages():
    from echodistill.config import ConfigError
    with pytest.raises(ConfigError, match="teacher.advantage=decoupled"):
        _cfg("train.variant=echodistill", "teacher.gate=equal_groups")


@pytest.mark.slow
def test_label_free_regime_end_to_end(tmp_path, tiny_qwen2_audio_dir, monkeypatch):
    """Warm-up on half the labels, then label-free EchoDistill on the other half: the label sheet
    names the split, RL draws only unlabeled items, and the log says how good the teacher's targets are."""
    import json

    from echodistill.train import trainer as T
    from echodistill.train.sft import run_warmup
    from train_helpers import make_dataset, tiny_config

    data = make_dataset(tmp_path / "data", n_train=8)
    split = ["data.labeled_fraction=0.5", "data.label_seed=1"]
    warm = tiny_config(data, tiny_qwen2_audio_dir, tmp_path / "warm", *split, "warmup.max_steps=2",
                       "warmup.prompts_per_device=2", "warmup.eval_steps=0")
    run_warmup(warm)
    sheet = json.loads((tmp_path / "warm" / "labels.json").read_text())
    assert len(sheet["labeled_ids"]) == 4 and sheet["stage_uses"] == "labeled"

    seen = []
    real_stream = T.ItemStream

    def stream(items, *a, **k):
        seen.extend(it.id for it in items)
        return real_stream(items, *a, **k)

    monkeypatch.setattr(T, "ItemStream", stream)
    cfg = tiny_config(data, tiny_qwen2_audio_dir, tmp_path / "rl", *split, "train.variant=echodistill-labelfree",
                      "train.rl_items=unlabeled", "teacher.min_confidence=0.0", f"train.init_from={tmp_path}/warm/final",
                      "train.log_component_grad_norms=true", "signals.clean_retention.weight=0.5")
    T.run_train(cfg)
    assert sorted(seen) == sheet["unlabeled_ids"]
    assert json.loads((tmp_path / "rl" / "labels.json").read_text())["stage_uses"] == "unlabeled"
    rows = read_metrics(tmp_path / "rl")
    for key in ("teacher_clean_acc", "target_coverage", "target_label_agreement", "frac_groups_all_wrong",
                "teacher_adv_share", "grad_norm_policy", "grad_norm_clean", "clean_kl"):
        assert key in rows[0], key


def test_hard_distillation_is_cross_entropy_on_the_teachers_answer():
    """target=hard: -log p_student(teacher's greedy tokens), the limit of KL toward a one-hot teacher."""
    torch.manual_seed(1)
    student = torch.randn(2, 3, 7)
    ids = torch.tensor([[1, 4, 0], [6, 2, 3]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    nll = -student.log_softmax(-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    want = float((nll * mask).sum()) / (2 * 4)  # per item, as dr_grpo: B = 2 items x max length 4
    assert grpo.hard_kd_loss(ids, student, mask, num_items=2, max_completion_length=4).item() == pytest.approx(want)
    one_hot = torch.full((2, 3, 7), -1e4).scatter(-1, ids.unsqueeze(-1), 0.0)
    assert grpo.kd_loss(one_hot, student, mask, num_items=2, max_completion_length=4).item() == pytest.approx(want)
    s = build_signals(_cfg("train.variant=pseudo-label-sft"))
    assert not s.samples and not s.needs_labels and not s.passes.answer_logits  # the answer's tokens suffice
    s = build_signals(_cfg("train.variant=echodistill-unlabeled"))
    assert s.samples and not s.needs_labels and s.passes.scores


def test_supervised_signal_reads_the_label_completion_the_warm_up_teaches(tiny_qwen2_audio_dir):
    """``supervised``: each example's labeled completion (answer: the target's text; reasoning: evidence
    + answer tags), + the end-of-turn token, right-padded; no target or no evidence -> masked out."""
    import numpy as np

    from echodistill.data.prompts import target_text
    from echodistill.models import load_adapter
    from echodistill.train.data import Example
    from echodistill.train.signals.supervised import label_completions

    cfg = _cfg("model.backbone=embedded", f"model.path={tiny_qwen2_audio_dir}")
    model = load_adapter(cfg.model, train=False)
    wav = np.zeros(1600, np.float32)

    def ex(target, evidence, fmt):
        item = Item(id="x", audio="x.wav", question="q", choices=["alpha", "bravo"], target=None, evidence=evidence)
        return Example(item, "q", ["alpha", "bravo"], target, wav, wav, "white", 0.0, fmt)

    ids, mask, labeled = label_completions(model, [ex(1, None, "answer"), ex(None, None, "answer"),
                                                   ex(0, "alpha heard", "reasoning"), ex(0, None, "reasoning")])
    assert labeled.tolist() == [True, False, True, False]
    for row, text in ((0, "bravo"), (2, target_text("alpha", "alpha heard", "reasoning"))):
        want = model.tokenizer(text, add_special_tokens=False)["input_ids"] + [model.end_of_turn_id]
        assert ids[row, :len(want)].tolist() == want and int(mask[row].sum()) == len(want)
    assert int(mask[1].sum()) == 0 and int(mask[3].sum()) == 0

    s = build_signals(_cfg("train.variant=sft-distill"))
    assert s.names == ["distill", "supervised"]  # registry order: modules by name
    assert not s.samples and s.needs_labels and s.passes.answer_logits  # nothing sampled; labels + soft KL


def test_warmup_items_select_the_hidden_labels_and_refuse_absent_ones(tmp_path):
    from echodistill.config import ConfigError
    with pytest.raises(ConfigError, match="warmup.sft_items=unlabeled needs data.labeled_fraction < 1"):
        _cfg("warmup.sft_items=unlabeled")
    with pytest.raises(ConfigError, match="warmup.sft_items"):
        _cfg("warmup.sft_items=some")
    from echodistill.data.labels import select_items
    from echodistill.errors import UserError
    items = [Item(id=f"t{i}", audio="x.wav", question="q", choices=["a", "b"], target="a" if i < 4 else None,
                  task="num", split="train") for i in range(6)]
    cfg = _cfg("data.labeled_fraction=0.5", "train.variant=grpo")
    labeled = select_items(items, cfg, "labeled", supervised=True)
    assert labeled == split_labeled(items, 0.5, cfg.data.label_seed)[0] and len(labeled) == 2
    with pytest.raises(UserError, match=r"item t4 has no target \(2 of 4 items of warmup.sft_items=unlabeled\); "
                                        "the warm-up is supervised: add targets or use warmup.sft_items=labeled"):
        select_items(items, cfg, "unlabeled", supervised=True)


@pytest.mark.slow
def test_sft_distill_and_the_supervised_reference_on_hidden_labels_end_to_end(tmp_path, tiny_qwen2_audio_dir,
                                                                            monkeypatch):
    """Round 4's two knobs: `sft-distill` (label cross-entropy + KL toward the clean teacher, nothing sampled)
    trains and logs both terms; `warmup.sft_items=unlabeled` trains on exactly the items the split hides."""
    import json

    from echodistill.train import sft
    from echodistill.train.sft import run_warmup
    from echodistill.train.trainer import run_train
    from train_helpers import make_dataset, tiny_config

    data = make_dataset(tmp_path / "data", n_train=8)
    cfg = tiny_config(data, tiny_qwen2_audio_dir, tmp_path / "sd", "train.variant=sft-distill")
    run_train(cfg)
    rows = [r for r in read_metrics(tmp_path / "sd") if "sft" in r]
    assert len(rows) == 2 and all(r["sft"] > 0 and r["kd"] >= 0 for r in rows)
    assert all(r["sft_items_frac"] == 1.0 for r in rows)

    seen = []
    real = sft.WarmupData
    monkeypatch.setattr(sft, "WarmupData", lambda c, items: seen.extend(it.id for it in items) or real(c, items))
    split = ["data.labeled_fraction=0.5", "data.label_seed=1"]
    run_warmup(tiny_config(data, tiny_qwen2_audio_dir, tmp_path / "ref", *split, "warmup.sft_items=unlabeled",
                           "warmup.noisy=true", "warmup.max_steps=1", "warmup.prompts_per_device=2",
                           "warmup.eval_steps=0"))
    sheet = json.loads((tmp_path / "ref" / "labels.json").read_text())
    assert sheet["stage_uses"] == "unlabeled" and sorted(seen) == sheet["unlabeled_ids"] and len(seen) == 4
