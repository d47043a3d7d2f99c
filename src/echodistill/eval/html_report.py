"""`report.html`: the report as one self-contained page you can open, read and *listen to*.

Written by ``make_report`` next to ``report.md`` from the same ``report.json`` content: the summary
table, the paired differences, accuracy per SNR and per noise type, the two plots (embedded PNG), and
for each noise type a handful of example items where the methods disagree (some right, some wrong on
the same noisy clip) with two audio players -- the clean clip and the noisy clip exactly as the models
heard it -- and every model's answer on both. Audio and images are ``data:`` URIs, so the single file
can be mailed or attached; nothing is fetched.

The noisy clip is rebuilt with the evaluation's own code path (``evaluate.ClipLoader``: the manifest,
``eval.noise_seed``, the model window, the noise bank). The bank is the one the evaluation used when
its fingerprint matches ``eval_state.json`` (``<manifest folder>/noise``, the ``data build`` layout, or
``noise_dir``); otherwise the page says the noisy clip is a re-mix, not the exact one.

Check in a browser (what ``tests/test_html_report.py`` runs when Chromium is installed)::

    chromium --headless --no-sandbox --autoplay-policy=no-user-gesture-required \\
        --virtual-time-budget=8000 --dump-dom "file://$PWD/runs/report/report.html?selftest"

With ``?selftest`` the page plays every audio element and writes, per element, whether it loaded, its
duration and how far it played into ``<pre id="selftest">``; without it the page runs no script.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..audio.io import SAMPLE_RATE
from ..errors import UserError
from .formatting import cell, pct  # the Markdown report's number formatting: the page shows the same strings
from .predictions import read_predictions

PAGE = "report.html"
SELFTEST_JS = """
if (location.search.indexOf('selftest') >= 0) {
  const out = document.getElementById('selftest');
  const els = Array.from(document.querySelectorAll('audio'));
  const res = els.map(a => ({id: a.id, ready: 0, duration: null, played: 0, error: null}));
  const show = () => { out.textContent = JSON.stringify(res); };
  els.forEach((a, i) => {
    a.addEventListener('error', () => { res[i].error = a.error ? a.error.code : 'error'; show(); });
    // metadata may already be there when the listener is added (a data: URI on a busy machine): read it then too
    const meta = () => { if (a.readyState >= 1) { res[i].duration = a.duration; res[i].ready = a.readyState; show(); } };
    a.addEventListener('loadedmetadata', meta);
    a.addEventListener('timeupdate', () => { meta(); res[i].played = Math.max(res[i].played, a.currentTime); show(); });
    meta();
    a.muted = true;
    a.play().catch(e => { res[i].error = String(e); show(); });
  });
  show();
}
"""
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;padding:0 1rem;
color:#1b1b1b;line-height:1.45}
table{border-collapse:collapse;margin:.5rem 0 1.5rem;font-size:.9rem}
th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f3f3f3} td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.dim td{color:#8a8a8a;background:#f7f7f7} .tag{font-size:.75rem;color:#666;border:1px solid #bbb;border-radius:3px;
padding:0 .25rem;margin-left:.25rem;display:inline-block} .scroll{overflow-x:auto} td:first-child{min-width:9rem} .swatch{display:inline-block;width:.8rem;height:.8rem;
border-radius:2px;margin-right:.35rem;vertical-align:middle}
.verdict{background:#f4f8fb;border-left:4px solid #0072B2;padding:.5rem 1rem;margin:1rem 0} .verdict li{margin:.3rem 0}
.sig{font-weight:600} .ok{color:#13795b;font-weight:600} .bad{color:#b3261e;font-weight:600}
.example{border:1px solid #ddd;border-radius:6px;padding:.75rem 1rem;margin:.75rem 0}
.players{display:flex;gap:2rem;flex-wrap:wrap} .players div{min-width:320px}
.note{color:#555;font-size:.9rem} img{max-width:100%;border:1px solid #eee}
"""


# ------------------------------------------------------------------ small helpers
def _e(x: Any) -> str:
    return html.escape(str(x))


