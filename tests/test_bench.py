"""`echodistill data build --size small`: counts, choices, disjoint splits, clips, noise bank, datasheet,
determinism (two fresh builds with the same seed are byte-identical), and the missing-source path."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from echodistill.data import bench
from echodistill.data import sources as S

AVAIL = S.probe()
pytestmark = pytest.mark.skipif(
    not (AVAIL.flite or AVAIL.espeak) or not AVAIL.asterisk,
    reason="benchmark sources absent: needs flite/espeak-ng and asterisk-core-sounds-en-wav "
           "(run scripts/setup.sh as root or apt-get install flite espeak-ng asterisk-core-sounds-en-wav)")

SPLITS = ("train", "val", "test", "test_heldout")


def _read(out: Path, split: str) -> list[dict]:
    return [json.loads(line) for line in (out / f"{split}.jsonl").read_text().splitlines()]


def _digest(folder: Path) -> dict[str, str]:
    """sha1 of every manifest, clip and noise file (the cache and datasheets excluded)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if p.is_file() and not rel.startswith(".cache") and not rel.startswith("datasheet"):
            out[rel] = hashlib.sha1(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "a"
    sheet = bench.build_benchmark(out, seed=3, size="small")
    return out, sheet


def test_counts_and_schema(built):
    out, sheet = built
    ntasks = len(sheet["tasks"])
    assert ntasks >= 5
    kinds = {t["kind"] for t in sheet["tasks"]}
    assert kinds == {"speech", "music"} or not AVAIL.fluidsynth
    for split in SPLITS:
        rows = _read(out, split)
        want = bench.SIZES["small"][split] * ntasks
        assert want * 0.9 <= len(rows) <= want, (split, len(rows), want)
        for r in rows:
            assert set(r) >= {"id", "audio", "question", "choices", "target", "task", "split", "meta"}
            assert r["split"] == split
            assert len(r["choices"]) == 4 and len(set(r["choices"])) == 4
            assert r["target"] in r["choices"]
            task = next(t for t in sheet["tasks"] if t["name"] == r["task"])
            assert set(r["choices"]) <= set(task["labels"])  # distractors from the same task
            assert {"voice", "source", "licence"} <= set(r["meta"])
            assert len(r["question"]) < 60
    rows = [r for s in SPLITS for r in _read(out, s)]
    first = sum(r["choices"][0] == r["target"] for r in rows) / len(rows)
    assert first < 0.45  # seeded order, never target-first


def test_splits_disjoint_and_heldout_voices(built):
    out, sheet = built
    by = {s: _read(out, s) for s in SPLITS}
    for key in ("id", "audio"):
        seen = [r[key] for s in SPLITS for r in by[s]]
        assert len(seen) == len(set(seen)), key
    groups = {s: {r["meta"]["group"] for r in by[s]} for s in SPLITS}
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1:]:
            assert not groups[a] & groups[b], (a, b)
    heldout = {v["name"] for v in sheet["voices"] if v["role"] == "test_heldout only"}
    assert "asterisk_human" in heldout
    speech_voices = {r["meta"]["voice"] for s in ("train", "val", "test") for r in by[s]
                     if r["meta"]["source"] != "fluidsynth"}
    assert not speech_voices & heldout
    ho_speech = {r["meta"]["voice"] for r in by["test_heldout"] if r["meta"]["source"] != "fluidsynth"}
    assert ho_speech and ho_speech <= heldout


def test_clips_are_valid(built):
    out, _ = built
    from echodistill.audio.io import load_audio
    for split in SPLITS:
        for r in _read(out, split):
            path = out / r["audio"]
            assert path.is_file() and r["audio"].startswith(f"audio/{r['task']}/")
            info = sf.info(str(path))
            assert info.samplerate == 16000 and info.channels == 1
            assert info.frames / 16000 <= 2.0
            load_audio(path, min_duration_s=0.1, max_duration_s=2.0)  # decodable, not silent


def test_noise_bank_and_loader(built):
    out, sheet = built
    for sub in ("babble", "music", "midi"):
        files = sorted((out / "noise" / sub).glob("*.wav"))
        assert files, sub
        assert len(files) == sheet["noise"]["files"][sub]
        for f in files:
            info = sf.info(str(f))
            assert info.samplerate == 16000 and info.channels == 1 and info.frames > 16000
    assert set(sheet["noise"]["types_heldout"]) == {"hum", "midi"}
    from echodistill.audio.noise import NoiseBank
    bank = NoiseBank(out / "noise")
    for t in ("babble", "music", "midi"):
        assert t in bank.types
        x = bank.sample(t, 16000, np.random.default_rng(0))
        assert x.shape == (16000,) and np.abs(x).max() > 0


