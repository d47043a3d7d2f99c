"""Load test of the rollout server (train/rollout_server.py) on loopback: N concurrent clients, bad
requests mixed in with good ones (issue 25).

Every client sends ``--requests`` requests, cycling through ``KINDS``: good chat completions and the
bad requests of the issue (no / wrong token, a web page's Origin, text/plain, malformed JSON, wrong
types, NaN temperature, a 9 MB body, a 100 KB prompt, weight paths outside the sync folder, unknown
routes). Reported: status counts per kind, whether every refusal was a JSON error and every good
request a completion, anything the server printed (tracebacks), resident memory after the model
loaded, after the first round and at the end (bounded: it does not grow with the number of requests).

    PYTHONPATH=src python benchmarks/rollout_server_load.py --clients 8 --requests 60
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def rss_mb(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def request_for(kind: str, server, model, wav_b64: str, secret_dir: Path) -> tuple[str, str, dict, bytes]:
    """(method, path, headers, body) of one request of ``kind``."""
    from echodistill.train.rollout_backends import openai_messages

    auth = {"Authorization": f"Bearer {server.api_key}", "Content-Type": "application/json"}
    messages = openai_messages(model, "Which tone is it? low, high", np.zeros(1))
    for m in messages:  # the real clip, already encoded once
        if isinstance(m["content"], list):
            for part in m["content"]:
                if part.get("type") == "input_audio":
                    part["input_audio"]["data"] = wav_b64
    chat = {"model": server.served_name, "messages": messages, "n": 2, "max_tokens": 4, "temperature": 1.0,
            "seed": 1}
    j = lambda d: json.dumps(d).encode()  # noqa: E731
    long_prompt = json.loads(json.dumps(messages))
    for m in long_prompt:
        if isinstance(m["content"], list):
            for part in m["content"]:
                if part.get("type") == "text":
                    part["text"] = "why " * 25_000  # 100 KB of question
    return {
        "good": ("POST", "/v1/chat/completions", auth, j(chat)),
        "health": ("GET", "/health", auth, b""),
        "no_token": ("POST", "/v1/chat/completions", {"Content-Type": "application/json"}, j(chat)),
        "wrong_token": ("POST", "/collective_rpc", {**auth, "Authorization": "Bearer guess"},
                        j({"method": "echodistill_load_weights", "args": [str(secret_dir)]})),
        "cross_origin": ("POST", "/collective_rpc", {**auth, "Origin": "http://evil.example"},
                         j({"method": "echodistill_load_weights", "args": [str(secret_dir)]})),
        "text_plain": ("POST", "/v1/chat/completions", {**auth, "Content-Type": "text/plain"}, j(chat)),
        "malformed_json": ("POST", "/v1/chat/completions", auth, b'{"messages": [}'),
        "wrong_types": ("POST", "/v1/chat/completions", auth, j({**chat, "n": "two", "max_tokens": [4]})),
        "nan_temperature": ("POST", "/v1/chat/completions", auth,
                            j(chat).replace(b'"temperature": 1.0', b'"temperature": NaN')),
        "huge_body": ("POST", "/v1/chat/completions", auth, b"x" * (9 << 20)),
        "long_prompt": ("POST", "/v1/chat/completions", auth, j({**chat, "messages": long_prompt})),
        "rpc_outside_sync": ("POST", "/collective_rpc", auth,
                             j({"method": "echodistill_load_weights", "args": [str(secret_dir)]})),
        "lora_outside_sync": ("POST", "/v1/load_lora_adapter", auth,
                              j({"lora_name": "x", "lora_path": "/etc"})),
        "not_an_object": ("POST", "/v1/chat/completions", auth, b"[1, 2]"),
        "unknown_route": ("POST", "/v1/completions/../../admin", auth, b"{}"),
        "put": ("PUT", "/v1/chat/completions", auth, j(chat)),
    }[kind]


KINDS = ["good", "no_token", "health", "wrong_token", "cross_origin", "good", "text_plain", "malformed_json",
         "wrong_types", "good", "nan_temperature", "huge_body", "long_prompt", "good", "rpc_outside_sync",
         "lora_outside_sync", "not_an_object", "unknown_route", "put"]


def send(url: str, method: str, path: str, headers: dict, body: bytes) -> tuple[int, bytes]:
    host, port = url.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    try:
        conn.request(method, path, body=body or None, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    except (ConnectionError, http.client.HTTPException) as e:  # the server closed early (e.g. 413 before reading)
        return -1, str(e).encode()
    finally:
        conn.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=8, help="concurrent clients")
    ap.add_argument("--requests", type=int, default=60, help="requests per client (cycling through the kinds)")
    ap.add_argument("--out", default=str(HERE / "results_rollout_server.json"))
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from echodistill.config import load_config
    from echodistill.models import load_adapter
    from echodistill.models.tiny import build_tiny_qwen2_audio
    from echodistill.train.rollout_backends import wav_to_b64
    from echodistill.train.rollout_server import SamplerServer

    tmp = Path(tempfile.mkdtemp(prefix="rollout_load_"))
    model_dir = build_tiny_qwen2_audio(tmp / "model", seed=0, window_s=1.0)
    cfg = load_config(None, [f"model.path={model_dir}", "model.backbone=embedded", "run.num_threads=1"])
    model = load_adapter(cfg.model, train=False)
    secret = tmp / "secret_weights"
    secret.mkdir()
    wav = (0.3 * np.sin(2 * np.pi * 300 * np.arange(16000) / 16000)).astype(np.float32)
    wav_b64 = wav_to_b64(wav)
    rss = {"after_model_load_mb": round(rss_mb(), 1)}
    stats: dict[str, dict] = {}
    printed = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stderr(printed), SamplerServer(model, sync_dir=tmp / "sync") as server:
        def client(c: int, lo: int, hi: int) -> list[tuple[str, int, bytes]]:
            out = []
            for i in range(lo, hi):
                kind = KINDS[(c + i) % len(KINDS)]
                status, body = send(server.url, *request_for(kind, server, model, wav_b64, secret))
                out.append((kind, status, body))
            return out

        results = []
        half = max(1, args.requests // 2)
        for lo, hi in ((0, half), (half, args.requests)):
            with ThreadPoolExecutor(args.clients) as pool:
                for rows in pool.map(lambda c: client(c, lo, hi), range(args.clients)):
                    results += rows
            rss["after_round_1_mb" if lo == 0 else "after_round_2_mb"] = round(rss_mb(), 1)
    rss["peak_mb"] = round(rss_mb("VmHWM"), 1)
    seconds = time.perf_counter() - t0
    problems = []
    for kind, status, body in results:
        s = stats.setdefault(kind, {"n": 0, "status": {}})
        s["n"] += 1
        s["status"][str(status)] = s["status"].get(str(status), 0) + 1
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        if kind in ("good", "health"):
            if status != 200 or not isinstance(parsed, dict) or ("choices" not in parsed and kind == "good"):
                problems.append(f"{kind}: {status} {body[:120]!r}")
        elif status == -1 and kind == "huge_body":
            pass  # refused before the 9 MB were sent: the client saw the connection close mid-upload
        elif not (isinstance(parsed, dict) and isinstance(parsed.get("error"), dict) and status >= 400):
            problems.append(f"{kind}: {status} not a JSON error: {body[:120]!r}")
    report = {"clients": args.clients, "requests": len(results), "seconds": round(seconds, 1),
              "every_refusal_json": not problems, "problems": problems[:10],
              "server_printed": printed.getvalue()[:2000], "rss": rss, "served": server.requests,
              "kinds": stats}
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "kinds"}, indent=2))
    for kind, s in sorted(stats.items()):
        print(f"  {kind:18s} n={s['n']:3d}  status {s['status']}")
    return 0 if not problems and not printed.getvalue() else 1


if __name__ == "__main__":
    sys.exit(main())
