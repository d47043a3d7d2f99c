"""The rollout server is safe by default: token, no web-page origin, JSON only, bounded sizes, sane
sampling settings, weights only from the sync folder; every refusal a JSON error, nothing printed.
The client sends the token, names a non-JSON reply in one line and never prints a secret of the URL."""

from __future__ import annotations

import http.client
import http.server
import json
import threading

import numpy as np
import pytest

from echodistill.config import load_config
from echodistill.errors import UserError
from echodistill.models import load_adapter
from echodistill.train.rollout_backends import VLLMServerBackend, openai_messages, wav_to_b64
from echodistill.train.rollout_server import SamplerServer


@pytest.fixture(scope="module")
def model(tiny_qwen2_audio_dir):
    cfg = load_config(None, [f"model.path={tiny_qwen2_audio_dir}", "model.backbone=embedded"])
    return load_adapter(cfg.model, train=False)


def _send(server, path, body=b"", headers=None, method="POST"):
    conn = http.client.HTTPConnection("127.0.0.1", int(server.url.rsplit(":", 1)[1]), timeout=60)
    conn.request(method, path, body=body or None, headers=headers or {})
    resp = conn.getresponse()
    status, data = resp.status, resp.read()
    conn.close()
    return status, json.loads(data)  # every answer, good or bad, is JSON


def test_every_bad_request_is_a_json_error(model, tmp_path, capfd):
    wav = (0.3 * np.sin(np.arange(8000) / 5)).astype(np.float32)
    chat = {"messages": openai_messages(model, "Which tone?", wav), "n": 2, "max_tokens": 3, "seed": 1}
    for m in chat["messages"]:
        for part in m["content"] if isinstance(m["content"], list) else []:
            if part.get("type") == "input_audio":
                part["input_audio"]["data"] = wav_to_b64(wav)
    (tmp_path / "elsewhere").mkdir()
    with SamplerServer(model, sync_dir=tmp_path / "sync", max_body_bytes=1 << 20) as server:
        ok = {"Authorization": f"Bearer {server.api_key}", "Content-Type": "application/json"}
        body = json.dumps(chat).encode()
        rpc = json.dumps({"method": "echodistill_load_weights", "args": [str(tmp_path / "elsewhere")]}).encode()
        gone = json.dumps({"method": "echodistill_load_weights", "args": [str(tmp_path / "gone")]}).encode()
        cases = [
            ("/v1/chat/completions", body, {"Content-Type": "application/json"}, 401),  # no token
            ("/collective_rpc", rpc, {**ok, "Content-Type": "text/plain"}, 415),  # a cross-origin "simple" POST
            ("/collective_rpc", rpc, {**ok, "Origin": "http://evil.example"}, 403),
            ("/collective_rpc", rpc, ok, 403),  # outside the sync folder
            ("/v1/chat/completions", b'{"messages": [', ok, 400),
            ("/v1/chat/completions", body.replace(b'"seed": 1', b'"seed": 1, "temperature": NaN'), ok, 400),
            ("/v1/chat/completions", json.dumps({**chat, "n": "two"}).encode(), ok, 400),
            ("/v1/chat/completions", b"x" * (2 << 20), ok, 413),
            ("/v1/chat/completions", body.replace(b"Which tone?", b"why " * 20000), ok, 413),
        ]
        for path, data, headers, want in cases:
            status, answer = _send(server, path, data, headers)
            assert status == want and answer["error"]["message"], (path, headers, answer)
        _, a = _send(server, "/collective_rpc", rpc, ok)
        _, b = _send(server, "/collective_rpc", gone, ok)
        assert a == b  # the answer does not tell whether a path exists
        status, answer = _send(server, "/v1/chat/completions", body, ok)
        assert status == 200 and len(answer["choices"]) == 2
        assert _send(server, "/health", headers={"Authorization": "Bearer nope"}, method="GET")[0] == 401
    assert "Traceback" not in capfd.readouterr().err
    assert server.url.startswith("http://127.0.0.1:")  # loopback unless told otherwise


def test_the_client_names_a_non_json_reply_and_hides_url_secrets(monkeypatch):
    class Html(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"<html>a proxy login page</html>")

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Html)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        backend = VLLMServerBackend(f"http://127.0.0.1:{httpd.server_address[1]}")
        with pytest.raises(UserError, match="replied with something that is not JSON"):
            backend._post("/v1/chat/completions", {})
    finally:
        httpd.shutdown()
    monkeypatch.setenv("ED_TEST_TOKEN", "s3cr3t-token")
    cfg = load_config(None, ["train.vllm_server_url=http://127.0.0.1:9/${oc.env:ED_TEST_TOKEN}"])
    backend = VLLMServerBackend(cfg.train.vllm_server_url)  # nothing listens on port 9: unreachable
    with pytest.raises(UserError, match="unreachable") as e:
        backend._post("/health", {})
    assert "s3cr3t-token" not in str(e.value)
