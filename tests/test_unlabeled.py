"""Issue 23: audio users actually have -- unlabeled items, open-ended questions, TRL's dataset and key names.

Data side: manifests and HF datasets without ``target`` (and without ``choices``) are read and pass
``data check``; a method that needs labels refuses an unlabeled item in one line naming the variants
that do not; ``data.labeled_fraction=0``; TRL's names give a hint naming our key.
"""

from __future__ import annotations


import json

import pytest

from echodistill.cli import main
from echodistill.config import ConfigError, load_config
from echodistill.data.labels import label_free_variants, needs_labels, select_items, split_labeled
from echodistill.data.manifest import Item, item_issues, read_manifest
from echodistill.errors import UserError

from train_helpers import make_unlabeled_dataset, read_jsonl, read_metrics, tiny_config


# ------------------------------------------------------------------ manifests
def test_unlabeled_and_open_ended_items_are_read(tmp_path):
    root = make_unlabeled_dataset(tmp_path)
    items = read_manifest(root / "train.jsonl")
    assert [it.labeled for it in items] == [False] * 8
    assert [it.open_ended for it in items] == [False, True] * 4
    assert items[1].choices == [] and items[1].target is None
    assert "target" not in items[0].to_dict()  # written back without a placeholder label
    assert not item_issues(items[0], 1) and not item_issues(items[1], 2)


@pytest.mark.parametrize("item, kind", [
    (Item("a", "x.wav", "q?", [], "a tone"), None),  # open-ended with a reference answer
    (Item("a", "x.wav", "q?", ["one"]), "too_few_choices"),
    (Item("a", "x.wav", "q?", ["a", "b"], ""), "empty_target"),
    (Item("a", "x.wav", "q?", ["a", "b"], "c"), "target_not_in_choices"),
])
def test_item_issues_for_open_ended_and_unlabeled(item, kind):
    assert [i.kind for i in item_issues(item, 1)] == ([kind] if kind else [])


def test_data_check_passes_an_unlabeled_mixed_manifest(tmp_path, capsys):
    root = make_unlabeled_dataset(tmp_path)
    assert main(["data", "check", str(root / "train.jsonl")]) == 0
    out = capsys.readouterr().out
    assert "8 items: 4 multiple-choice, 4 open-ended; 8 without a target" in out
    assert "clean-distill" in out and "OK, no problems found" in out


# ------------------------------------------------------------------ which methods need labels
def test_label_free_variants_are_the_ones_that_read_no_label():
    free = label_free_variants()  # registry order; a new label-free variant joins the list by itself
    assert free[:2] == ["clean-distill", "ttrl"] and "echodistill-labelfree" in free
    assert not {"grpo", "echodistill-rescue", "echodistill"} & set(free)
    assert needs_labels(load_config(overrides=["train.variant=grpo"]))
    assert needs_labels(load_config(overrides=["train.variant=echodistill-rescue"]))  # KD scope from the labels
    assert not needs_labels(load_config(overrides=["train.variant=grpo", "signals.majority_vote.weight=1"]))
    assert not needs_labels(load_config(overrides=["train.variant=ttrl"]))  # the samples' majority replaces them
    # what decides is the run's signals: the rescue's distillation on every item needs no label
    assert not needs_labels(load_config(overrides=["train.variant=echodistill-rescue", "signals.distill.scope=all",
                                                   "train.reward_weights=[0, 0]"]))


def test_a_labels_needing_variant_refuses_an_unlabeled_item_in_one_line(tmp_path):
    root = make_unlabeled_dataset(tmp_path)
    items = read_manifest(root / "train.jsonl")
    cfg = tiny_config(root, tmp_path / "m", tmp_path / "o", "train.variant=grpo")
    with pytest.raises(UserError) as e:
        select_items(items, cfg, "all")
    msg = str(e.value)
    assert "\n" not in msg and "item train0 has no target" in msg and "8 of 8" in msg
    assert "train.variant=grpo needs labels" in msg and f"({', '.join(label_free_variants())})" in msg
    for v in label_free_variants():
        assert select_items(items, tiny_config(root, tmp_path / "m", tmp_path / "o", f"train.variant={v}"),
                            "all") == items