def _diff(d: dict) -> str:
    if d.get("diff") is None:
        return "–"
    s = pct(d["diff"], True)
    sig = False
    if d.get("ci_low") is not None:
        s += f" [{pct(d['ci_low'], True)}, {pct(d['ci_high'], True)}]"
        sig = d["ci_low"] > 0 or d["ci_high"] < 0
    return f'<span class="sig">{_e(s)}</span>' if sig else _e(s)


def _table(header: list, rows: list, raw: bool = False, numbers: bool = True, dim: Optional[list] = None,
           raw_first: bool = False) -> str:
    """Rows of cell strings (escaped unless ``raw``; the first cell too with ``raw_first``); cells after the
    first right-aligned if ``numbers``; rows whose ``dim`` flag is set are greyed (untrained, partial)."""
    th = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = []
    for j, r in enumerate(rows):
        tds = []
        for i, c in enumerate(r):
            text = str(c) if (raw and i > 0) or (raw_first and i == 0) else _e(c)
            cls = ' class="num"' if i > 0 and numbers else ""
            tds.append(f"<td{cls}>{text}</td>")
        body.append(("<tr class='dim'>" if dim and dim[j] else "<tr>") + "".join(tds) + "</tr>")
    return f"<div class='scroll'><table><thead><tr>{th}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"


def wav_data_uri(wav: np.ndarray, sr: int = SAMPLE_RATE) -> str:
    """[S] float32 -> ``data:audio/wav;base64,...`` (16-bit PCM; peak-normalised only if it would clip)."""
    import soundfile as sf

    x = np.asarray(wav, dtype=np.float32)
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak > 1.0:
        x = x / peak
    buf = io.BytesIO()
    sf.write(buf, x, sr, format="WAV", subtype="PCM_16")
    return "data:audio/wav;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _png_data_uri(path: Path) -> Optional[str]:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii") if path.is_file() else None


# ------------------------------------------------------------------ examples
def _rows_by_key(run_dir: Path) -> dict:
    p = Path(run_dir) / "predictions.jsonl"
    if not p.is_file():
        return {}
    out = {}
    for r in read_predictions(p):
        snr = None if r.get("snr") is None else round(float(r["snr"]), 6)
        out[(str(r.get("id")), r.get("condition"), r.get("noise_type"), snr)] = r
    return out


def pick_examples(run_rows: list[dict], per_type: int = 3) -> dict[str, list[tuple]]:
    """noise type -> up to ``per_type`` keys (id, "noisy", type, snr) where the runs disagree (at least
    one right and one wrong on that noisy clip), at most one per item, spread across tasks: each
    pass takes the lowest-SNR clip of a task not yet shown for that noise type."""
    if len(run_rows) < 2:
        return {}
    shared = set.intersection(*(set(k for k in rows if k[1] == "noisy") for rows in run_rows))
    disagree = [k for k in shared if len({bool(rows[k].get("correct")) for rows in run_rows}) > 1]
    task = lambda k: str(run_rows[0][k].get("task") or "")  # noqa: E731
    out: dict[str, list[tuple]] = {}
    for ntype in sorted({str(k[2]) for k in disagree}):
        todo = sorted((k for k in disagree if str(k[2]) == ntype), key=lambda k: (k[3], k[0]))
        chosen: list[tuple] = []
        while todo and len(chosen) < per_type:
            shown = {task(c) for c in chosen}
            k = next((k for k in todo if task(k) not in shown), todo[0])  # a new task first, else the next clip
            todo.remove(k)
            if all(c[0] != k[0] for c in chosen):
                chosen.append(k)
        out[ntype] = chosen
    return out