def test_datasheet_matches_files(built):
    out, _ = built
    sheet = json.loads((out / "datasheet.json").read_text())
    for split in SPLITS:
        rows = _read(out, split)
        assert sheet["counts"]["split"][split] == len(rows)
        assert sheet["counts"]["task"][split] == dict(Counter(r["task"] for r in rows))
        assert sheet["counts"]["voice"][split] == dict(Counter(r["meta"]["voice"] for r in rows))
        assert sheet["counts"]["source"][split] == dict(Counter(r["meta"]["source"] for r in rows))
    assert sheet["seed"] == 3 and "--seed 3" in sheet["rebuild_command"]
    md = (out / "datasheet.md").read_text()
    assert "CC-BY-SA-3.0" in md and "asterisk_human" in md and "held out" in md


@pytest.mark.slow
def test_same_seed_same_bytes(built, tmp_path):
    out, _ = built
    again = tmp_path / "b"
    bench.build_benchmark(again, seed=3, size="small")  # fresh folder: no shared cache
    assert _digest(out) == _digest(again)
    # a rebuild into the same folder reuses the utterance cache and still gives the same bytes
    bench.build_benchmark(again, seed=3, size="small")
    assert _digest(out) == _digest(again)


@pytest.mark.slow
def test_other_seed_differs(built, tmp_path):
    out, _ = built
    other = tmp_path / "c"
    bench.build_benchmark(other, seed=4, size="small")
    a = [(r["target"], r["choices"]) for r in _read(out, "train")]
    b = [(r["target"], r["choices"]) for r in _read(other, "train")]
    assert a != b


def test_missing_sources_clear_error(tmp_path, monkeypatch):
    empty = S.Availability(missing=["flite not found (Debian package: flite)"])
    monkeypatch.setattr(S, "probe", lambda: empty)
    with pytest.raises(bench.BenchmarkError, match="flite"):
        bench.build_benchmark(tmp_path / "x", seed=0, size="small")


def test_probe_names_missing_package(monkeypatch, tmp_path):
    monkeypatch.setattr(S, "ASTERISK_DIR", tmp_path / "nowhere")
    a = S.probe()
    assert not a.asterisk
    assert any("asterisk-core-sounds-en-wav" in m for m in a.missing)


# ------------------------------------------------------------------ sources: soundfonts, rooms, voices
def test_heldout_soundfont_and_rooms_only_in_test_heldout(built):
    out, sheet = built
    held = bench.HELDOUT_SOUNDFONT
    held_family = S.SOUNDFONT_BY_NAME[held].family
    assert all(S.SOUNDFONT_BY_NAME[f].family != held_family for f in bench.TRAIN_SOUNDFONTS)
    for split in SPLITS:
        rows = _read(out, split)
        music = [r for r in rows if r["meta"]["source"] == "fluidsynth"]
        rooms = {r["meta"]["room"] for r in rows} - {"dry"}
        if split == "test_heldout":
            assert {r["meta"]["soundfont"] for r in music} <= {held}
            assert all(room.startswith("heldout_room") for room in rooms)
        else:
            assert music and all(r["meta"]["soundfont"] in bench.TRAIN_SOUNDFONTS for r in music)
            assert all(room.startswith("seen_room") for room in rooms)
    if held in AVAIL.soundfonts:
        assert sheet["counts"]["soundfont"]["test_heldout"] == {held: sheet["counts"]["source"]["test_heldout"]
                                                               ["fluidsynth"]}
    train_rows = _read(out, "train")
    assert len({r["meta"]["soundfont"] for r in train_rows if "soundfont" in r["meta"]}) >= min(
        2, len(set(AVAIL.soundfonts) & set(bench.TRAIN_SOUNDFONTS)))
    assert any(r["meta"]["room"] != "dry" for r in train_rows)  # a share of training clips is reverberant


def test_datasheet_counts_sources(built):
    out, _ = built
    sheet = json.loads((out / "datasheet.json").read_text())
    for split in SPLITS:
        rows = _read(out, split)
        assert sheet["counts"]["soundfont"][split] == dict(Counter(r["meta"]["soundfont"] for r in rows
                                                                   if "soundfont" in r["meta"]))
        assert sum(sheet["counts"]["room"][split].values()) == len(rows)
    md = (out / "datasheet.md").read_text()
    assert "Items per soundfont and split" in md and "Items per room and split" in md


def test_music_rendering_is_seeded_and_reproducible():
    if not (AVAIL.fluidsynth and AVAIL.soundfonts):
        pytest.skip("fluidsynth or a General MIDI soundfont is not installed (run scripts/setup.sh as root)")
    from echodistill.data import acoustics as A
    task = next(t for t in bench.TASKS if t.name == "instrument")
    fonts = tuple(AVAIL.soundfonts)
    a, b = (bench._music_spec(task, "seen", 7, 11, fonts) for _ in range(2))
    assert a.notes == b.notes and a.soundfont == b.soundfont and a.mastering == b.mastering
    other = bench._music_spec(task, "seen", 8, 11, fonts)
    assert (other.notes, other.mastering) != (a.notes, a.mastering)
    room = A.make_rooms(bench._rng(11, "rooms", "seen"), "seen")[3]
    assert room == A.make_rooms(bench._rng(11, "rooms", "seen"), "seen")[3]
    a.room = b.room = room
    path = S.soundfont_path(a.soundfont)
    wa = a.condition(S.render_clips([a.notes], path)[0])
    wb = b.condition(S.render_clips([b.notes], path)[0])
    assert wa.size > 16000 and np.array_equal(wa, wb)
    assert np.isfinite(wa).all() and np.abs(wa).max() > 1e-3