def test_train_cli_refuses_before_loading_a_model(tmp_path, capsys):
    root = make_unlabeled_dataset(tmp_path)
    rc = main(["train", f"data.train_manifest={root}/train.jsonl", f"run.output_dir={tmp_path}/run",
               "model.path=/nonexistent", "train.variant=echodistill", "run.log_with=null"])
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("echodistill: error:")]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err
    assert "item train0 has no target" in lines[0] and "echodistill-labelfree" in lines[0]


def test_warmup_without_labels_says_when_a_warmup_is_needed(tmp_path):
    root = make_unlabeled_dataset(tmp_path)
    items = read_manifest(root / "train.jsonl")
    cfg = tiny_config(root, tmp_path / "m", tmp_path / "o")
    with pytest.raises(UserError, match="no labeled item to warm up on.*base model"):
        select_items(items, cfg, "labeled")


def test_labeled_fraction_zero_and_items_without_targets(tmp_path):
    items = [Item(f"i{k}", "x.wav", "q?", ["a", "b"], "a" if k % 3 else None, task=f"t{k % 2}") for k in range(12)]
    labeled, unlabeled = split_labeled(items, 0.0, seed=0)
    assert labeled == [] and len(unlabeled) == 12
    labeled, unlabeled = split_labeled(items, 1.0, seed=0)
    assert all(it.labeled for it in labeled) and all(not it.labeled for it in unlabeled) and len(labeled) == 8
    # a tiny fraction labels nothing rather than one item per task (no floor at one)
    assert split_labeled(items, 0.01, seed=0)[0] == []
    cfg = load_config(overrides=["data.labeled_fraction=0", "train.rl_items=unlabeled", "train.variant=clean-distill"])
    assert cfg.data.labeled_fraction == 0.0


# ------------------------------------------------------------------ TRL's key names
@pytest.mark.parametrize("override, hint", [
    ("train.per_device_train_batch_size=16",
     "use train.prompts_per_device=2 (TRL counts completions: per_device_train_batch_size = prompts_per_device x "
     "num_generations = 16 here with train.num_generations=8)"),
    ("per_device_train_batch_size=12", "train.prompts_per_device=12/8?"),
    ("report_to=wandb", "use run.log_with=wandb"),
    ("train.use_vllm=true", "use train.rollout_backend=vllm"),
    ("train.vllm_server_base_url=http://h:8000", "use train.vllm_server_url=http://h:8000"),
    ("bf16=true", "use model.dtype=bfloat16"),
    ("train.fp16=true", "use model.dtype=float16"),
    ("num_train_epochs=3", "use train.max_steps"),
    ("learning_rate=1e-5", "use train.learning_rate"),
    ("train.num_completions_to_print=4", "train.log_completions=true"),
])
def test_trl_key_names_give_a_one_line_hint(override, hint):
    with pytest.raises(ConfigError) as e:
        load_config(overrides=[override])
    assert hint in str(e.value) and "\n" not in str(e.value)


def test_trl_names_in_a_yaml_file(tmp_path):
    p = tmp_path / "trl.yaml"
    p.write_text("train:\n  num_generations: 4\n  per_device_train_batch_size: 16\n")
    with pytest.raises(ConfigError, match=r"in .*trl.yaml.*prompts_per_device=4 .*num_generations=4"):
        load_config(p)


def test_reward_weights_as_trl_list_in_reward_order(tmp_path):
    cfg = load_config(overrides=["train.reward_weights=[1.0, 0.25]"])
    assert dict(cfg.train.reward_weights) == {"accuracy": 1.0, "format": 0.25}
    plugin = tmp_path / "plug.py"
    plugin.write_text("def short(completions, **kw):\n    return [1.0 for _ in completions]\n")
    y = tmp_path / "w.yaml"
    y.write_text(f"train:\n  reward_funcs: ['{plugin}:short']\n  reward_weights: [0.5, 0.0, 2]\n")
    assert dict(load_config(y).train.reward_weights) == {"accuracy": 0.5, "format": 0.0, "short": 2.0}
    # a list overrides a variant's mapping as a whole
    cfg = load_config(overrides=["train.variant=clean-distill", "train.reward_weights=[0, 0.1]"])
    assert dict(cfg.train.reward_weights) == {"accuracy": 0.0, "format": 0.1}
    with pytest.raises(ConfigError, match="1 weight.*for 2 rewards.*order: accuracy, format"):
        load_config(overrides=["train.reward_weights=[1.0]"])
    with pytest.raises(ConfigError, match="must hold numbers"):
        load_config(overrides=["train.reward_weights=[a, b]"])