class _Clips:
    """Clean and noisy waveforms of evaluated items, rebuilt with the evaluation's own loader."""

    def __init__(self, run_dir: Path, noise_dir: Optional[Path] = None):
        from ..audio.noise import NoiseBank
        from ..config import load_config
        from ..data.manifest import read_manifest
        from ..provenance import content_key
        from .evaluate import ClipLoader, group_items

        meta = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
        state_path = run_dir / "eval_state.json"
        state = json.loads(state_path.read_text(encoding="utf-8")) if state_path.is_file() else {}
        settings = state.get("settings", {})
        if not (meta.get("manifest") or state.get("manifest")):
            raise UserError(f"{run_dir}: metrics.json records no manifest; the page cannot play the clips")
        manifest = Path(meta.get("manifest") or state.get("manifest"))
        if not manifest.exists():
            raise UserError(f"{run_dir}: its manifest {manifest} is gone; the page cannot play the clips")
        noise_seed = settings.get("eval.noise_seed", (meta.get("eval_config") or {}).get("noise_seed", 777))
        overrides = [f"eval.noise_seed={int(noise_seed)}"]
        for key in ("data.max_duration_s", "data.min_duration_s"):
            if key in settings:
                overrides.append(f"{key}={settings[key]}")
        cfg = load_config(None, overrides)
        self.groups = {g.id: g for g in group_items(read_manifest(manifest, path_map=state.get("path_map") or None))}
        noise_dir = Path(noise_dir) if noise_dir else _recorded_noise_dir(meta, manifest)
        self.bank = NoiseBank(noise_dir if noise_dir.is_dir() else None)
        want = state.get("noise_files")
        if state.get("format", 3) >= 3:  # by content
            self.exact = want is None or content_key(self.bank.fingerprint()) == want
        else:  # format 2 recorded paths as the evaluation spelled them: relative (to its cwd) or absolute
            stamps = self.bank.path_stamps()
            relative = sorted((os.path.relpath(p), *rest) for p, *rest in stamps)
            self.exact = want is None or want in (content_key(stamps), content_key(relative))
        self.noise_dir = noise_dir
        self.loader = ClipLoader(cfg, self.bank)

    def get(self, key: tuple) -> tuple[Optional[np.ndarray], Optional[np.ndarray], Any]:
        from .evaluate import Condition, Job

        g = self.groups.get(key[0])
        if g is None:
            return None, None, None
        premixed = {(t, round(float(s), 6)): p for t, s, p in g.premixed}
        path = premixed.get((key[2], key[3]))
        clean = self.loader(Job(g, Condition("clean")))
        try:
            noisy = self.loader(Job(g, Condition("noisy", key[2], key[3], path)))
        except UserError:  # a noise type this bank cannot draw
            noisy = None
        return clean, noisy, g.item


def _recorded_noise_dir(meta: dict, manifest: Path) -> Path:
    """The noise bank an evaluation drew from: recorded in metrics.json, else the evaluated checkpoint's
    run config (run_config.py: the rule eval and predict use), else the ``data build`` layout."""
    if meta.get("noise_dir"):
        return Path(meta["noise_dir"])
    from ..run_config import config_for_checkpoint, saved_run_config

    ckpt = meta.get("checkpoint")
    if ckpt and saved_run_config(ckpt) is not None:
        try:
            return Path(str(config_for_checkpoint(ckpt).noise.noise_dir))
        except UserError:  # an unreadable run config: fall back to the benchmark layout
            pass
    return manifest.parent / "noise"


