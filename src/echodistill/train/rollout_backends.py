"""Where the student's rollouts come from (``train.rollout_backend``): the built-in sampler, or a vLLM
server speaking the OpenAI-compatible HTTP API (TRL / verl / NeMo RL generate with vLLM).

Contract (``RolloutBackend.generate``): B prompts with one clip each -> ``Completions`` of N = B*G
rows, item-major, exactly as ``AudioLLM.generate`` returns them (ids [N, T] padded with the pad id
after EOS, mask [N, T] 1 up to and including the first EOS, texts decoded by our tokenizer, logprobs
[N, T] raw temperature-1 log-probs of the sampled tokens under the CURRENT student).

``vllm`` backend (``VLLMServerBackend``), one HTTP request per item:

    POST {url}/v1/chat/completions   messages = our chat template's turns with the clip as an
                                     ``input_audio`` part (float32 WAV, base64: the server hears the
                                     exact samples the trainer scores), n = G, temperature, top_p,
                                     max_tokens, seed, logprobs, return_token_ids (vLLM extra),
                                     logit_bias -100 on the special tokens our sampler suppresses

* **Log-probs are recomputed by the trainer** (``model.token_logprobs`` on the ids the server
  returned): the server's numbers come from other kernels, dtype and batch shapes, and PPO ratios /
  the per-token teacher credit need the trainer's own. The server's values are kept only to report
  the gap (``last_logprob_gap``).
* **Weight sync after each update**, as TRL's server mode does (``VLLMClient.update_named_param``
  after every optimizer step), but over the files the OpenAI server can load, since ``vllm serve``
  has no NCCL weight-update endpoint:
    - LoRA (``model.lora.enabled``): the adapter is saved under ``train.vllm_sync_dir/v<k>`` and
      loaded with ``POST /v1/load_lora_adapter`` (vLLM with ``--enable-lora`` and
      ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``); requests then name it as their model; the previous
      version is unloaded.
    - full fine-tuning: the weights are saved as safetensors and loaded by
      ``POST /collective_rpc {"method": "echodistill_load_weights", "args": [dir]}`` (vLLM with
      ``VLLM_SERVER_DEV_MODE=1`` and ``--worker-extension-cls echodistill.train.vllm_worker.WeightSync``),
      then ``POST /reset_prefix_cache`` (cached KV of the old weights is stale).
  The sync happens before the first rollout of a run (a resumed run pushes its restored weights) and
  after every optimizer step (counted by a global post-step hook, so the loop needs no call of its
  own). Rank 0 pushes; every rank waits for it (all ranks call ``rollout`` the same number of times).
* Randomness: item i of a micro-batch is sampled with ``seed = generator seed + i``. With one item
  per micro-batch (``train.prompts_per_device=1``) that is the built-in sampler's stream exactly
  (tests/test_rollout_backends.py: identical metrics.jsonl through ``rollout_server.py``); with more,
  the draws differ from the built-in batch's (the built-in sampler draws the B items jointly).

The shared-filesystem assumption: the server must read ``train.vllm_sync_dir`` (same machine or a
shared mount). Untested against a real vLLM server: this machine has no GPU (docs/scale-out.md).
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from ..config import ConfigError
from ..errors import UserError

SAMPLE_RATE = 16000


class RolloutBackend:
    """The built-in sampler (``AudioLLM.generate``): audio encoded once per clip, shared prompt prefix."""

    name = "builtin"
    recomputes_logprobs = False  # its log-probs already are the trainer's (the same model, same kernels)

    def generate(self, model, batch, prompts: list[str], waveforms: list[np.ndarray], num_samples: int, *,
                 max_new_tokens: int, temperature: float, top_p: float, generator: torch.Generator):
        """N = B*G completions (``models.base.Completions``) of the B prompts in ``batch``."""
        return model.generate(batch, num_samples, max_new_tokens=max_new_tokens, do_sample=True,
                              temperature=temperature, top_p=top_p, generator=generator)

    def close(self) -> None:
        pass


# ================================================================== wire format helpers (client and server)
def wav_to_b64(wav: np.ndarray) -> str:
    """float32 mono 16 kHz -> base64 of a 32-bit float WAV (lossless: the server hears our exact samples)."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.asarray(wav, dtype=np.float32).reshape(-1), SAMPLE_RATE, format="WAV", subtype="FLOAT")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def b64_to_wav(data: str) -> np.ndarray:
    import soundfile as sf

    wav, sr = sf.read(io.BytesIO(base64.b64decode(data)), dtype="float32", always_2d=False)
    if sr != SAMPLE_RATE:
        from ..audio.io import to_mono_16k
        wav = to_mono_16k(wav, sr)
    return np.asarray(wav, dtype=np.float32)