def test_saved_config_round_trips_with_a_weight_list(tmp_path):
    from echodistill.config import save_config

    cfg = load_config(overrides=["train.reward_weights=[1, 0]", "run.seed=5", "run.output_dir=x"])
    save_config(cfg, tmp_path / "c.yaml")
    again = load_config(tmp_path / "c.yaml", saved=True)
    assert dict(again.train.reward_weights) == {"accuracy": 1.0, "format": 0.0} and again.run.seed == 5


# ------------------------------------------------------------------ Hugging Face datasets, TRL's conventions
def _chat(question: str, clip=None, system: bool = True) -> list:
    audio = {"type": "audio", "text": None, "audio": clip}
    text = {"type": "text", "text": question, "audio": None}
    msgs = [{"role": "system", "content": [{"type": "text", "text": "Answer briefly.", "audio": None}]}] if system else []
    return msgs + [{"role": "user", "content": [audio, text]}]


@pytest.fixture
def hf_root(tmp_path, monkeypatch):
    pytest.importorskip("datasets")
    monkeypatch.setenv("ECHODISTILL_CACHE", str(tmp_path / "cache"))
    return make_unlabeled_dataset(tmp_path / "d")


def _rows(root, split="train"):
    return [json.loads(x) for x in (root / f"{split}.jsonl").read_text().splitlines()]


def test_hf_dataset_without_answers_mixed_choices(hf_root, capsys):
    """An Audio column, options [] for open-ended rows, and no answer column: unlabeled, read and checked."""
    import datasets

    rows = _rows(hf_root)
    ds = datasets.Dataset.from_dict({
        "id": [r["id"] for r in rows], "audio": [r["audio"] for r in rows],
        "question": [r["question"] for r in rows], "options": [r.get("choices", []) for r in rows]},
    ).cast_column("audio", datasets.Audio())
    ds.save_to_disk(str(hf_root / "hf_train"))
    items = read_manifest(hf_root / "hf_train")
    assert [it.open_ended for it in items] == [False, True] * 4 and not any(it.labeled for it in items)
    assert main(["data", "check", str(hf_root / "hf_train")]) == 0
    assert "4 open-ended; 8 without a target" in capsys.readouterr().out


def test_hf_conversational_prompt_and_solution_column(hf_root):
    """TRL's layout: a conversational ``prompt`` with an audio part, a ``solution`` with <answer> tags (null:
    unlabeled); the clip from the Audio column, or, with none, from the audio part's path."""
    import datasets

    rows = _rows(hf_root)
    solutions = ["<answer>low</answer>", None, "high", None, None, "a pure tone", None, None]
    base = {"prompt": [_chat(r["question"]) for r in rows], "choices": [r.get("choices", []) for r in rows],
            "solution": solutions}
    datasets.Dataset.from_dict({**base, "audio": [r["audio"] for r in rows]}).cast_column(
        "audio", datasets.Audio()).save_to_disk(str(hf_root / "with_audio"))
    rel = [_chat(r["question"], clip=f"../audio/{r['id']}.wav") for r in rows]
    datasets.Dataset.from_dict({**base, "prompt": rel}).to_parquet(str(hf_root / "chat" / "train.parquet"))
    for source in (hf_root / "with_audio", hf_root / "chat" / "train.parquet"):
        items = read_manifest(source)
        assert [it.question for it in items] == [r["question"] for r in rows]  # user text only, no system text
        assert [it.target for it in items] == ["low", None, "high", None, None, "a pure tone", None, None]
        assert items[5].open_ended and items[0].choices == rows[0]["choices"]
    assert read_manifest(hf_root / "chat" / "train.parquet")[0].audio == str((hf_root / "audio" / "train0.wav"))


