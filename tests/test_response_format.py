"""Response formats: the reasoning parser on hand-built completions, prompts, targets, config presets."""

import pytest

from echodistill.config import ConfigError, load_config
from echodistill.data.answers import extract_answer, extract_choice, format_ok, parse_response
from echodistill.data.prompts import format_question, target_text

CH = ["piano", "guitar", "violin", "flute"]

REASONING_CASES = [
    # (completion, answer index, evidence, problem)
    ("<think>piano, two notes</think><answer>piano</answer>", 0, "piano, two notes", ""),
    ("  <think> piano </think>\n<answer> Guitar. </answer>\n", 1, "piano", ""),  # the answer span decides
    ("<think>not a violin</think><answer>flute</answer>", 3, "not a violin", ""),
    ("<think>I hear a violin</think><answer>the answer is violin</answer>", 2, "I hear a violin", ""),
    # empty think: answer read, no evidence stated, not well formed
    ("<think></think><answer>flute</answer>", 3, "", "empty_think"),
    ("<think>  </think><answer>flute</answer>", 3, "", "empty_think"),
    # two answers: no answer, whichever comes first or last
    ("<think>x</think><answer>piano</answer><answer>flute</answer>", None, None, "two_answers"),
    ("<think>x</think><answer>piano</answer><answer>piano</answer>", None, None, "two_answers"),
    # broken tags
    ("piano", None, None, "broken_tags"),  # the answer format's completion is not a reasoning one
    ("<think>piano</think>piano", None, None, "broken_tags"),
    ("<think>piano<answer>piano</answer>", None, None, "broken_tags"),
    ("<think>piano</think><answer>piano", None, None, "broken_tags"),
    ("<answer>piano</answer><think>piano</think>", None, None, "broken_tags"),
    ("<think>a</think><think>b</think><answer>piano</answer>", None, None, "broken_tags"),
    ("<think>a <think>b</think><answer>piano</answer>", None, None, "broken_tags"),
    ("So: <think>a</think><answer>piano</answer>", None, None, "broken_tags"),
    ("<think>a</think><answer>piano</answer> or flute", None, None, "broken_tags"),
    ("<think>a</think><answer></answer>", None, "a", "empty_answer"),
    ("", None, None, "empty"),
    (None, None, None, "empty"),
]


@pytest.mark.parametrize("text,index,evidence,problem", REASONING_CASES)
def test_reasoning_parser(text, index, evidence, problem):
    parsed = parse_response(text, "reasoning")
    assert parsed.problem == problem
    assert parsed.evidence == evidence
    assert extract_answer(text, CH, "reasoning") == index
    assert format_ok(text, CH, "reasoning") == (problem == "" and index is not None
                                                  and parsed.answer.strip(" .").lower() in CH)


def test_answer_format_is_extract_choice():
    for text in ["piano", " Guitar. ", "the answer is flute", "<think>a</think><answer>piano</answer>", "", None,
                 "piano or flute"]:
        assert extract_answer(text, CH, "answer") == extract_choice(text, CH)
        assert parse_response(text, "answer").evidence is None
    assert format_ok("Piano.", CH, "answer") and not format_ok("it is piano", CH, "answer")
    assert format_ok("<think>x</think><answer>a cat</answer>", [], "reasoning")  # free-form: any answer text


def test_unknown_format_is_an_error():
    with pytest.raises(ValueError, match="unknown response format"):
        parse_response("x", "json")


def test_prompts_and_targets():
    answer = format_question("Which?", ["a", "b"])
    assert answer == "Which?\nChoices: (A) a (B) b\nAnswer with the text of one choice."  # unchanged
    assert format_question("Which?", ["a", "b"], "answer") == answer
    reasoning = format_question("Which?", ["a", "b"], "reasoning")
    assert reasoning.startswith("Which?\nChoices: (A) a (B) b\n") and "<think>" in reasoning and "<answer>" in reasoning
    assert "Choices" not in format_question("What is it?", [], "reasoning")
    assert target_text("piano", "piano, two notes", "answer") == "piano"
    t = target_text("piano", " piano, two notes ", "reasoning")
    assert t == "<think>piano, two notes</think><answer>piano</answer>"
    assert parse_response(t, "reasoning").well_formed and extract_answer(t, CH, "reasoning") == 0
    with pytest.raises(ValueError, match="evidence"):
        target_text("piano", None, "reasoning")


