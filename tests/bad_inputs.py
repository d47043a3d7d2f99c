"""Builds, in a temporary folder, a manifest that holds every problem ``data check`` knows, and a clean one.

``make_bad_corpus(dir)`` returns the manifest path and ``expected``: kind -> list of (line, item id or
None) where that kind must be reported. The stereo 48 kHz clip must pass unreported.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
import soundfile as sf

from train_helpers import tone as shared_tone

SR = 16_000
MAX_DURATION_S = 2.0  # the check runs with this limit, so the 3 s clip is too_long


def tone(seconds: float = 0.5, freq: float = 440.0, sr: int = SR, channels: int = 1) -> np.ndarray:
    """The shared tone maker (train_helpers.tone) without noise, duration first."""
    return shared_tone(freq, seconds, sr, noise=0.0, channels=channels)


def make_clips(d: Path) -> dict[str, Path]:
    """Good and bad audio files; names say what they are."""
    a = d / "audio"
    a.mkdir(parents=True, exist_ok=True)
    c = {}
    c["good"] = a / "good.wav"
    sf.write(c["good"], tone(0.5, 440), SR, subtype="PCM_16")
    c["good2"] = a / "good2.wav"
    sf.write(c["good2"], tone(0.5, 660), SR, subtype="PCM_16")
    c["noisy_good2"] = a / "noisy_good2.wav"
    sf.write(c["noisy_good2"], tone(0.5, 660) + 0.05 * np.random.default_rng(0).standard_normal(8000).astype(np.float32),
             SR, subtype="FLOAT")
    c["copy_of_good2"] = a / "copy_of_good2.flac"  # same samples, other name and codec: caught by content hash
    sf.write(c["copy_of_good2"], tone(0.5, 660), SR, subtype="PCM_16")
    c["stereo48k"] = a / "stereo48k.wav"
    sf.write(c["stereo48k"], tone(0.5, 330, sr=48_000, channels=2), 48_000, subtype="PCM_16")
    c["corrupt"] = a / "corrupt.wav"
    c["corrupt"].write_bytes(b"RIFF\x00\x00\x00\x00WAVEthis is not audio at all" * 3)
    c["empty"] = a / "empty.wav"
    sf.write(c["empty"], np.zeros(0, dtype=np.float32), SR, subtype="PCM_16")
    c["nan"] = a / "nan.wav"
    x = tone(0.5)
    x[100:200] = np.nan
    sf.write(c["nan"], x, SR, subtype="FLOAT")
    c["silent"] = a / "silent.wav"
    sf.write(c["silent"], np.zeros(SR // 2, dtype=np.float32), SR, subtype="PCM_16")
    c["long"] = a / "long.wav"
    sf.write(c["long"], tone(3.0), SR, subtype="PCM_16")
    c["short_noisy"] = a / "short_noisy.wav"  # 0.3 s: does not match the 0.5 s clean clip
    sf.write(c["short_noisy"], tone(0.3), SR, subtype="PCM_16")
    return c


def item(i: str, audio, question: str = None, choices=None, target=None, split: str = "train", **kw) -> dict:
    choices = choices if choices is not None else ["alpha", "beta", "gamma", "delta"]
    d = {"id": i, "audio": str(audio), "question": question or f"question {i}?", "choices": choices,
         "target": target if target is not None else choices[0], "task": "t", "split": split}
    d.update(kw)
    return d


def make_bad_corpus(d: Path) -> tuple[Path, dict[str, list[tuple[int, str | None]]]]:
    d = Path(d)
    c = make_clips(d)
    lines: list[bytes] = []
    expected: dict[str, list] = {}

    def add(row, kind=None, item_id=None):
        lines.append(row if isinstance(row, bytes) else json.dumps(row).encode("utf-8"))
        if kind:
            expected.setdefault(kind, []).append((len(lines), item_id))

    # 20 fine items with the target stored first -> position_bias (the release's habit).
    # Relative path on purpose: it resolves against the manifest's folder.
    for k in range(20):
        add(item(f"ok{k}", "audio/good.wav", question=f"fine question {k}?"))
    add(item("stereo", c["stereo48k"], question="stereo clip?"))  # must NOT be reported
    add(item("miss", d / "audio" / "nope.wav"), "missing_audio", "miss")
    add(item("corrupt", c["corrupt"]), "unreadable_audio", "corrupt")
    add(item("empty", c["empty"]), "empty_audio", "empty")
    add(item("nan", c["nan"]), "nonfinite_audio", "nan")
    add(item("silent", c["silent"]), "silent_audio", "silent")
    add(item("long", c["long"]), "too_long", "long")
    add(item("badtarget", c["good"], target="epsilon"), "target_not_in_choices", "badtarget")
    add(item("ok3", c["good"], question="dup id?"), "duplicate_id", "ok3")
    add(item("one", c["good"], choices=["only"], target="only"), "too_few_choices", "one")
    add(item("twice", c["good"], choices=["same", "Same", "other"], target="other"), "duplicate_choices", "twice")
    # Leakage: one question on good2 in train; the same file in val; a copy (other name/codec) in test.
    add(item("leak_a", c["good2"], question="What pitch?", split="train",
             noisy_audio=str(c["noisy_good2"]), noise_type="white", snr=5.0))
    add(item("leak_b", c["good2"], question="What pitch?", split="val"), "leakage", "leak_b")
    add(item("leak_c", c["copy_of_good2"], question="what  pitch?", split="test"), "leakage", "leak_c")
    add(b"{not json at all", "malformed_json", None)
    add({"id": "nofield", "audio": str(c["good"]), "choices": ["a", "b"], "target": "a"}, "missing_field", "nofield")
    # unlabeled and open-ended items are valid (must NOT be reported); an empty target is not
    add({"id": "unlab", "audio": str(c["good"]), "question": "unlabeled?", "choices": ["a", "b"]})
    add({"id": "openq", "audio": str(c["good"]), "question": "what is said?", "target": "a tone"})
    add({"id": "openunlab", "audio": str(c["good"]), "question": "describe it", "choices": []})
    add(item("emptytarget", c["good"], question="empty target?", target=""), "empty_target", "emptytarget")
    add({"id": "wrongtype", "audio": str(c["good"]), "question": "q?", "choices": "a,b", "target": "a"},
        "bad_field", "wrongtype")
    add(b'{"id": "latin1", "audio": "x.wav", "question": "caf\xe9?", "choices": ["a","b"], "target": "a"}',
        "non_utf8", None)
    add(item("noisymiss", c["good"], question="nm?", noisy_audio=str(d / "audio" / "gone.wav")),
        "missing_audio", "noisymiss")
    add(item("noisybad", c["good"], question="nb?", noisy_audio=str(c["corrupt"])), "unreadable_audio", "noisybad")
    add(item("noisylen", c["good"], question="nl?", noisy_audio=str(c["short_noisy"])),
        "noisy_length_mismatch", "noisylen")
    add(item("after", c["good"], question="still read after the bad lines?"))
    expected["position_bias"] = [(0, None)]
    m = d / "bad.jsonl"
    m.write_bytes(b"\n".join(lines) + b"\n")
    return m, expected


def make_clean_manifest(d: Path) -> Path:
    """A manifest that must pass: shuffled target positions, a stereo 48 kHz clip, a matching noisy clip."""
    d = Path(d)
    c = make_clips(d)
    rows = []
    for k in range(24):
        choices = ["alpha", "beta", "gamma", "delta"]
        rows.append(item(f"c{k}", c["good"], question=f"clean question {k}?", choices=choices,
                         target=choices[k % 4], split="train"))
    rows.append(item("s48", c["stereo48k"], question="stereo?", target="beta", split="val"))
    rows.append(item("nz", c["good2"], question="noisy ok?", target="gamma", split="val",
                     noisy_audio=str(c["noisy_good2"]), noise_type="white", snr=5))
    m = d / "clean.jsonl"
    m.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return m


# ================================================================ the CLI corpus (issue 15): >= 50 kinds
# Every kind is one named case with its exact expected outcome in each CLI it applies to:
#   check: the (kind, line, item id) `data check` prints (errors make exit 2; "truncated" is a counted note);
#   eval:  a counted skip (bad_items kind of that id, or a skipped noisy condition), or exit 2 with one
#          line naming file:line and the fix (structural problems: the strict reader stops there);
#   train: a counted skip ("skipped bad item <id>" / prompt_too_long count), or exit 2 with one line.
# Item-level kinds share ONE manifest (one CLI call each for check, eval and train); structural and
# whole-file kinds get a manifest each (cheap: the runs stop while reading it).

WINDOW_S = 1.0  # the tiny test model's window; the corpus runs with data.max_duration_s=1.0
MAX_PROMPT_TOKENS = 200  # data.max_prompt_tokens in the corpus runs


def _write(path: Path, wav: np.ndarray, sr: int = SR, subtype: str = "PCM_16") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wav, sr, subtype=subtype)
    return path


def corpus_clips(d: Path) -> dict[str, Path]:
    """make_clips plus the clips of the CLI corpus."""
    import os

    c = make_clips(d)
    a = d / "audio"
    c["tone8k"] = _write(a / "tone8k.wav", tone(0.5, 300, sr=8000), 8000)
    c["flac"] = _write(a / "tone.flac", tone(0.5, 350), SR, "PCM_16")
    c["u8"] = _write(a / "u8.wav", tone(0.5, 370), SR, "PCM_U8")
    c["hi_rate"] = _write(a / "hi_rate.wav", tone(0.5, 390, sr=96_000), 96_000)
    c["spaces"] = _write(a / "with space é.wav", tone(0.5, 410))
    c["upper"] = _write(a / "UPPER.WAV", tone(0.5, 430))
    c["symlink"] = a / "link.wav"
    os.symlink(c["good"], c["symlink"])
    c["broken_link"] = a / "broken_link.wav"
    os.symlink(a / "does_not_exist.wav", c["broken_link"])
    c["folder"] = a / "folder.wav"
    c["folder"].mkdir()
    c["fifo"] = a / "fifo.wav"
    os.mkfifo(c["fifo"])
    c["fifo_link"] = a / "fifo_link.wav"
    os.symlink(c["fifo"], c["fifo_link"])
    c["zero_bytes"] = a / "zero_bytes.wav"
    c["zero_bytes"].write_bytes(b"")
    c["text"] = a / "text.wav"
    c["text"].write_text("this is a text file, not audio\n")
    x = tone(0.5)
    x[50:60] = np.inf
    c["inf"] = _write(a / "inf.wav", x, SR, "FLOAT")
    c["tiny5ms"] = _write(a / "tiny5ms.wav", tone(0.005))
    c["one_sample"] = _write(a / "one_sample.wav", tone(0.5)[:1])
    full = (a / "good.wav").read_bytes()
    c["truncated_wav"] = a / "truncated.wav"  # the header claims 0.5 s; 64 samples are left
    c["truncated_wav"].write_bytes(full[:44 + 128])
    c["ten_minutes"] = _write(a / "ten_minutes.wav", np.tile(tone(1.0, 500), 600))
    c["noisy_nan"] = c["nan"]
    c["noisy_ok"] = _write(a / "noisy_ok.wav", tone(0.5, 440) + 0.05 * tone(0.5, 1234))
    return c


def make_cli_corpus(d: Path) -> dict:
    """The items manifest (every item-level kind, one per line) with per-CLI expectations, plus one
    manifest per structural/whole-file kind. Returns a dict (see the keys below)."""
    d = Path(d)
    c = corpus_clips(d)
    lines: list[bytes] = []
    kinds: dict[str, dict] = {}  # kind name -> expectations

    def add(name, row, **expect):
        lines.append(row if isinstance(row, bytes) else json.dumps(row).encode("utf-8"))
        iid = row.get("id") if isinstance(row, dict) else None
        kinds[name] = dict(expect, line=len(lines), id=iid)

    q = 0

    def it(iid, audio, **kw):
        nonlocal q
        q += 1
        choices = ["alpha", "beta", "gamma", "delta"]
        kw.setdefault("target", choices[q % 4])
        return item(iid, audio, question=kw.pop("question", f"corpus question {q}?"), choices=choices, **kw)

    # ---- fine inputs: must pass everywhere, unreported
    for k in range(6):
        add(f"fine_{k}" if k else "plain_wav", it(f"ok{k}", "audio/good.wav"), ok=True)
    add("stereo_48k", it("stereo48", c["stereo48k"]), ok=True)
    add("mono_8k_resampled", it("mono8k", c["tone8k"]), ok=True)
    add("flac", it("flac", c["flac"]), ok=True)
    add("unsigned_8bit_wav", it("u8", c["u8"]), ok=True)
    add("96k_resampled", it("hirate", c["hi_rate"]), ok=True)
    add("unicode_space_path", it("spaces", c["spaces"]), ok=True)
    add("uppercase_suffix", it("upper", c["upper"]), ok=True)
    add("symlink_to_audio", it("symlink", c["symlink"]), ok=True)
    add("premixed_ok", it("premixed_ok", c["good"], noisy_audio=str(c["noisy_ok"]), noise_type="white", snr=5),
        ok=True)
    # an open-ended question (no choices) with its reference answer: trained and evaluated as free text
    add("open_ended_labeled", {"id": "openq", "audio": "audio/good.wav", "question": "What do you hear?",
                               "target": "a tone", "task": "t", "split": "train"}, ok=True)
    # ---- long clips: truncated to the window, counted (data.long_audio=truncate, the default)
    add("long_clip_truncated", it("long3s", c["long"]), note="truncated", truncated=True)
    add("ten_minute_clip_bounded", it("tenmin", c["ten_minutes"]), note="truncated", truncated=True)
    # ---- bad clean audio: data check error; eval and train skip the item, counted
    for name, iid, clip, kind in [
        ("missing_audio", "miss", d / "audio" / "nope.wav", "missing_audio"),
        ("broken_symlink", "brokenlink", c["broken_link"], "missing_audio"),
        ("folder_as_audio", "folder", c["folder"], "not_a_file"),
        ("fifo_as_audio", "fifo", c["fifo"], "not_a_file"),
        ("symlink_to_fifo", "fifolink", c["fifo_link"], "not_a_file"),
        ("char_device_as_audio", "devnull", "/dev/null", "not_a_file"),
        ("corrupt_wav", "corrupt", c["corrupt"], "unreadable_audio"),
        ("zero_byte_file", "zerobytes", c["zero_bytes"], "unreadable_audio"),
        ("text_file_as_wav", "textwav", c["text"], "unreadable_audio"),
        ("empty_audio", "empty", c["empty"], "empty_audio"),
        ("nan_samples", "nan", c["nan"], "nonfinite_audio"),
        ("inf_samples", "inf", c["inf"], "nonfinite_audio"),
        ("silent_clip", "silent", c["silent"], "silent_audio"),
        ("clip_5ms", "tiny5ms", c["tiny5ms"], "too_short"),
        ("one_sample_clip", "onesample", c["one_sample"], "too_short"),
        ("truncated_wav", "truncwav", c["truncated_wav"], "too_short"),
    ]:
        add(name, it(iid, clip), kind=kind)
    # ---- prompts: over data.max_prompt_tokens, and far over the model's positions (100 KB question)
    add("prompt_over_configured_max", it("longq", c["good"], question="why " * 400), kind="prompt_too_long")
    add("prompt_over_model_positions", it("hugeq", c["good"], question="x" * 100_000), kind="prompt_too_long")
    # ---- bad pre-mixed noisy clips: data check error; eval skips that noisy condition only; train
    #      draws its own noise (never reads noisy_audio), so the item trains
    for name, iid, clip, kind in [
        ("noisy_wrong_length", "noisylen", c["short_noisy"], "noisy_length_mismatch"),
        ("noisy_missing", "noisymiss", d / "audio" / "gone.wav", "missing_audio"),
        ("noisy_corrupt", "noisybad", c["corrupt"], "unreadable_audio"),
        ("noisy_nan", "noisynan", c["noisy_nan"], "nonfinite_audio"),
    ]:
        add(name, it(iid, c["good2"], noisy_audio=str(clip), noise_type="white", snr=0), kind=kind, noisy=True)
    items = d / "items.jsonl"
    items.write_bytes(b"\n".join(lines) + b"\n")

    # ---- structural kinds: one manifest each (a good row first, the bad row on line 2)
    structural: dict[str, tuple[bytes, str, Optional[str]]] = {
        "malformed_json": (b'{"id": "x", "audio": ', "malformed_json", None),
        "missing_field": (json.dumps({"id": "nofield", "audio": str(c["good"]), "choices": ["a", "b"],
                                      "target": "a"}).encode(), "missing_field", "nofield"),
        "choices_not_a_list": (json.dumps(item("strchoices", c["good"], choices="a,b", target="a")).encode(),
                               "bad_field", "strchoices"),
        "choice_is_null": (json.dumps(item("nullchoice", c["good"], choices=["a", None], target="a")).encode(),
                           "bad_field", "nullchoice"),
        "question_not_a_string": (json.dumps(dict(item("numq", c["good"]), question=42)).encode(),
                                  "bad_field", "numq"),
        "id_is_bool": (json.dumps(dict(item("boolid", c["good"]), id=True)).encode(), "bad_field", None),
        "meta_not_an_object": (json.dumps(item("metalist", c["good"], meta=[1, 2])).encode(),
                               "bad_field", "metalist"),
        "snr_not_a_number": (json.dumps(item("snrtxt", c["good"], noisy_audio=str(c["noisy_ok"]), noise_type="white",
                                             snr="loud")).encode(), "bad_field", "snrtxt"),
        "non_utf8": (b'{"id": "latin1", "audio": "x.wav", "question": "caf\xe9?", "choices": ["a","b"], "target": "a"}',
                     "non_utf8", None),
        "deeply_nested_json": (b'{"id": "deep", "meta": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
                               "malformed_json", None),
        "scalar_row": (b"42", "malformed_json", None),
        "line_too_long": (json.dumps(item("huge", c["good"], meta={"blob": "z" * (5 << 20)})).encode(),
                          "line_too_long", None),
        "target_not_in_choices": (json.dumps(item("badtarget", c["good"], target="epsilon")).encode(),
                                  "target_not_in_choices", "badtarget"),
        "target_case_mismatch": (json.dumps(item("casetarget", c["good"], target="ALPHA")).encode(),
                                 "target_not_in_choices", "casetarget"),
        "too_few_choices": (json.dumps(item("one", c["good"], choices=["only"], target="only")).encode(),
                            "too_few_choices", "one"),
        "empty_target": (json.dumps(item("emptytarget", c["good"], target="")).encode(), "empty_target",
                         "emptytarget"),
        "unlabeled_open_ended_target_not_a_string": (
            json.dumps({"id": "numtarget", "audio": str(c["good"]), "question": "how many?", "target": 3}).encode(),
            "bad_field", "numtarget"),
        "duplicate_choices": (json.dumps(item("twice", c["good"], choices=["same", "Same", "o"], target="o")).encode(),
                              "duplicate_choices", "twice"),
        "empty_choice": (json.dumps(item("emptych", c["good"], choices=["a", "", "b"], target="a")).encode(),
                         "empty_choice", "emptych"),
        "duplicate_id": (json.dumps(item("first", c["good2"], question="again?")).encode(), "duplicate_id", "first"),
        "noisy_without_snr": (json.dumps(item("nosnr", c["good"], noisy_audio=str(c["noisy_ok"]))).encode(),
                              "noisy_without_snr", "nosnr"),
    }
    first = json.dumps(item("first", c["good"], question="the fine first row?")).encode()
    struct_files = {}
    for name, (row, kind, iid) in structural.items():
        p = d / "structural" / f"{name}.jsonl"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(first + b"\n" + row + b"\n")
        struct_files[name] = (p, kind, iid)
    # ---- whole-file kinds
    files = {}
    for name, data in {"empty_manifest": b"", "blank_lines_only": b"\n\n  \n"}.items():
        p = d / "files" / f"{name}.jsonl"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        files[name] = p
    files["manifest_is_a_folder"] = d / "files" / "folder.jsonl"
    files["manifest_is_a_folder"].mkdir()
    files["manifest_missing"] = d / "files" / "absent.jsonl"
    p = d / "files" / "truncated_list.json"
    p.write_text('[{"id": "m1", "audio_id": "' + str(c["good"]) + '", "question": "q?", "choices": ["a", "b"], '
                 '"answer": "a"},\n {"id": "m2", "audio_id": "x.wav"')
    files["json_list_truncated"] = p
    return {"dir": d, "clips": c, "items": items, "kinds": kinds, "structural": struct_files, "files": files}


def make_bad_weights(d: Path, model_dir: Path) -> dict[str, Path]:
    """Checkpoint folders a user may pass by mistake: a truncated model.safetensors, no weights at all."""
    import shutil

    out = {}
    t = Path(d) / "truncated_ckpt"
    shutil.copytree(model_dir, t)
    st = next(t.glob("*.safetensors"))
    st.write_bytes(st.read_bytes()[: st.stat().st_size // 2])
    out["truncated_safetensors"] = t
    e = Path(d) / "no_weights_ckpt"
    e.mkdir(parents=True)
    (e / "config.json").write_text((Path(model_dir) / "config.json").read_text())
    out["checkpoint_without_weights"] = e
    return out


def make_bad_noise(d: Path) -> dict[str, list]:
    """noise.extra_noise_paths values: NaN file, silent file, a partly bad bank, a missing path."""
    a = Path(d) / "noise"
    good = _write(a / "good_noise.wav", (0.1 * np.random.default_rng(3).standard_normal(16000)).astype(np.float32))
    x = np.full(16000, 0.1, np.float32)
    x[5] = np.nan
    nan = _write(a / "nan_noise.wav", x, SR, "FLOAT")
    silent = _write(a / "silent_noise.wav", np.zeros(16000, np.float32))
    corrupt = a / "corrupt_noise.wav"
    corrupt.write_bytes(b"RIFF....WAVEnope")
    return {"nan_noise_file": ([nan], "NaN"), "silent_noise_file": ([silent], "silent"),
            "partly_bad_noise_bank": ([good, corrupt], "1 of 2 noise file(s)"),
            "missing_noise_path": ([a / "absent.wav"], "not found")}