@pytest.mark.parametrize("prompt, fragment", [
    ([{"role": "user", "content": [{"type": "text", "text": "q?", "audio": None}]}], "no audio part"),
    ([{"role": "user", "content": [{"type": "audio", "text": None, "audio": "a.wav"},
                                   {"type": "audio", "text": None, "audio": "b.wav"},
                                   {"type": "text", "text": "q?", "audio": None}]}], "2 audio parts"),
    ([{"role": "user", "content": [{"type": "audio", "text": None, "audio": "a.wav"},
                                   {"type": "text", "text": "q?", "audio": None}]},
      {"role": "assistant", "content": [{"type": "text", "text": "low", "audio": None}]}], "'assistant' turn"),
    ([{"role": "user", "content": [{"type": "audio", "text": None, "audio": None},
                                   {"type": "text", "text": "q?", "audio": None}]}], "names no clip"),
])
def test_hf_conversational_prompt_refusals_name_the_row(hf_root, prompt, fragment):
    import datasets

    from echodistill.data.manifest import ManifestError

    datasets.Dataset.from_dict({"prompt": [prompt]}).to_parquet(str(hf_root / "bad.parquet"))
    with pytest.raises(ManifestError) as e:
        read_manifest(hf_root / "bad.parquet")
    assert "bad.parquet:1" in str(e.value) and fragment in str(e.value) and "\n" not in str(e.value)


# ------------------------------------------------------------------ evaluation without labels
def test_metrics_count_unlabeled_rows_in_label_free_figures_only():
    from echodistill.eval.metrics import compute_metrics

    def row(iid, cond, answer, target, snr=None):
        correct = None if target is None else answer == target
        return {"id": iid, "task": "t", "condition": cond, "noise_type": "white" if snr is not None else None,
                "snr": snr, "answer": answer, "target": target, "correct": correct, "invalid": answer is None}

    rows = [row("a", "clean", "x", "x"), row("a", "noisy", "y", "x", 0.0),  # labeled: right clean, wrong noisy
            row("u", "clean", "p", None), row("u", "noisy", "p", None, 0.0),  # unlabeled: consistent
            row("v", "clean", "q", None), row("v", "noisy", None, None, 0.0)]  # unlabeled: invalid when noisy
    m = compute_metrics(rows, n_boot=0)
    assert m["Acc"]["value"] == 1.0 and m["Noisy"]["value"] == 0.0 and m["GSR"]["n"] == 1
    assert m["Consistency"]["value"] == pytest.approx(1 / 3) and m["Consistency"]["n"] == 3
    assert m["consistency_by_snr"]["0"]["value"] == pytest.approx(1 / 3)
    assert m["Invalid"]["value"] == pytest.approx(1 / 6) and m["counts"]["labeled_items"] == 1
    only_unlabeled = compute_metrics(rows[2:], n_boot=0)
    assert only_unlabeled["Acc"]["value"] is None and only_unlabeled["GSR"]["value"] is None
    with pytest.raises(UserError, match="missing 'correct'"):  # None is an unlabeled row only (target None)
        compute_metrics([dict(rows[0], correct=None)], n_boot=0)


def test_open_ended_answers_are_compared_normalised():
    from echodistill.data.answers import free_answer, is_correct

    assert free_answer("  A pure Tone! ") == "a pure tone" and free_answer(" ... ") is None
    assert is_correct(free_answer("A pure tone."), "a pure  tone", open_ended=True)
    assert is_correct("low", "low", open_ended=False) and not is_correct(None, "low", open_ended=False)
    assert is_correct("low", None, open_ended=False) is None


def test_eval_cli_on_an_unlabeled_mixed_manifest(tmp_path, tiny_qwen2_audio_dir, capsys):
    root = make_unlabeled_dataset(tmp_path / "d", n_train=2, n_val=4)
    out = tmp_path / "ev"
    rc = main(["eval", "--manifest", str(root / "val.jsonl"), "--out", str(out), f"model.path={tiny_qwen2_audio_dir}",
               "data.max_duration_s=1.0", "run.num_threads=1", f"noise.noise_dir={root}/noise",
               "eval.noise_types=[white]", "eval.snr_levels=[0,10]", "eval.bootstrap=20", "eval.max_new_tokens=3"])
    text = capsys.readouterr().out
    assert rc == 0 and "4 unlabeled item(s)" in text and "Consistency (noisy answer = clean answer) by SNR" in text
    meta = json.loads((out / "metrics.json").read_text())["metrics"]
    assert meta["Acc"]["value"] is None and meta["counts"]["labeled_items"] == 0
    assert meta["Consistency"]["n"] == 4 and set(meta["consistency_by_snr"]) == {"0", "10"}
    rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert all(r["correct"] is None and r["target"] is None for r in rows)
    open_rows = [r for r in rows if r["id"] in ("val1", "val3")]
    from echodistill.data.answers import free_answer
    assert all(r["answer"] == free_answer(r["response"]) for r in open_rows)  # the free text, normalised