def openai_messages(model, prompt: str, wav: np.ndarray) -> list[dict]:
    """Our chat turns (``AudioLLM.chat_messages``) in OpenAI form, the clip as an ``input_audio`` part."""
    out = []
    for msg in model.chat_messages(prompt):
        content = msg["content"]
        if isinstance(content, list):
            parts = []
            for part in content:
                if part.get("type") == "audio":
                    parts.append({"type": "input_audio", "input_audio": {"data": wav_to_b64(wav), "format": "wav"}})
                else:
                    parts.append({"type": "text", "text": part["text"]})
            content = parts
        out.append({"role": msg["role"], "content": content})
    return out


def messages_to_prompt(messages: list[dict]) -> tuple[Optional[str], str, np.ndarray]:
    """(system text, user text, clip) from OpenAI messages with one ``input_audio`` part (server side)."""
    system, text, wav = None, None, None
    for msg in messages:
        content = msg.get("content")
        if msg.get("role") == "system":
            system = content if isinstance(content, str) else "".join(p.get("text", "") for p in content)
            continue
        for part in content if isinstance(content, list) else [{"type": "text", "text": content}]:
            if part.get("type") == "input_audio":
                wav = b64_to_wav(part["input_audio"]["data"])
            elif part.get("type") == "text":
                text = part["text"]
    if text is None or wav is None:
        raise ValueError("a user message with one text part and one input_audio part is required")
    return system, text, wav


_UPDATES = 0  # optimizer steps taken in this process (any optimizer): "have the weights changed?"


def _count_update(optimizer, args, kwargs) -> None:
    global _UPDATES
    _UPDATES += 1


# Global post-step hook: counts updates without a hook in the training loop. Reading the weights'
# own version counters would not do: under FSDP2 the full weights are fresh all-gathered tensors.
register_optimizer_step_post_hook(_count_update)


def weights_version(model) -> tuple[int, int]:
    """(the model, optimizer steps so far): changes after every update, never on reads."""
    return id(model), _UPDATES


