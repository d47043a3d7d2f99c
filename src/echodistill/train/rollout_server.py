"""Our built-in sampler behind the subset of vLLM's OpenAI-compatible HTTP API that
``rollout_backends.VLLMServerBackend`` speaks (stdlib ``http.server``, 127.0.0.1 by default).

What it is for: the contract test of the vLLM backend on a machine without a GPU (identical
metrics.jsonl vs the built-in backend, tests/test_rollout_backends.py), and a way to put generation
in another process without vLLM. Endpoints, with vLLM's request and response shapes:

    GET  /health, /v1/models
    POST /v1/chat/completions      system + user turn (text + one ``input_audio`` WAV), n, temperature,
                                   top_p, max_tokens, seed; returns choices with ``token_ids``,
                                   ``logprobs.content`` ("token_id:<id>" tokens) and finish_reason
    POST /v1/load_lora_adapter     {lora_name, lora_path}: the PEFT adapter saved there becomes the student
    POST /v1/unload_lora_adapter   {lora_name}
    POST /collective_rpc           {"method": "echodistill_load_weights", "args": [dir]}: full weights
    POST /reset_prefix_cache       (nothing cached across requests here)

``seed`` seeds a torch generator exactly as the trainer seeds the built-in sampler, so one item per
request reproduces the built-in draws. Requests run one at a time (a lock): the model is not thread-safe.

Safe by default (it can swap the served weights): it binds loopback; every request needs
``Authorization: Bearer <api_key>`` (generated when not given: ``server.api_key``; the client sends
``train.vllm_api_key`` or ``$VLLM_API_KEY``); a request with an ``Origin`` header (a browser page) is
refused, and POST bodies must be ``application/json`` of at most ``max_body_bytes``; prompts longer
than ``max_prompt_tokens``, clips longer than ``max_audio_s`` and out-of-range sampling settings are
refused; weights load only from folders inside ``sync_dir``; at most ``max_in_flight`` requests are
held at once (more get 503). Every refusal is a JSON error ``{"error": {"message", "type", "code"}}``;
nothing is printed.
"""

from __future__ import annotations

import hmac
import json
import math
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Optional

import torch

from .rollout_backends import messages_to_prompt