# ------------------------------------------------------------------ training without labels
@pytest.mark.slow
def test_label_free_run_validates_without_labels_and_keeps_the_best(tmp_path, tiny_qwen2_audio_dir):
    import math

    from echodistill.train import trainer as T

    root = make_unlabeled_dataset(tmp_path / "d")
    out = tmp_path / "run"
    cfg = tiny_config(root, tiny_qwen2_audio_dir, out, "train.variant=clean-distill", "train.eval_steps=1",
                      "train.eval_items=4", "train.metric_for_best_model=val_teacher_agreement")
    T.run_train(cfg)
    rows = read_metrics(out)
    evals = [r for r in rows if "val_items" in r]
    assert [r["step"] for r in evals] == [0, 1, 2]  # selection starts from the initial model
    assert all(r["val_items"] == 4 and r["val_labeled_items"] == 0 for r in evals)
    for r in evals:
        assert math.isnan(r["val_clean_acc"]) and math.isnan(r["val_noisy_acc"])  # no label: no accuracy
        assert 0 <= r["val_teacher_agreement"] <= 1 and 0 <= r["val_consistency"] <= 1
        assert any(k.startswith("val_teacher_agreement_snr") for k in r)  # per SNR band
    best = json.loads((out / "best.json").read_text())
    assert best["metric"] == "val_teacher_agreement" and best["step"] in (0, 1, 2)
    assert best["value"] == max(r["val_teacher_agreement"] for r in evals)
    assert (out / "best").is_dir() and json.loads((out / "summary.json").read_text())["best"]["step"] == best["step"]


def test_metric_for_best_model_must_be_a_validation_metric(tmp_path, tiny_qwen2_audio_dir):
    from echodistill.train import trainer as T

    root = make_unlabeled_dataset(tmp_path / "d")
    cfg = tiny_config(root, tiny_qwen2_audio_dir, tmp_path / "run", "train.variant=clean-distill", "train.max_steps=1",
                      "train.eval_steps=1", "train.eval_items=2", "train.metric_for_best_model=val_accuracy")
    with pytest.raises(ConfigError, match="val_accuracy.*is not a validation metric.*val_consistency"):
        T.run_train(cfg)


def test_tracker_scalars_are_grouped_like_trl():
    from echodistill.tracking import tracker_scalars

    got = tracker_scalars({"step": 3, "loss": 0.5, "val_consistency": 0.75, "kd": float("nan"), "mode": "x"})
    assert got == {"train/loss": 0.5, "eval/consistency": 0.75}


# ------------------------------------------------------------------ open-ended questions in training
def test_open_ended_rewards_compare_normalised_text():
    from echodistill.train import rewards as R

    texts = ["A pure tone.", "a  pure tone", "noise", "", "low", "Low.", "high", "low"]  # B=2 items x G=4
    choices = [[], ["low", "high"]]
    acc = R.accuracy_rewards(texts, choices, ["a pure tone", "low"], 4)
    assert acc.tolist() == [1, 1, 0, 0, 1, 1, 0, 1]
    assert R.format_rewards(texts, choices, 4).tolist() == [1, 1, 1, 0, 1, 1, 1, 1]  # open-ended: any answer
    assert R.majority_vote(texts, choices, 4) == ["a pure tone", 0]
    assert R.accuracy_rewards(texts, choices, [None, None], 4).tolist() == [0] * 8  # unlabeled: no signal


