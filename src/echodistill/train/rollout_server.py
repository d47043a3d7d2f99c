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
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import torch

from .rollout_backends import messages_to_prompt


class SamplerServer:
    """Serve ``model`` (an ``AudioLLM``) on ``host:port`` (port 0: a free one) in a background thread."""

    def __init__(self, model, served_name: str = "echodistill-base", host: str = "127.0.0.1", port: int = 0):
        self.model, self.served_name = model, served_name
        self.lock = threading.Lock()
        self.adapters: dict[str, str] = {}  # lora name -> path (the newest one is loaded in the model)
        self.requests = 0
        self.weight_loads = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet: tests read stderr
                pass

            def _send(self, code: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path.rstrip("/") == "/health":
                    return self._send(200, {"status": "ok"})
                if self.path.rstrip("/") == "/v1/models":
                    names = [server.served_name] + list(server.adapters)
                    return self._send(200, {"object": "list", "data": [{"id": n, "object": "model"} for n in names]})
                self._send(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                route = {"/v1/chat/completions": server.chat, "/v1/load_lora_adapter": server.load_lora,
                         "/v1/unload_lora_adapter": server.unload_lora, "/collective_rpc": server.rpc,
                         "/reset_prefix_cache": lambda b: {}}.get(self.path.rstrip("/"))
                if route is None:
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                try:
                    with server.lock:
                        out = route(body)
                except (ValueError, KeyError, FileNotFoundError) as e:
                    return self._send(400, {"error": {"message": f"{type(e).__name__}: {e}"}})
                self._send(200, out)

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

    # ------------------------------------------------------------ endpoints
    def chat(self, body: dict) -> dict:
        m = self.model
        name = body.get("model", self.served_name)
        if name != self.served_name and name not in self.adapters:
            raise ValueError(f"model {name!r} is not served (load it with /v1/load_lora_adapter)")
        system, text, wav = messages_to_prompt(body["messages"])
        if system is not None and system != m.system_prompt:
            raise ValueError(f"system prompt {system!r} differs from the served model's {m.system_prompt!r}")
        n = int(body.get("n", 1))
        g = torch.Generator(device=m.device)
        g.manual_seed(int(body["seed"]) if body.get("seed") is not None else torch.seed())
        batch = m.build_inputs([text], [wav])
        base_only = name == self.served_name and m.peft is not None and self.adapters
        ctx = m.peft.disable_adapter() if base_only else _null()
        with ctx:
            comp = m.generate(batch, n, max_new_tokens=int(body.get("max_tokens", 16)), do_sample=True,
                              temperature=float(body.get("temperature", 1.0)), top_p=float(body.get("top_p", 1.0)),
                              generator=g)
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

        if self.model.peft is None:
            raise ValueError("the served model has no LoRA adapter slot (serve a LoRA model)")
        path = Path(body["lora_path"]) / "adapter_model.safetensors"
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
        state = load_file(str(Path(body["args"][0]) / "model.safetensors"))
        missing, unexpected = self.model.hf.load_state_dict(state, strict=False)  # parameters only: no buffers
        if unexpected or any(n in dict(self.model.hf.named_parameters()) for n in missing):
            raise ValueError(f"weights do not match the served model (unexpected {unexpected[:3]}, missing {missing[:3]})")
        self.weight_loads += 1
        return {"results": [None]}


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


__all__ = ["SamplerServer"]