# ================================================================== the vLLM HTTP backend
class VLLMServerBackend(RolloutBackend):
    """Rollouts from a vLLM OpenAI-compatible server; weights synced after each update (module doc)."""

    name = "vllm"
    recomputes_logprobs = True

    def __init__(self, url: str, *, served_model: str = "", sync_dir: str = "", timeout_s: float = 600.0,
                 max_parallel: int = 16, lora_name: str = "echodistill-student", api_key: str = ""):
        if not url:
            raise ConfigError("train.rollout_backend=vllm needs train.vllm_server_url (e.g. http://127.0.0.1:8000)")
        self.url = url.rstrip("/")
        self.api_key = api_key or os.environ.get("VLLM_API_KEY", "")  # vLLM's own variable, as `vllm serve` reads
        self.shown_url = _redact(self.url)  # for messages: no credentials in logs
        self.served_model = served_model
        self.sync_dir = Path(sync_dir) if sync_dir else None
        self.timeout_s = float(timeout_s)
        self.max_parallel = max(1, int(max_parallel))
        self.lora_name = lora_name
        self.synced_version: Optional[tuple[int, int]] = None  # weights_version() last pushed
        self.sync_count = 0
        self.request_model = served_model  # the LoRA version's name once one is loaded
        self._loaded: Optional[tuple[str, Path]] = None  # (lora name, folder) loaded on the server now
        self.last_logprob_gap = 0.0  # max |server - trainer| log-prob of the last call (float)
        self._checked = False

    # ------------------------------------------------------------ HTTP
    def _headers(self) -> dict:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def _post(self, path: str, body: dict) -> Any:
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", **self._headers()})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            detail = _mask(e.read().decode(errors="replace")[:500])
            hint = " (set train.vllm_api_key or $VLLM_API_KEY to the server's --api-key)" if e.code == 401 else ""
            raise UserError(f"vLLM server {self.shown_url}{path}: HTTP {e.code}: {detail}{hint}") from None
        except (urllib.error.URLError, OSError) as e:
            raise UserError(f"vLLM server {self.shown_url}{path} unreachable ({_mask(str(e))}): start it first "
                            "(docs/scale-out.md) or set train.vllm_server_url") from None
        return self._json(raw, path)

    def _json(self, raw: bytes, path: str) -> Any:
        try:
            return json.loads(raw) if raw.strip() else {}
        except (ValueError, UnicodeDecodeError):
            raise UserError(f"vLLM server {self.shown_url}{path} replied with something that is not JSON "
                            f"({_mask(raw[:120].decode(errors='replace'))!r}): is train.vllm_server_url a vLLM "
                            "server?") from None

    def _get(self, path: str, timeout: float) -> Any:
        req = urllib.request.Request(self.url + path, headers=self._headers())
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()

    def check_server(self, total_timeout_s: float = 60.0) -> None:
        """Wait for ``GET /health`` (as TRL's ``VLLMClient.check_server``), then read the served model name."""
        start = time.time()
        while True:
            try:
                if self._get("/health", 10)[0] == 200:
                    break
            except urllib.error.HTTPError as e:
                if e.code in (401, 403):
                    raise UserError(f"vLLM server {self.shown_url} refused the bearer token (HTTP {e.code}): set "
                                    "train.vllm_api_key or $VLLM_API_KEY to the server's --api-key") from None
            except (urllib.error.URLError, OSError):
                pass
            if time.time() - start > total_timeout_s:
                raise UserError(f"vLLM server {self.shown_url} not up after {total_timeout_s:.0f} s: start it first "
                                "(docs/scale-out.md) or set train.vllm_server_url")
            time.sleep(1.0)
        if not self.served_model:
            try:
                data = self._json(self._get("/v1/models", 30)[1], "/v1/models")["data"]
            except (urllib.error.URLError, OSError, KeyError, IndexError, TypeError) as e:
                raise UserError(f"vLLM server {self.shown_url}/v1/models: no model list ({type(e).__name__}); "
                                "set train.vllm_model") from None
            self.served_model = data[0]["id"]
            self.request_model = self.request_model or self.served_model
        self._checked = True

    # ------------------------------------------------------------ weight sync
    def sync_weights(self, model) -> None:
        """Push the student's weights to the server (rank 0; every rank waits). LoRA: the adapter;
        otherwise the full weights through the worker extension (module doc)."""
        dist = torch.distributed.is_available() and torch.distributed.is_initialized()
        rank0 = not dist or torch.distributed.get_rank() == 0
        version = self.sync_count + 1
        if rank0:
            root = self.sync_dir
            if root is None:
                raise ConfigError("train.rollout_backend=vllm needs train.vllm_sync_dir: a folder both the "
                                  "trainer and the vLLM server read (weights are synced through it)")
            folder = root / f"v{version}"
            if folder.exists():
                shutil.rmtree(folder)
            folder.mkdir(parents=True)
            if model.peft is not None:
                # named_parameters, not state_dict(): under FSDP2 (inside Engine.inference) the parameters
                # are the gathered full weights while state_dict() would answer with shards. Copies: a
                # numpy view kept by safetensors would pin the gathered storage so FSDP2 cannot reshard.
                model.peft.save_pretrained(str(folder), state_dict={n: p.detach().clone() for n, p in
                                                                    model.peft.named_parameters()})
                name = f"{self.lora_name}-v{version}"
                self._post("/v1/load_lora_adapter", {"lora_name": name, "lora_path": str(folder.resolve())})
                previous, self._loaded = self._loaded, (name, folder)
                self.request_model = name
                if previous is not None:
                    self._post("/v1/unload_lora_adapter", {"lora_name": previous[0]})
                    shutil.rmtree(previous[1], ignore_errors=True)
            else:
                from safetensors.torch import save_file

                state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.hf.named_parameters()}
                save_file(state, str(folder / "model.safetensors"))
                self._post("/collective_rpc", {"method": "echodistill_load_weights", "args": [str(folder.resolve())]})
                self._post("/reset_prefix_cache", {})
                shutil.rmtree(folder, ignore_errors=True)
        if dist and torch.distributed.get_world_size() > 1:  # no rank samples from the old weights
            name = [self.request_model]
            torch.distributed.broadcast_object_list(name, src=0)
            self.request_model = name[0]
        self.sync_count = version
        self.synced_version = weights_version(model)

    # ------------------------------------------------------------ generation
    def _request(self, model, prompt: str, wav: np.ndarray, n: int, seed: int, max_new_tokens: int,
                 temperature: float, top_p: float) -> list[tuple[list[int], list[float]]]:
        body = {
            "model": self.request_model,
            "messages": openai_messages(model, prompt, wav),
            "n": n, "temperature": temperature, "top_p": top_p, "max_tokens": max_new_tokens, "seed": seed,
            "logprobs": True, "top_logprobs": 0,
            # vLLM extras: the sampled token ids (no re-tokenisation of text), EOS kept in them
            "return_token_ids": True, "skip_special_tokens": False,
            # what our sampler never emits (audio placeholders, other specials, padded vocab rows)
            "logit_bias": {str(i): -100 for i in model.suppress_token_ids},
        }
        resp = self._post("/v1/chat/completions", body)
        choices = sorted(resp["choices"], key=lambda c: c["index"])
        if len(choices) != n:
            raise UserError(f"vLLM server {self.shown_url}: asked for n={n} completions, got {len(choices)}")
        out = []
        for c in choices:
            ids = [int(i) for i in c.get("token_ids") or []]
            if not ids and c.get("logprobs"):  # older servers: ids only as "token_id:<id>" logprob tokens
                ids = [int(t["token"].split(":", 1)[1]) for t in c["logprobs"]["content"]]
            lps = [float(t["logprob"]) for t in (c.get("logprobs") or {}).get("content") or []]
            if c.get("finish_reason") == "stop" and (not ids or ids[-1] not in model.eos_token_ids):
                ids.append(model.eos_token_ids[0])  # a server that strips the stop token
                lps.append(float("nan"))
            out.append((ids[:max_new_tokens], lps[:max_new_tokens]))
        return out

    def generate(self, model, batch, prompts, waveforms, num_samples, *, max_new_tokens, temperature, top_p,
                 generator):
        from ..models.base import Completions

        if not self._checked:
            self.check_server()
        if self.synced_version != weights_version(model):
            self.sync_weights(model)
        base_seed = int(generator.initial_seed())
        with ThreadPoolExecutor(max_workers=min(self.max_parallel, len(prompts))) as pool:
            rows = list(pool.map(lambda a: self._request(model, a[1], a[2], num_samples, (base_seed + a[0]) % 2 ** 63,
                                                         max_new_tokens, temperature, top_p),
                                 [(i, p, w) for i, (p, w) in enumerate(zip(prompts, waveforms))]))
        flat = [r for item in rows for r in item]  # item-major, as the built-in sampler
        eos = set(model.eos_token_ids)
        ends = [next((k + 1 for k, t in enumerate(toks) if t in eos), len(toks)) for toks, _ in flat]  # incl. EOS
        T = max([1] + ends)
        ids = torch.full((len(flat), T), model.pad_token_id, dtype=torch.long)
        server_lp = torch.full((len(flat), T), float("nan"))
        for r, ((toks, lps), end) in enumerate(zip(flat, ends)):
            ids[r, :end] = torch.tensor(toks[:end], dtype=torch.long)
            k = min(end, len(lps))
            server_lp[r, :k] = torch.tensor(lps[:k])
        mask = (torch.arange(T)[None, :] < torch.tensor(ends)[:, None]).long()
        # the trainer's own log-probs of what the server sampled (temperature 1, as the built-in sampler's)
        logprobs = model.token_logprobs(batch, ids, mask, num_samples=num_samples).float().cpu() * mask
        have = mask.bool() & ~torch.isnan(server_lp)
        self.last_logprob_gap = float((server_lp - logprobs).abs()[have].max()) if have.any() else 0.0
        dev = logprobs.device
        return Completions(ids=ids.to(dev), mask=mask.to(dev), texts=model.decode(ids, mask), logprobs=logprobs)

    def close(self) -> None:
        if self._loaded is not None:
            try:
                self._post("/v1/unload_lora_adapter", {"lora_name": self._loaded[0]})
            except UserError:
                pass  # the server may be gone already