def test_teacher_answer_of_an_open_ended_item_is_its_text(tmp_path, tiny_qwen2_audio_dir):
    """The clean teacher's greedy answer is the distillation target of an open-ended item (its normalised
    text stands for it where a choice index would), and the accuracy target of pseudo-labels."""
    from echodistill.audio.noise import NoiseBank
    from echodistill.train import trainer as T
    from echodistill.train.data import load_examples
    from echodistill.train.signals import build_signals
    from echodistill.models import load_adapter

    root = make_unlabeled_dataset(tmp_path / "d")
    cfg = tiny_config(root, tiny_qwen2_audio_dir, tmp_path / "o", "train.variant=clean-distill",
                      "signals.distill.scope=all")
    items = read_manifest(root / "train.jsonl")[:4]
    examples, bad = load_examples(items, cfg, NoiseBank(str(root / "noise")), 0)
    assert not bad and [e.target for e in examples] == [None] * 4 and examples[1].choices == []
    model = load_adapter(cfg.model, train=True)
    signals = build_signals(cfg)
    r = T.prepare(model, examples, cfg, signals, T._generator(model.device, 0, "t"))
    texts = model.decode(r.teacher_answer.ids, r.teacher_answer.mask)
    from echodistill.data.answers import read_answer
    assert r.teacher_answer.choice == [read_answer(t, e.choices) for t, e in zip(texts, examples)]
    assert r.kd_items.tolist() == [c is not None for c in r.teacher_answer.choice]


@pytest.mark.slow
def test_label_free_run_logs_completions_and_the_terms_it_trains(tmp_path, tiny_qwen2_audio_dir):
    from echodistill.train import trainer as T

    root = make_unlabeled_dataset(tmp_path / "d")
    out = tmp_path / "run"
    for variant, extra in (("clean-distill", []), ("ttrl", ["train.max_steps=1"])):
        run = out / variant
        cfg = tiny_config(root, tiny_qwen2_audio_dir, run, f"train.variant={variant}", "train.eval_steps=0",
                          "train.log_completions=true", *extra)
        recipe = T.GRPORecipe(cfg, progress=False).setup()
        recipe.train()
        rows = read_jsonl(run / "completions.jsonl")
        last = read_metrics(run)[-1]
        if variant == "clean-distill":  # nothing sampled: the teacher's answers it distills toward, per item
            assert len(rows) == 2 * 2 and {"teacher_answer", "distilled"} <= set(rows[0])
            assert set(recipe._progress_postfix(last)) == {"kd"}
        else:  # samples with the majority-vote target they were rewarded against (open-ended: normalised text)
            assert len(rows) == 2 * 4 and {"completion", "answer", "target", "reward", "advantage"} <= set(rows[0])
            assert {"reward", "acc", "policy"} <= set(recipe._progress_postfix(last))
        assert all(r["step"] >= 1 for r in rows)


def test_unlabeled_example_script_copies_clips_and_questions_without_labels(tmp_path):
    import subprocess
    import sys

    from train_helpers import REPO, make_dataset

    bench = make_dataset(tmp_path / "bench", n_train=6, n_val=4)
    out = tmp_path / "mine"
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "unlabeled_example.py"), "--bench", str(bench),
                        "--out", str(out), "--train", "4", "--val", "2"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    train = read_manifest(out / "train.jsonl")
    assert len(train) == 4 and len(read_manifest(out / "val.jsonl")) == 2
    assert not any(it.labeled for it in train) and [it.open_ended for it in train] == [False, True] * 2
    assert all(it.audio.startswith(str(out / "clips")) for it in train)
    assert "target" not in (out / "train.jsonl").read_text()  # the benchmark's labels are never copied


def test_data_mix_keeps_items_unlabeled_and_open_ended(tmp_path):
    from echodistill.data.mix import mix_manifest

    root = make_unlabeled_dataset(tmp_path / "d", n_train=4, n_val=2)
    out = mix_manifest(root / "val.jsonl", tmp_path / "mixed", ["white"], [0.0, 5.0], seed=1)
    items = read_manifest(out)
    assert len(items) == 4 and not any(it.labeled for it in items)  # no placeholder label appears
    assert [it.open_ended for it in items] == [False, False, True, True]
    assert "target" not in out.read_text()
    assert main(["data", "check", str(out)]) == 0


def test_completions_table_reaches_tensorboard(tmp_path, tiny_qwen2_audio_dir):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from echodistill.train import trainer as T

    root = make_unlabeled_dataset(tmp_path / "d")
    out = tmp_path / "run"
    T.run_train(tiny_config(root, tiny_qwen2_audio_dir, out, "train.variant=ttrl", "train.max_steps=1",
                            "train.eval_steps=0", "train.log_completions=true", "run.log_with=tensorboard"))
    acc = EventAccumulator(str(out / "echodistill"))
    acc.Reload()
    assert any(t.startswith("completions") for t in acc.Tags()["tensors"])  # the Markdown table (text plugin)
    assert "train/reward_total_mean" in acc.Tags()["scalars"]
