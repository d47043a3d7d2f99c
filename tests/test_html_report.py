"""report.html: self-contained page with tables, plots and, per noise type, clips where two really
trained tiny models (clean warm-up vs sft-noisy) disagree; opened in headless Chromium when installed."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf

from echodistill.eval.html_report import pick_examples

from train_helpers import make_dataset, tiny_config

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory, tiny_qwen2_audio_dir):
    from echodistill.eval.evaluate import run_eval
    from echodistill.eval.report import make_report
    from echodistill.train.sft import run_warmup

    root = tmp_path_factory.mktemp("html_report")
    data = make_dataset(root / "data", n_train=16, n_val=8)
    common = ["warmup.max_steps=40", "warmup.prompts_per_device=8", "warmup.learning_rate=3e-3",
              "warmup.eval_steps=0", "warmup.logging_steps=10", "eval.noise_types=[white,music]",
              "eval.snr_levels=[-5,5]", "eval.bootstrap=50", f"data.test_manifest={data}/val.jsonl"]
    evals = []
    for name, extra in (("warmup", []), ("sft-noisy", ["warmup.noisy=true"])):
        cfg = tiny_config(data, tiny_qwen2_audio_dir, root / name, *common, *extra)
        run_warmup(cfg, progress=False)
        run_eval(cfg, checkpoint=root / name / "final", out_dir=root / f"eval_{name}", name=name)
        evals.append(root / f"eval_{name}")
    make_report(evals, root / "report", baseline="warmup")
    return root


def _audio_srcs(page: str) -> dict[str, str]:
    return dict(re.findall(r"<audio id='([^']+)' controls preload='auto' src='(data:audio/wav;base64,[^']+)'", page))


@pytest.mark.slow
def test_page_is_self_contained_with_players_where_models_disagree(report_dir):
    from echodistill.eval.html_report import _Clips, _rows_by_key

    page = (report_dir / "report" / "report.html").read_text(encoding="utf-8")
    assert "<h2>Summary</h2>" in page and "warmup<span class='tag'>baseline</span>" in page
    assert "Differences vs warmup" in page
    # the verdict comes first: one sentence per comparison, with the primary metric and its interval
    assert page.index("class='verdict'") < page.index("<h2>Summary</h2>")
    assert re.search(r"<li><code>sft-noisy</code> (beats|is behind|is not distinguishable from) <code>warmup</code> "
                     r"under strong noise \(SNR ≤ 0 dB\): strong GSR [+-]\d", page)
    assert page.count("src='data:image/png;base64,") == 3  # difference, accuracy-vs-SNR, per-type plots
    assert not re.search(r"(src|href)=['\"]?(https?:|file:|/)", page)  # nothing fetched from elsewhere
    rows = [_rows_by_key(report_dir / f"eval_{n}") for n in ("warmup", "sft-noisy")]
    picked = pick_examples(rows, per_type=3)
    assert picked, "the two models should disagree somewhere"
    for keys in picked.values():
        for k in keys:
            assert rows[0][k]["correct"] != rows[1][k]["correct"]
    srcs = _audio_srcs(page)
    n = sum(len(v) for v in picked.values())
    assert len(srcs) == 2 * n  # a clean and a noisy player per example
    # the noisy player holds exactly the clip evaluation fed the models (16-bit rounding aside)
    clips = _Clips(report_dir / "eval_warmup")
    assert clips.exact
    first_type = sorted(picked)[0]
    clean, noisy, _ = clips.get(picked[first_type][0])
    wav, sr = sf.read(io.BytesIO(base64.b64decode(srcs["ex0-noisy"].split(",", 1)[1])), dtype="float32")
    assert sr == 16000 and wav.shape == noisy.shape and np.max(np.abs(wav - noisy)) < 1.5 / 32768
    report = json.loads((report_dir / "report" / "report.json").read_text())
    assert "report.html" in report["files"] and "difference_vs_snr.png" in report["files"]
    assert report["verdicts"][0].startswith("`sft-noisy` ")
    assert set(report["paired"][0]["by_snr"]) == {"-5", "5"}  # the paired difference per SNR, for the plot


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium: apt-get install chromium, then see eval/html_report.py")
def test_page_opens_and_audio_plays_in_headless_chromium(report_dir, tmp_path):
    page = report_dir / "report" / "report.html"
    base = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--autoplay-policy=no-user-gesture-required",
            f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(base + ["--virtual-time-budget=8000", "--dump-dom", f"file://{page}?selftest"],
                         capture_output=True, text=True, timeout=120).stdout
    m = re.search(r"<pre id=\"selftest\"[^>]*>(.*?)</pre>", dom, re.S)
    assert m and m.group(1).strip(), "the self-test wrote nothing"
    results = json.loads(m.group(1))
    assert results and len(results) == len(_audio_srcs(page.read_text(encoding="utf-8")))
    for r in results:
        assert r["error"] is None, r
        assert r["ready"] >= 1 and r["duration"] == pytest.approx(0.6, abs=0.01), r  # the 0.6 s tone clips
        assert r["played"] > 0, r  # playback advanced
    shot = tmp_path / "report.png"
    subprocess.run(base + ["--window-size=1280,2400", f"--screenshot={shot}", f"file://{page}"],
                   capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 10_000