def _examples_html(report: dict, per_type: int, noise_dir: Optional[Path]) -> tuple[str, int]:
    """The examples section and the number of examples with audio."""
    runs = [(r["name"], Path(r["dirs"][0])) for r in report.get("runs", []) if r.get("dirs")]
    labelled = [(name if len(r.get("dirs", [])) == 1 else f"{name} ({Path(r['dirs'][0]).name})", d)
                for (name, d), r in zip(runs, report.get("runs", []))]
    rows = [_rows_by_key(d) for _, d in labelled]
    if len(labelled) < 2 or not all(rows):
        return ("<p class='note'>Examples need at least two evaluated runs with predictions.jsonl.</p>", 0)
    # where the *trained*, fully evaluated methods disagree: an untrained model being wrong says nothing
    # about the methods, and a partial evaluation would shrink the clips to its own few
    trained = [r for r, info in zip(rows, report.get("runs", []))
               if not ((info.get("status") or {}).get("untrained") or (info.get("status") or {}).get("partial"))]
    picked = pick_examples(trained if len(trained) >= 2 else rows, per_type)
    if not picked:
        return ("<p class='note'>The runs agree on every noisy clip they share: no example where they "
                "disagree.</p>", 0)
    try:
        clips = _Clips(labelled[0][1], noise_dir)
    except (UserError, OSError, json.JSONDecodeError) as e:
        return f"<p class='note'>No audio: {_e(e)}</p>", 0
    parts, n = [], 0
    if not clips.exact:
        parts.append(f"<p class='note'>The noise files in {_e(clips.noise_dir)} differ from the ones the "
                     "evaluation used (eval_state.json): the noisy players below are re-mixes at the same "
                     "seed and SNR, not the exact clips the models heard.</p>")
    for ntype in sorted(picked):
        parts.append(f"<h3>{_e(ntype)}</h3>")
        for key in picked[ntype]:
            clean, noisy, item = clips.get(key)
            if item is None:
                continue
            ex_id = f"ex{n}"
            players = []
            if clean is not None:
                players.append(f"<div>clean<br><audio id='{ex_id}-clean' controls preload='auto' "
                               f"src='{wav_data_uri(clean)}'></audio></div>")
            if noisy is not None:
                players.append(f"<div>noisy: {_e(ntype)} at {key[3]:g} dB SNR<br><audio id='{ex_id}-noisy' "
                               f"controls preload='auto' src='{wav_data_uri(noisy)}'></audio></div>")
            answers = []
            for (name, _), r in zip(labelled, rows):
                c = r.get((key[0], "clean", None, None), {})
                z = r.get(key, {})
                answers.append([name, _answer(c), _answer(z)])
            parts.append(
                f"<div class='example' id='{ex_id}'><b>{_e(item.id)}</b> "
                f"<span class='note'>({_e(item.task)})</span><br>{_e(item.question)}<br>"
                f"<span class='note'>choices: {_e(' | '.join(item.choices))}; correct: <b>{_e(item.target)}</b>"
                f"</span><div class='players'>{''.join(players)}</div>"
                + _table(["Model", "answer on clean", f"answer on noisy ({key[3]:g} dB)"], answers, raw=True, numbers=False)
                + "</div>")
            n += 1
    return "\n".join(parts), n


def _answer(row: dict) -> str:
    if not row:
        return "–"
    ans = row.get("answer")
    text = _e(ans) if ans is not None else f"<i>none of the choices</i> ({_e(repr(row.get('response', ''))[:40])})"
    mark = "<span class='ok'>✓</span>" if row.get("correct") else "<span class='bad'>✗</span>"
    return f"{mark} {text}"


