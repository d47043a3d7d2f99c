"""Hugging Face datasets as manifests: an Audio column (bytes at 22.05/8 kHz) + question/choices/answer
columns under other names, from save_to_disk, parquet and JSON; data check, train (2 steps) and eval."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import soundfile as sf

datasets = pytest.importorskip("datasets")  # the optional extra: pip install 'echodistill[hf]'

from echodistill.audio.io import load_audio  # noqa: E402
from echodistill.cli import main  # noqa: E402
from echodistill.data.manifest import ManifestError, read_manifest  # noqa: E402

from train_helpers import WORDS, make_dataset, read_metrics, tiny_config, tone  # noqa: E402

COLUMNS = {"question": "prompt", "choices": "options", "answer": "label"}
COLUMN_OVERRIDE = "data.columns={question: prompt, choices: options, answer: label}"


def _wav_bytes(wav: np.ndarray, sr: int, fmt: str = "WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wav, sr, format=fmt, subtype="PCM_16")
    return buf.getvalue()


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ECHODISTILL_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """The same 6 items as: a save_to_disk folder (Audio bytes), a parquet file, and clip files whose
    originals the test compares against."""
    root = tmp_path_factory.mktemp("hf")
    rows = {"qid": [], "clip": [], "prompt": [], "options": [], "label": []}
    originals = []
    for i in range(6):
        k = i % len(WORDS)
        sr = 22050 if i % 2 == 0 else 8000  # neither is 16 kHz: our loader resamples
        wav = tone(200 + 150 * k + 7 * i, seconds=0.6, sr=sr, seed=i)
        path = root / "orig" / f"c{i}.{'wav' if i % 3 else 'flac'}"
        path.parent.mkdir(exist_ok=True)
        sf.write(path, wav, sr)
        originals.append(path)
        rows["qid"].append(f"q{i}")
        rows["clip"].append({"bytes": path.read_bytes(), "path": path.name})
        rows["prompt"].append("Which tone is it?")
        rows["options"].append(list(WORDS))
        rows["label"].append(k)  # the answer as an index into the options
    # Built as {bytes, path} structs and cast to Audio(): what Dataset.cast_column(..., Audio()) stores,
    # without needing torchcodec (datasets' own encoder) here.
    features = datasets.Features({"qid": datasets.Value("string"),
                                  "clip": {"bytes": datasets.Value("binary"), "path": datasets.Value("string")},
                                  "prompt": datasets.Value("string"), "options": [datasets.Value("string")],
                                  "label": datasets.Value("int64")})
    ds = datasets.Dataset.from_dict(rows, features=features).cast_column("clip", datasets.Audio())
    assert isinstance(ds.features["clip"], datasets.Audio)
    ds.save_to_disk(str(root / "ds_train"))
    ds.to_parquet(str(root / "train.parquet"))
    datasets.DatasetDict({"train": ds, "test": ds}).save_to_disk(str(root / "ds_dict"))
    return root, originals


def test_save_to_disk_and_parquet_read_alike_with_our_resampling(sources):
    root, originals = sources
    a = read_manifest(root / "ds_train", columns=COLUMNS)
    b = read_manifest(root / "train.parquet", columns=COLUMNS)
    assert [it.id for it in a] == [f"q{i}" for i in range(6)] == [it.id for it in b]
    assert [it.target for it in a] == [WORDS[i % 4] for i in range(6)] == [it.target for it in b]
    assert a[0].question == "Which tone is it?" and a[0].choices == WORDS and a[0].split == "ds_train"
    for it, orig in zip(a, originals):
        got, want = load_audio(it.audio), load_audio(orig)  # both through soundfile + soxr to 16 kHz
        assert got.shape == want.shape == (int(0.6 * 16000),) and np.array_equal(got, want)
    assert a[1].audio.endswith(".wav") and a[0].audio.endswith(".flac")  # the stored name's format kept


def test_json_rows_with_relative_paths(sources, tmp_path):
    root, originals = sources
    j = tmp_path / "items.jsonl"
    j.write_text("".join(json.dumps({"audio": f"../{o.parent.name}/{o.name}", "question": "Which?",
                                     "choices": WORDS, "answer": WORDS[i % 4]}) + "\n"
                         for i, o in enumerate(originals)))
    (tmp_path / "orig").symlink_to(root / "orig")
    items = read_manifest(j, fmt="hf", path_map={"../": str(tmp_path) + "/"})
    assert [it.id for it in items] == [f"items-{i}" for i in range(6)]  # no id column: file stem + row
    assert np.array_equal(load_audio(items[3].audio), load_audio(originals[3]))


def test_clear_errors(sources, tmp_path):
    root, _ = sources
    auto = read_manifest(root / "ds_train")  # prompt/options/label are usual names: found without a map
    assert [(it.question, it.target) for it in auto] == [(it.question, it.target)
                                                         for it in read_manifest(root / "ds_train", columns=COLUMNS)]
    odd = datasets.load_from_disk(str(root / "ds_train")).rename_column("prompt", "text")  # no decoding
    odd.save_to_disk(str(tmp_path / "odd"))
    with pytest.raises(ManifestError, match=r"no column for question .*columns: qid, clip, text, options, label\); "
                                            r"map it in the config: data.columns.question=<column>"):
        read_manifest(tmp_path / "odd")
    assert read_manifest(tmp_path / "odd", columns={"question": "text"})[0].question == "Which tone is it?"
    with pytest.raises(ManifestError, match="DatasetDict with splits test, train; point at one split"):
        read_manifest(root / "ds_dict")
    assert len(read_manifest(root / "ds_dict" / "test", columns=COLUMNS)) == 6
    with pytest.raises(ManifestError, match="maps target to 'nope', which is not a column"):
        read_manifest(root / "ds_train", columns={**COLUMNS, "answer": "nope"})
    with pytest.raises(ManifestError, match="unknown field"):
        read_manifest(root / "ds_train", columns={"questions": "prompt"})


def test_data_check_cli(sources, tmp_path, capsys):
    root, _ = sources
    cols = [f"--column={k}={v}" for k, v in COLUMNS.items()]
    assert main(["data", "check", str(root / "ds_train"), *cols]) == 0
    assert "OK, no problems found" in capsys.readouterr().out
    odd = datasets.load_from_disk(str(root / "ds_train")).rename_column("prompt", "text")
    odd.save_to_disk(str(tmp_path / "odd"))
    assert main(["data", "check", str(tmp_path / "odd"), "data.columns={question: text}"]) == 0  # config key
    capsys.readouterr()
    bad = datasets.load_from_disk(str(root / "ds_train")).cast_column("clip", datasets.Audio(decode=False)).map(
        lambda r, i: {"label": 9 if i == 2 else r["label"]}, with_indices=True)
    bad.save_to_disk(str(tmp_path / "bad"))
    assert main(["data", "check", str(tmp_path / "bad"), *cols]) == 2
    out = capsys.readouterr().out
    assert "bad:3" in out and "row index 2: answer index 9 is out of range for 4 choices" in out


@pytest.mark.slow
def test_train_two_steps_and_eval_on_a_dataset(sources, tiny_qwen2_audio_dir, tmp_path):
    from echodistill.eval.evaluate import run_eval
    from echodistill.train.trainer import run_train

    root, _ = sources
    noise = make_dataset(tmp_path / "noise_only", n_train=1, n_val=1)  # only for its noise folder
    cfg = tiny_config(noise, tiny_qwen2_audio_dir, tmp_path / "run", "train.variant=echodistill",
                      f"data.train_manifest={root / 'ds_train'}", f"data.val_manifest={root / 'train.parquet'}",
                      COLUMN_OVERRIDE, "eval.noise_types=[white]", "eval.snr_levels=[0]", "eval.bootstrap=50")
    final = run_train(cfg)
    rows = read_metrics(tmp_path / "run")
    assert [r["step"] for r in rows] == [1, 2] and "val_clean_acc" in rows[-1]
    meta = run_eval(cfg, checkpoint=final, manifest=root / "ds_train", out_dir=tmp_path / "eval")
    assert meta["n_items"] == 6 and meta["n_predictions"] == 6 * 3  # clean, white 0 dB, silent
    preds = [json.loads(line) for line in (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert {p["id"] for p in preds} == {f"q{i}" for i in range(6)}


def test_predict_takes_a_dataset(sources):
    from echodistill.inference import gather_queries

    root, _ = sources
    qs = gather_queries(root / "train.parquet", columns=COLUMNS)
    assert [q.id for q in qs] == [f"q{i}" for i in range(6)] and qs[0].choices == WORDS
    assert qs[0].question == "Which tone is it?" and qs[0].audio.endswith(".flac")


def test_without_datasets_installed_one_line(sources, monkeypatch):
    root, _ = sources
    monkeypatch.setitem(__import__("sys").modules, "datasets", None)  # as if not installed
    with pytest.raises(ManifestError, match=r"needs the `datasets` package: pip install 'echodistill\[hf\]'"):
        read_manifest(root / "ds_train")