def test_config_format_presets():
    cfg = load_config(overrides=[])
    assert cfg.data.response_format == "answer" and cfg.eval.max_new_tokens == 8
    cfg = load_config(overrides=["data.response_format=reasoning"])
    assert cfg.train.max_completion_length == 24 and cfg.eval.max_new_tokens == 24
    cfg = load_config(overrides=["data.response_format=reasoning", "eval.max_new_tokens=20"])
    assert cfg.eval.max_new_tokens == 20  # the user's value wins over the preset
    with pytest.raises(ConfigError, match="response_format"):
        load_config(overrides=["data.response_format=xml"])


def test_evidence_field_round_trip(tmp_path):
    import json

    from echodistill.data.manifest import Item, iter_rows, read_manifest, write_manifest

    items = [Item("a", str(tmp_path / "a.wav"), "Which?", ["x", "y"], "x", evidence="x ray"),
             Item("b", str(tmp_path / "b.wav"), "Which?", ["x", "y"], "y")]
    path = tmp_path / "m.jsonl"
    write_manifest(path, items)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows[0]["evidence"] == "x ray" and "evidence" not in rows[1]  # optional: absent when unset
    back = read_manifest(path)
    assert [it.evidence for it in back] == ["x ray", None] and "evidence" not in back[0].meta
    rows[1]["evidence"] = 3
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    issues = [i for r in iter_rows(path) for i in r.issues]
    assert len(issues) == 1 and "evidence" in issues[0].message and issues[0].line == 2


def test_embedded_tokenizer_covers_evidence_and_tags(tmp_path):
    import json

    from echodistill.data.prompts import target_text
    from echodistill.models.embedded import read_bench_texts, tokenizer_corpus
    from echodistill.models.small_tokenizer import build_small_tokenizer

    rows = [{"id": "a", "question": "What does the speaker ask for?", "choices": ["lights on", "coffee"],
             "target": "lights on", "evidence": "switch the light on"},
            {"id": "b", "question": "The code word starts with which letter?", "choices": ["X", "Y"], "target": "X",
             "evidence": "x ray"}]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    texts = read_bench_texts(tmp_path)
    assert "switch the light on" in texts and target_text("X", "x ray", "reasoning") in texts
    lines, _ = tokenizer_corpus(texts)
    tok = build_small_tokenizer(lines, vocab_size=2000)
    completion = target_text("lights on", "switch the light on", "reasoning")
    ids = tok(completion, add_special_tokens=False).input_ids
    assert tok.decode(ids) == completion
    assert len(ids) <= 16  # tags and evidence words are whole tokens, not bytes


def test_rewards_read_the_answer_span():
    import torch

    from echodistill.train.rewards import accuracy_rewards, format_rewards, majority_vote

    texts = ["<think>piano, two notes</think><answer>piano</answer>",  # right, well formed
             "<think>flute</think><answer>piano</answer>",  # right answer, evidence says otherwise
             "<think></think><answer>piano</answer>",  # right, no evidence stated: no format reward
             "<think>piano</think>piano",  # broken: no answer even though "piano" is there
             "<think>piano</think><answer>flute</answer>",  # wrong
             "<think>x</think><answer>piano</answer><answer>flute</answer>"]  # two answers
    acc = accuracy_rewards(texts, [CH], ["piano"], 6, response_format="reasoning")
    assert acc.tolist() == [1, 1, 1, 0, 0, 0]
    fmt = format_rewards(texts, [CH], 6, response_format="reasoning")
    assert fmt.tolist() == [1, 1, 0, 0, 1, 0]
    # the answer format is unchanged: the whole text is the answer
    assert format_rewards(["piano", "Piano.", "it is piano"], [CH], 3).tolist() == [1, 1, 0]
    assert majority_vote(texts, [CH], 6, response_format="reasoning") == [0]
    assert isinstance(acc, torch.Tensor)


def test_demo_format_preset():
    from echodistill.demo import PRESETS, RL_COMMON, with_response_format

    smoke = PRESETS["smoke"]
    assert with_response_format(smoke, "answer") is smoke  # earlier demo folders keep their stage keys
    p = with_response_format(smoke, "reasoning")
    assert p["warmup"][-1] == "data.response_format=reasoning" and p["eval"][-1] == "data.response_format=reasoning"
    cfg = load_config(None, list(RL_COMMON) + p["train"])  # the stage's order: the format's length wins
    assert cfg.data.response_format == "reasoning" and cfg.train.max_completion_length == 24
    assert smoke["warmup"] == PRESETS["smoke"]["warmup"] and "data.response_format=reasoning" not in smoke["train"]
