"""Manifest readers (ours, release rows, MMAU/MMAR JSON), path maps, writer, and the seeded choice order."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import pytest

from echodistill.data.manifest import Item, ManifestError, read_manifest, resolve_path, write_manifest
from echodistill.data.prompts import build_prompt, format_question, ordered_choices


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_ours_roundtrip_and_relative_paths(tmp_path):
    m = _jsonl(tmp_path / "train.jsonl", [
        {"id": "a", "audio": "clips/a.wav", "question": "Q?", "choices": ["x", "y"], "target": "y", "task": "t",
         "split": "train", "noisy_audio": "noisy/a.wav", "noise_type": "pink", "snr": -5, "meta": {"k": 1}},
        {"id": 7, "audio": "/abs/b.wav", "question": "R?", "choices": ["u", "v", "w"], "target": "u", "extra": 3},
    ])
    a, b = read_manifest(m)
    assert a.audio == str(tmp_path / "clips" / "a.wav") and a.noisy_audio == str(tmp_path / "noisy" / "a.wav")
    assert (a.snr, a.noise_type, a.meta, a.split) == (-5.0, "pink", {"k": 1}, "train")
    assert b.id == "7" and b.audio == "/abs/b.wav" and b.meta == {"extra": 3}
    assert b.split == "train"  # inferred from the file name when a row has none
    out = tmp_path / "copy" / "m.jsonl"
    write_manifest(tmp_path / "m.jsonl", [a, b])
    first = json.loads((tmp_path / "m.jsonl").read_text().splitlines()[0])
    assert first["audio"] == "clips/a.wav" and first["noisy_audio"] == "noisy/a.wav"  # stored relative
    assert read_manifest(tmp_path / "m.jsonl") == [a, b]
    write_manifest(out, [a])
    assert json.loads(out.read_text())["audio"] == a.audio  # not under the folder: kept absolute
    assert Item.from_dict(json.loads(a.to_json())) == a


def test_release_rows(tmp_path):
    m = _jsonl(tmp_path / "val.jsonl", [
        {"id": "r1", "prompt": "What is heard?", "noisy_audio_path": "/root/EchoDistill/noisy/white/5dB/r1.wav",
         "clean_audio_path": "/root/EchoDistill/clean/r1.wav", "choices": ["dog", "cat"], "target": "dog",
         "noise_type": "white", "snr": 5},
    ])
    (it,) = read_manifest(m, path_map={"/root/EchoDistill/": "data/"})
    assert it.question == "What is heard?" and it.target == "dog" and it.split == "val"
    assert it.audio == str(tmp_path / "data" / "clean" / "r1.wav")  # mapped to relative, then anchored
    assert it.noisy_audio == str(tmp_path / "data" / "noisy" / "white" / "5dB" / "r1.wav")
    assert (it.noise_type, it.snr) == ("white", 5.0)
    assert read_manifest(m, path_map={"/root/EchoDistill/": "data/"}, fmt="release")[0] == it


def test_mmau_and_mmar_json(tmp_path):
    m = tmp_path / "mmau-test-mini.json"
    m.write_text(json.dumps([
        {"id": "m1", "audio_id": "./test-mini-audios/m1.wav", "question": "Which instrument?",
         "choices": ["piano", "violin"], "answer": "violin", "task": "music", "difficulty": "easy"},
        {"question_id": 9, "audio_path": "audio/m2.wav", "question": "Who speaks?", "choices": ["a", "b"],
         "answer": "a", "category": "speech", "sub-category": "speaker", "split": "dev"},
    ], indent=2))
    a, b = read_manifest(m)
    assert a.audio == str(tmp_path / "test-mini-audios" / "m1.wav") and a.target == "violin"
    assert (a.task, a.split, a.meta) == ("music", "test", {"difficulty": "easy"})
    assert (b.id, b.task, b.split) == ("9", "speech", "dev")


def test_errors_name_file_line_and_item(tmp_path):
    m = _jsonl(tmp_path / "m.jsonl", [
        {"id": "a", "audio": "a.wav", "question": "Q?", "choices": ["x", "y"], "target": "x"},
        {"id": "b", "audio": "b.wav", "question": "Q?", "choices": ["x", "y"], "target": "z"},
    ])
    with pytest.raises(ManifestError, match=r"m\.jsonl:2 \(item b\): target_not_in_choices.*fix:"):
        read_manifest(m)
    _jsonl(m, [{"id": "a", "audio": "a.wav", "question": "Q?", "choices": ["x", "y"], "target": "x"}] * 2)
    with pytest.raises(ManifestError, match=r"m\.jsonl:2 \(item a\): duplicate_id"):
        read_manifest(m)
    j = tmp_path / "broken.json"
    j.write_text('[\n {"id": "a", "audio_id": "a.wav", "question": "q", "choices": ["x", "y"], "answer": "x"},\n {"id": ]')
    with pytest.raises(ManifestError, match=r"broken\.json:3: malformed_json"):
        read_manifest(j)
    with pytest.raises(ManifestError, match="not found"):
        read_manifest(tmp_path / "absent.jsonl")


def test_resolve_path_prefers_longest_prefix(tmp_path):
    pm = {"/data": "/x", "/data/mmau": "/y"}
    assert resolve_path("/data/mmau/a.wav", tmp_path, pm) == "/y/a.wav"
    assert resolve_path("/data/other/a.wav", tmp_path, pm) == "/x/other/a.wav"
    assert resolve_path("a.wav", tmp_path, None) == str(tmp_path / "a.wav")


def _item(i, choices=("alpha", "beta", "gamma", "delta")):
    return Item(id=str(i), audio="a.wav", question="q?", choices=list(choices), target=choices[0])


def test_shuffle_is_deterministic_and_ignores_stored_order():
    it = _item("x1")
    order = ordered_choices(it, seed=3)
    assert sorted(order) == sorted(it.choices)
    assert ordered_choices(it, seed=3) == order
    assert ordered_choices(_item("x1", tuple(reversed(it.choices))), seed=3) == order
    assert any(ordered_choices(it, seed=s) != order for s in range(10))
    # Same result in another process with another hash seed (hashlib, not hash()).
    code = ("from echodistill.data.manifest import Item; from echodistill.data.prompts import ordered_choices;"
            "print(ordered_choices(Item('x1','a.wav','q?',['alpha','beta','gamma','delta'],'alpha'), 3))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "123"}).stdout.strip()
    assert out == str(order)


def test_target_position_is_spread():
    # Release-style items (target always stored first) end up at every position about equally.
    pos = Counter(ordered_choices(_item(f"id{k}"), seed=0).index("alpha") for k in range(800))
    assert set(pos) == {0, 1, 2, 3}
    assert all(150 <= n <= 250 for n in pos.values()), pos


def test_format_question():
    text = format_question(" How many? ", ["one", "two", "three"])
    assert text == "How many?\nChoices: (A) one (B) two (C) three\nAnswer with the text of one choice."
    prompt, shown = build_prompt(_item("p"), seed=1)
    assert all(c in prompt for c in shown) and sorted(shown) == sorted(_item("p").choices)