# ------------------------------------------------------------------ the page
def write_html_report(report: dict, out_dir: str | Path, per_type: int = 3,
                      noise_dir: Optional[str | Path] = None) -> Path:
    """Write ``out_dir/report.html`` from ``make_report``'s report dict (plots already in ``out_dir``)."""
    out_dir = Path(out_dir)
    runs = report.get("runs", [])
    strong = report.get("settings", {}).get("strong_snr_max", 0.0)
    cols = [("Acc", "Acc"), ("Noisy", "Noisy"), ("StrongNoisy", f"Strong noisy (≤{strong:g} dB)"), ("GSR", "GSR"),
            ("StrongGSR", f"Strong GSR (≤{strong:g} dB)"), ("Consistency", "Consistency"),
            ("Retention", "Retention"), ("NoAudio", "NoAudio"), ("Invalid", "Invalid")]
    by_name = {r["name"]: r for r in runs}
    summary = [[_run_label(r, report) + (f" — {len(r['seeds'])} seeds" if r.get("seeds") else "")]
               + [cell((r.get("metrics") or {}).get(k)) for k, _ in cols]
               + [str(((r.get("metrics") or {}).get("Acc") or {}).get("n", "–"))] for r in runs]
    body = [f"<h1>EchoDistill evaluation report</h1>"]
    if report.get("paired"):
        body += [f"<div class='verdict'><b>Verdict</b> (against {_e(report.get('baseline'))}; primary metric: "
                 f"strong-noise GSR, SNR ≤ {strong:g} dB; “beats” / “is behind” only when the 95 % "
                 "interval excludes 0)<ul>"
                 + "".join(f"<li>{_md_code(p.get('verdict', ''))}</li>" for p in report["paired"]) + "</ul></div>"]
        uri = _png_data_uri(out_dir / "difference_vs_snr.png")
        if uri:
            body.append(f"<p><img alt='difference to the baseline per SNR' src='{uri}'></p>")
    body += ["<p class='note'>Percent; <code>value [low, high]</code> is the estimate with its 95 % bootstrap "
             "interval over items. Noisy: mean over noise types × SNR levels; GSR: correct on the noisy "
             "and on the clean clip; NoAudio: silent input (the text-prior control). Grey rows: "
             "<span class='tag'>untrained</span> a model before any training (a floor, not a method); "
             "<span class='tag'>partial</span> evaluated on fewer items, SNR levels or noise types than the "
             "others. Same numbers as report.md and report.json.</p>",
             "<h2>Summary</h2>", _table(["Run"] + [h for _, h in cols] + ["n"], summary, raw_first=True,
                                         dim=[_dim(r) for r in runs])]
    if report.get("paired"):
        keys = list(report["paired"][0]["metrics"])
        rows = [[_run_label(by_name.get(p["run"], {"name": p["run"]}), report)]
                + [_diff(p["metrics"][k]) for k in keys] for p in report["paired"]]
        body += [f"<h2>Differences vs {_e(report.get('baseline'))}</h2>",
                 "<p class='note'>Run minus baseline in percentage points, paired bootstrap on shared items; "
                 "bold: the 95 % interval excludes 0.</p>",
                 _table(["Run"] + keys, rows, raw=True, raw_first=True,
                        dim=[_dim(by_name.get(p["run"], {})) for p in report["paired"]])]
    for title, key in (("Accuracy per SNR", "noisy_by_snr"), ("Accuracy per noise type", "noisy_by_noise_type")):
        names = []
        for r in runs:
            names += [k for k in ((r.get("metrics") or {}).get(key) or {}) if k not in names]
        if key == "noisy_by_snr":
            names = sorted(names, key=lambda k: float(k) if _is_num(k) else float("inf"))
        if names:
            rows = [[f"{k} dB" if key == "noisy_by_snr" else k]
                    + [cell(((r.get("metrics") or {}).get(key) or {}).get(k)) for r in runs] for k in names]
            body += [f"<h2>{title}</h2>", _table(["" ] + [r["name"] for r in runs], rows)]
    for png, alt in (("accuracy_vs_snr.png", "accuracy vs SNR"), ("accuracy_by_noise_type.png", "accuracy per noise type")):
        uri = _png_data_uri(out_dir / png)
        if uri:
            body.append(f"<p><img alt='{alt}' src='{uri}'></p>")
    examples, n = _examples_html(report, per_type, Path(noise_dir) if noise_dir else None)
    body += ["<h2>Listen: where the methods disagree</h2>",
             f"<p class='note'>Per noise type, up to {per_type} noisy clips on which the trained models "
             "disagree (some right, some wrong), from different tasks where there are, lowest SNR first, with "
             "the clean clip for comparison.</p>", examples]
    if report.get("notes"):
        body += ["<h2>Notes</h2><ul>"] + [f"<li>{_e(x)}</li>" for x in report["notes"]] + ["</ul>"]
    body.append("<pre id='selftest' class='note'></pre>")
    page = ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>EchoDistill report</title>"
            f"<style>{CSS}</style></head><body>" + "\n".join(body) + f"<script>{SELFTEST_JS}</script></body></html>")
    path = out_dir / PAGE
    path.write_text(page, encoding="utf-8")
    return path


def _dim(run: dict) -> bool:
    st = run.get("status") or {}
    return bool(st.get("untrained") or st.get("partial"))


def _run_label(run: dict, report: dict) -> str:
    """HTML: the run's colour swatch (as in the plots), its name, and its tags."""
    st = run.get("status") or {}
    tags = (["baseline"] if run.get("name") == report.get("baseline") else []) \
        + (["untrained"] if st.get("untrained") else []) + ([f"partial: {st['partial']}"] if st.get("partial") else [])
    swatch = f"<span class='swatch' style='background:{_e(run['colour'])}'></span>" if run.get("colour") else ""
    return swatch + _e(run.get("name", "")) + "".join(f"<span class='tag'>{_e(t)}</span>" for t in tags)


def _md_code(text: str) -> str:
    """A verdict sentence (Markdown with `code` spans) as HTML."""
    parts = _e(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _is_num(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


__all__ = ["write_html_report", "pick_examples", "wav_data_uri", "PAGE"]
