"""Plug-in rewards (TRL signature, `train.reward_funcs`): loading, errors naming the plug-in, and a
plug-in changing the logged reward total of a real (tiny) training run by exactly weight x its mean."""

from __future__ import annotations

import textwrap

import pytest

from echodistill.config import ConfigError, load_config
from echodistill.train import plugins as P
from echodistill.train import trainer as T

from train_helpers import read_metrics, tiny_config

PLUGIN = textwrap.dedent('''
    CALLS = []

    def prefers_white(completions, noise_type, snr, answer, **kwargs):
        """1 for completions of items mixed with white noise, None (does not apply) otherwise."""
        CALLS.append({"n": len(completions), "noise_type": list(noise_type), "snr": list(snr),
                      "answer": list(answer), "keys": sorted(kwargs)})
        return [1.0 if t == "white" else None for t in noise_type]

    def broken(completions, **kwargs):
        return [1.0 / 0 for _ in completions]

    def too_short(completions, **kwargs):
        return [0.5]

    def not_numbers(completions, **kwargs):
        return ["good" for _ in completions]
''')


@pytest.fixture(scope="module")
def plugin_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("plugins") / "my_rewards.py"
    p.write_text(PLUGIN)
    return p


def test_loading_and_config_checks(plugin_file, tmp_path, monkeypatch):
    fn = P.load_reward_func(f"{plugin_file}:prefers_white")
    assert fn.__name__ == "prefers_white"
    monkeypatch.syspath_prepend(str(plugin_file.parent))  # module:function form
    assert P.load_reward_func("my_rewards:too_short").__name__ == "too_short"
    cfg = load_config(None, [f"train.reward_funcs=[{plugin_file}:prefers_white]",
                             "train.reward_weights={accuracy: 1.0, prefers_white: 0.5}"])
    assert list(cfg.train.reward_funcs) == [f"{plugin_file}:prefers_white"]
    for overrides, needle in [
        (["train.reward_funcs=[nope_module_xyz:f]"], "reward plug-in nope_module_xyz:f: module .nope_module_xyz. not found"),
        ([f"train.reward_funcs=[{plugin_file}:missing]"], "has no function 'missing'"),
        (["train.reward_funcs=[no_colon]"], "must look like module:function"),
        ([f"train.reward_funcs=[{tmp_path}/gone.py:f]"], "gone.py not found"),
        (["train.reward_weights={accuracy: 1.0, prefers_white: 0.5}"], "unknown reward 'prefers_white'"),
    ]:
        with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):
            load_config(None, overrides)


def test_errors_name_the_plugin(plugin_file):
    cols = {"noise_type": ["white", "pink"], "snr": [0.0, 1.0], "answer": ["a", "a"]}
    args = (["p", "p"], ["a", "b"], [[1], [2]], cols)
    with pytest.raises(P.PluginError, match=r"broken raised ZeroDivisionError at my_rewards.py:\d+"):
        P.call_reward_func(f"{plugin_file}:broken", *args)
    with pytest.raises(P.PluginError, match="too_short returned 1 values for 2 completions"):
        P.call_reward_func(f"{plugin_file}:too_short", *args)
    with pytest.raises(P.PluginError, match="not_numbers: value 0 is 'good'"):
        P.call_reward_func(f"{plugin_file}:not_numbers", *args)
    out = P.call_reward_func(f"{plugin_file}:prefers_white", *args)
    assert out.tolist() == [1.0, 0.0]  # None counts 0


@pytest.mark.slow
def test_plugin_changes_logged_reward_total(plugin_file, data_dir, tiny_qwen2_audio_dir, tmp_path):
    """Same seed with and without the plug-in: step 1 samples the same completions, so the logged total
    differs by exactly weight x the plug-in's mean; the plug-in saw each item's noise type and SNR."""
    spec = f"{plugin_file}:prefers_white"
    common = ["train.variant=grpo", "train.max_steps=1", "train.eval_steps=0", "noise.train_types=[white,pink]"]
    base = tiny_config(data_dir, tiny_qwen2_audio_dir, tmp_path / "base", *common)
    T.run_train(base)
    cfg = tiny_config(data_dir, tiny_qwen2_audio_dir, tmp_path / "plug", *common, f"train.reward_funcs=[{spec}]",
                      "train.reward_weights={accuracy: 1.0, format: 0.1, prefers_white: 0.5}")
    calls = P.load_reward_func(spec).__globals__["CALLS"]
    calls.clear()
    T.run_train(cfg)
    b, p = read_metrics(tmp_path / "base")[0], read_metrics(tmp_path / "plug")[0]
    assert "reward_prefers_white_mean" in p and "reward_prefers_white_mean" not in b
    assert p["reward_accuracy_mean"] == b["reward_accuracy_mean"]  # same completions
    assert p["reward_total_mean"] == pytest.approx(b["reward_total_mean"] + 0.5 * p["reward_prefers_white_mean"],
                                                   abs=1e-6)
    assert 0 < p["reward_prefers_white_mean"] < 1  # both noise types drawn in the run
    assert p["reward_total_mean"] != b["reward_total_mean"]
    c = calls[0]
    G, B = cfg.train.num_generations, len(c["snr"]) // cfg.train.num_generations
    assert c["n"] == B * G and set(c["noise_type"]) <= {"white", "pink"}
    assert all(-5 <= s <= 5 for s in c["snr"]) and len(set(c["snr"][:G])) == 1  # one draw per item, repeated G times
    assert {"prompts", "completion_ids", "id", "question", "choices", "task", "audio"} <= set(c["keys"])
    saved = (tmp_path / "plug" / "config.yaml").read_text()
    assert spec in saved  # in the resolved config


def test_readme_plugin_example_works(tmp_path):
    """The plug-in snippet of docs/usage.md, written to a file as it says, loads and scores."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "docs" / "usage.md").read_text(encoding="utf-8")
    code = re.search(r"\*\*Plug-in rewards\*\*.*?```python\n(.*?)```", readme, re.S).group(1)
    (tmp_path / "my_rewards.py").write_text(code)
    spec = f"{tmp_path / 'my_rewards.py'}:short_answer"
    cols = {"noise_type": ["white", "pink"], "snr": [0.0, 5.0], "target": ["yes", "yes"], "answer": ["yes", "yes"]}
    out = P.call_reward_func(spec, ["q", "q"], ["yes", "it is probably a dog"], [[1], [2]], cols)
    assert out.tolist() == [1.0, 0.0]