class RequestError(Exception):
    """A bad request: answered with ``status`` and a JSON error naming what to fix."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class SamplerServer:
    """Serve ``model`` (an ``AudioLLM``) on ``host:port`` (port 0: a free one) in a background thread.

    ``api_key``: the bearer token every request must carry (None: a random one, read ``.api_key``);
    ``sync_dir``: the only folder weights are loaded from (None: weight loading is refused)."""

    def __init__(self, model, served_name: str = "echodistill-base", host: str = "127.0.0.1", port: int = 0, *,
                 api_key: Optional[str] = None, sync_dir: Optional[str | Path] = None,
                 max_body_bytes: int = 8 << 20, max_prompt_tokens: int = 2048, max_audio_s: float = 60.0,
                 max_new_tokens: int = 1024, max_n: int = 64, max_in_flight: int = 32):
        self.model, self.served_name = model, served_name
        self.api_key = api_key or secrets.token_urlsafe(24)
        self.sync_dir = Path(sync_dir).resolve() if sync_dir else None
        self.limits = dict(max_body_bytes=int(max_body_bytes), max_prompt_tokens=int(max_prompt_tokens),
                           max_audio_s=float(max_audio_s), max_new_tokens=int(max_new_tokens), max_n=int(max_n))
        self.lock = threading.Lock()
        self.in_flight = threading.BoundedSemaphore(int(max_in_flight))
        self.adapters: dict[str, str] = {}  # lora name -> path (the newest one is loaded in the model)
        self.requests = 0
        self.weight_loads = 0
        self.refused = 0  # requests answered with an error (4xx/5xx)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet: tests read stderr
                pass

            def _send(self, code: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if code >= 400:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                self.wfile.write(data)

            def send_error(self, code, message=None, explain=None):  # http.server's own errors: JSON too
                server.refused += 1
                try:
                    self._send(code, _error(code, message or self.responses.get(code, ("error",))[0]))
                except OSError:
                    pass

            def _handle(self, method: str) -> None:
                if not server.in_flight.acquire(blocking=False):
                    return self.send_error(503, "too many requests in flight; retry later")
                try:
                    out = server.dispatch(method, self.path, self.headers, self.rfile)
                    self._send(200, out)
                except RequestError as e:
                    self.send_error(e.status, str(e))
                except Exception as e:  # a bug or a model error: one JSON line, never a traceback
                    self.send_error(500, f"internal error ({type(e).__name__}: {str(e)[:200]})")
                finally:
                    server.in_flight.release()

            def do_GET(self):
                self._handle("GET")

            def do_POST(self):
                self._handle("POST")

            def do_PUT(self):
                self._handle("PUT")

            def do_DELETE(self):
                self._handle("DELETE")

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://{host}:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "SamplerServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # ------------------------------------------------------------ request checks
    def dispatch(self, method: str, path: str, headers: Any, rfile: Any) -> dict:
        """Check a request (token, origin, type, size), parse it and run its endpoint under the lock."""
        if headers.get("Origin") is not None:
            raise RequestError(403, "requests from a web page (Origin header) are refused")
        given = headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {self.api_key}".encode()):
            raise RequestError(401, "missing or wrong bearer token (Authorization: Bearer <api key>)")
        route = path.split("?", 1)[0].rstrip("/")
        if method == "GET":
            if route == "/health":
                return {"status": "ok"}
            if route == "/v1/models":
                names = [self.served_name] + list(self.adapters)
                return {"object": "list", "data": [{"id": n, "object": "model"} for n in names]}
            raise RequestError(404, f"no route GET {route}")
        endpoint = {"/v1/chat/completions": self.chat, "/v1/load_lora_adapter": self.load_lora,
                    "/v1/unload_lora_adapter": self.unload_lora, "/collective_rpc": self.rpc,
                    "/reset_prefix_cache": lambda b: {}}.get(route)
        if method != "POST" or endpoint is None:
            raise RequestError(404 if endpoint is None else 405, f"no route {method} {route}")
        body = self._read_json(headers, rfile)
        with self.lock:
            try:
                return endpoint(body)
            except RequestError:
                raise
            except (ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
                raise RequestError(400, f"bad request: {type(e).__name__}: {str(e)[:200]}") from None

    def _read_json(self, headers: Any, rfile: Any) -> dict:
        if headers.get_content_type() != "application/json":
            raise RequestError(415, "Content-Type must be application/json")
        try:
            length = int(headers.get("Content-Length", ""))
        except ValueError:
            raise RequestError(411, "a Content-Length header is required") from None
        if length < 0 or length > self.limits["max_body_bytes"]:
            _drain(rfile, length)  # so the client reads the answer instead of a reset connection
            raise RequestError(413, f"body of {length} bytes; at most {self.limits['max_body_bytes']} are accepted")
        raw = rfile.read(length)
        try:
            body = json.loads(raw or b"{}", parse_constant=_no_constant)
        except (ValueError, UnicodeDecodeError) as e:
            raise RequestError(400, f"body is not valid JSON ({str(e)[:120]})") from None
        if not isinstance(body, dict):
            raise RequestError(400, "body must be a JSON object")
        return body

    def _inside_sync_dir(self, folder: Any, what: str) -> Path:
        """``folder`` resolved, if inside ``sync_dir``; the error does not say whether anything exists there."""
        if self.sync_dir is None:
            raise RequestError(403, "weight loading is off (the server was started without a sync folder)")
        if not isinstance(folder, str) or not folder:
            raise RequestError(400, f"{what} must be a folder path (string)")
        path = Path(folder).resolve()
        if not path.is_relative_to(self.sync_dir):
            raise RequestError(403, f"{what} must lie inside the server's sync folder")
        return path

    # ------------------------------------------------------------ endpoints
    def chat(self, body: dict) -> dict:
        m = self.model
        name = body.get("model", self.served_name)
        if name != self.served_name and name not in self.adapters:
            raise ValueError(f"model {name!r} is not served (load it with /v1/load_lora_adapter)")
        if not isinstance(body.get("messages"), list):
            raise RequestError(400, "messages must be a list of chat turns")
        try:
            system, text, wav = messages_to_prompt(body["messages"])
        except Exception as e:  # malformed turns, undecodable audio (soundfile's errors are RuntimeErrors)
            raise RequestError(400, f"messages: {type(e).__name__}: {str(e)[:200]}") from None
        if system is not None and system != m.system_prompt:
            raise ValueError(f"system prompt {system!r} differs from the served model's {m.system_prompt!r}")
        lim = self.limits
        n = _number(body, "n", 1, int, 1, lim["max_n"])
        max_tokens = _number(body, "max_tokens", 16, int, 1, lim["max_new_tokens"])
        temperature = _number(body, "temperature", 1.0, float, 1e-6, 100.0)
        top_p = _number(body, "top_p", 1.0, float, 1e-6, 1.0)
        seed = _number(body, "seed", None, int, 0, 2 ** 63 - 1)
        if not isinstance(text, str) or len(text) > 16 * lim["max_prompt_tokens"]:  # before tokenizing it
            raise RequestError(413, f"prompt text must be a string of at most {16 * lim['max_prompt_tokens']} "
                                    "characters")
        if wav.size > lim["max_audio_s"] * 16000:
            raise RequestError(413, f"clip of {wav.size / 16000:.1f} s; at most {lim['max_audio_s']:g} s are accepted")
        batch = m.build_inputs([text], [wav])
        if batch["input_ids"].shape[1] > lim["max_prompt_tokens"]:
            raise RequestError(413, f"prompt of {batch['input_ids'].shape[1]} tokens; at most "
                                    f"{lim['max_prompt_tokens']} are accepted")
        g = torch.Generator(device=m.device)
        g.manual_seed(seed if seed is not None else torch.seed())
        base_only = name == self.served_name and m.peft is not None and self.adapters
        ctx = m.peft.disable_adapter() if base_only else _null()
        with ctx:
            comp = m.generate(batch, n, max_new_tokens=max_tokens, do_sample=True, temperature=temperature,
                              top_p=top_p, generator=g)
        self.requests += 1
        choices = []
        for i in range(n):
            k = int(comp.mask[i].sum())
            ids = comp.ids[i, :k].tolist()
            lps = comp.logprobs[i, :k].tolist()
            finished = bool(ids) and ids[-1] in m.eos_token_ids
            choices.append({
                "index": i, "message": {"role": "assistant", "content": comp.texts[i]},
                "logprobs": {"content": [{"token": f"token_id:{t}", "logprob": lp, "top_logprobs": []}
                                         for t, lp in zip(ids, lps)]},
                "finish_reason": "stop" if finished else "length", "token_ids": ids,
            })
        return {"object": "chat.completion", "model": name, "choices": choices,
                "prompt_token_ids": batch["input_ids"][0].tolist()}

    def load_lora(self, body: dict) -> dict:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        path = self._inside_sync_dir(body.get("lora_path"), "lora_path") / "adapter_model.safetensors"
        if self.model.peft is None:
            raise ValueError("the served model has no LoRA adapter slot (serve a LoRA model)")
        if not isinstance(body.get("lora_name"), str) or not body["lora_name"]:
            raise RequestError(400, "lora_name must be a non-empty string")
        if not path.is_file():
            raise RequestError(400, "no adapter_model.safetensors in lora_path")
        set_peft_model_state_dict(self.model.peft, load_file(str(path)))
        self.adapters = {body["lora_name"]: str(path.parent)}  # one adapter slot: the newest is the student
        self.weight_loads += 1
        return {}

    def unload_lora(self, body: dict) -> dict:
        self.adapters.pop(body["lora_name"], None)
        return {}

    def rpc(self, body: dict) -> dict:
        from safetensors.torch import load_file

        if body.get("method") != "echodistill_load_weights":
            raise ValueError(f"unknown method {body.get('method')!r}")
        args = body.get("args")
        if not isinstance(args, list) or len(args) != 1:
            raise RequestError(400, "args must be [<weights folder>]")
        path = self._inside_sync_dir(args[0], "the weights folder") / "model.safetensors"
        if not path.is_file():
            raise RequestError(400, "no model.safetensors in the weights folder")
        state = load_file(str(path))
        missing, unexpected = self.model.hf.load_state_dict(state, strict=False)  # parameters only: no buffers
        if unexpected or any(n in dict(self.model.hf.named_parameters()) for n in missing):
            raise ValueError(f"weights do not match the served model (unexpected {unexpected[:3]}, missing {missing[:3]})")
        self.weight_loads += 1
        return {"results": [None]}


def _error(status: int, message: str) -> dict:
    """vLLM's (OpenAI's) error shape."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "code": status}}


def _drain(rfile: Any, length: int, limit: int = 64 << 20) -> None:
    """Read and drop up to ``limit`` bytes of a refused body in 64 KiB chunks (bounded memory)."""
    left = min(max(length, 0), limit)
    while left > 0:
        chunk = rfile.read(min(left, 1 << 16))
        if not chunk:
            break
        left -= len(chunk)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _number(body: dict, key: str, default: Any, kind: type, lo: float, hi: float) -> Any:
    """``body[key]`` as ``kind`` within [lo, hi] (``default`` when absent); RequestError naming the key."""
    v = body.get(key, default)
    if v is None and default is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind is int and not float(v).is_integer()):
        raise RequestError(400, f"{key} must be {'an integer' if kind is int else 'a number'}, got {v!r}")
    if not math.isfinite(v) or not lo <= v <= hi:
        raise RequestError(400, f"{key}={v!r} is outside [{lo:g}, {hi:g}]")
    return kind(v)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


__all__ = ["SamplerServer", "RequestError"]