# ================================================================== one backend per run
_BACKENDS: dict[tuple, RolloutBackend] = {}


def _redact(url: str) -> str:
    """``url`` without credentials (``user:token@``) and with any config secret masked (config._mask)."""
    return _mask(re.sub(r"//[^/@]*@", "//***@", url))


def _mask(text: str) -> str:
    from ..config import _mask as mask_secrets
    return mask_secrets(text)


def rollout_backend(cfg) -> RolloutBackend:
    """The backend ``cfg.train.rollout_backend`` names (one instance per process and setting)."""
    t = cfg.train
    kind = t.rollout_backend
    if kind == "builtin":
        return _BACKENDS.setdefault(("builtin",), RolloutBackend())
    if kind == "vllm":
        sync_dir = t.vllm_sync_dir or str(Path(cfg.run.output_dir) / "vllm_sync")
        key = ("vllm", t.vllm_server_url, t.vllm_model, sync_dir)
        if key not in _BACKENDS:
            _BACKENDS[key] = VLLMServerBackend(t.vllm_server_url, served_model=t.vllm_model, sync_dir=sync_dir,
                                               timeout_s=t.vllm_timeout_s, api_key=t.vllm_api_key)
        return _BACKENDS[key]
    raise ConfigError(f"train.rollout_backend={kind!r} is not one of ['builtin', 'vllm']")


def close_backends() -> None:
    for b in _BACKENDS.values():
        b.close()
    _BACKENDS.clear()


__all__ = ["RolloutBackend", "VLLMServerBackend", "rollout_backend", "close_backends", "weights_version",
           "wav_to_b64", "b64_to_wav", "openai_messages", "messages_to_prompt"]