def test_missing_soundfonts_give_setup_message_and_skip_count(tmp_path, monkeypatch, capsys):
    if not (AVAIL.fluidsynth and "timgm6mb" in AVAIL.soundfonts and AVAIL.espeak):
        pytest.skip("needs fluidsynth, timgm6mb-soundfont and espeak-ng (run scripts/setup.sh as root)")
    # a machine with only TimGM6mb: the other soundfonts are named with their Debian packages
    only = tmp_path / "sounds" / "sf2"
    only.mkdir(parents=True)
    (only / "TimGM6mb.sf2").symlink_to(S.SOUNDFONT_BY_NAME["timgm6mb"].path)
    monkeypatch.setattr(S, "SOUNDFONT_DIR", tmp_path / "sounds")
    a = S.probe()
    assert a.soundfonts == ("timgm6mb",)
    assert any("fluid-soundfont-gm" in m for m in a.missing)
    assert any("csound-soundfont" in m for m in a.missing)
    with pytest.raises(FileNotFoundError, match="apt-get install csound-soundfont"):
        S.soundfont_path(bench.HELDOUT_SOUNDFONT)
    # the build renders every music clip with the soundfont it has and skips held-out music, counted
    monkeypatch.setattr(bench, "SIZES", {"small": {"train": 6, "val": 2, "test": 2, "test_heldout": 2}})
    monkeypatch.setattr(bench, "TASKS", [t for t in bench.TASKS if t.name in ("spoken_number", "spoken_letter",
                                                                               "instrument")])
    sheet = bench.build_benchmark(tmp_path / "b", seed=0, size="small")
    err = capsys.readouterr().err
    assert "2 test_heldout music items skipped" in err and "apt-get install csound-soundfont" in err
    assert sheet["counts"]["soundfont"]["train"] == {"timgm6mb": sheet["counts"]["task"]["train"]["instrument"]}
    assert "instrument" not in sheet["counts"]["task"]["test_heldout"]
    assert any("csound-soundfont" in m for m in sheet["missing_sources"])


def test_check_knows_source_fields(built, tmp_path):
    from echodistill.data.check import check_manifest
    out, _ = built
    assert not [p for p in check_manifest(out / "train.jsonl") if p.kind.startswith(("heldout_source", "bad_source"))]
    rows = _read(out, "train")
    music = next(r for r in rows if r["meta"]["source"] == "fluidsynth")
    speech = next(r for r in rows if r["meta"]["source"] != "fluidsynth")
    bad = [dict(music, id="a", meta=dict(music["meta"], soundfont=bench.HELDOUT_SOUNDFONT)),
           dict(speech, id="b", meta=dict(speech["meta"], voice="asterisk_human")),
           dict(speech, id="c", meta=dict(speech["meta"], room="heldout_room_01", rt60_s=0.5)),
           dict(music, id="d", meta=dict(music["meta"], soundfont="nosuch")),
           dict(speech, id="e", meta=dict(speech["meta"], room="seen_room_01", rt60_s=None))]
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(dict(r, audio=str(out / r["audio"]))) + "\n" for r in bad))
    kinds = {p.location.split("item ")[-1].rstrip(")"): p.kind for p in check_manifest(path)
             if "source" in p.kind}
    assert kinds == {"a": "heldout_source_in_training", "b": "heldout_source_in_training",
                     "c": "heldout_source_in_training", "d": "bad_source_field", "e": "bad_source_field"}


def test_evidence_and_inferred_tasks(built):
    out, sheet = built
    by_id = {r["id"]: r for s in SPLITS for r in _read(out, s)}
    assert all(isinstance(r.get("evidence"), str) and r["evidence"].strip() for r in by_id.values())
    words = {r["evidence"] for r in by_id.values() if r["task"] == "spoken_word"}
    assert not any("kebeck" in w or "-" in w for w in words)  # words as said, not a TTS spelling
    inferred = [r for r in by_id.values() if "inferred_from" in r["meta"]]
    assert {r["task"] for r in inferred} == set(bench.INFERRED)
    for r in inferred:
        src = by_id[r["meta"]["inferred_from"]]
        source_task, answer_of = bench.INFERRED[r["task"]]
        assert src["task"] == source_task and src["split"] == r["split"] and src["meta"]["group"] == r["meta"]["group"]
        assert r["target"] == answer_of(src["target"]) != src["target"]
        assert r["evidence"] == src["evidence"]
        assert (out / r["audio"]).read_bytes() == (out / src["audio"]).read_bytes()
    music = [r for r in by_id.values() if r["task"] == "melody_contour"]
    assert all(r["evidence"].endswith(r["target"]) and r["meta"]["instrument"] in r["evidence"] for r in music)
    assert "Evidence:" in (out / "datasheet.md").read_text()
