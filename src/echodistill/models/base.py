"""The model adapter contract: every backbone is used through ``AudioLLM``; the trainer never branches.

The contract (what code outside ``models/`` may call): ``build_inputs``, ``generate``,
``token_logprobs``, ``completion_logits`` (full logits on completion positions), ``encode_prompt``
(the prompts' decoder pass, expanded to N rows), ``prompt_embeds``, ``teacher()``, ``save`` / ``load``,
``trainable_parameters``, and for other losses (warm-up SFT) ``active_model``, ``audio_features``,
``hidden_states``, ``project_audio``. Optional capabilities are class flags declared here
(``has_separate_projector``), never found with ``hasattr``. Not here: loading / LoRA / folding /
saving (``loading.py``), the feature caches (``feature_cache.py``), prompt-once packing
(``packing.py``), gradient checkpointing (``checkpointing.py``).

Shapes: ``B`` prompts (one clip each), ``G`` samples per prompt, ``N = B*G`` completions, item-major
(rows ``i*G .. i*G+G-1`` belong to prompt ``i``), ``L`` prompt tokens (left padded), ``T`` completion
tokens, ``D`` hidden size, ``V`` vocabulary.

Design choices (why):

* **Audio encoded once per clip.** ``prompt_embeds`` computes the merged ``inputs_embeds`` (text
  embeddings with the projected audio features scattered into the ``<|AUDIO|>`` positions) for the B
  prompts once and expands them to N rows. HF ``generate(input_features=..., num_return_sequences=G)``
  would run the encoder G times. When the audio path (encoder + projector) has no trainable
  parameter, the projected features are also cached on the batch object, so scoring the same batch
  after sampling does not encode again. When only the encoder is frozen (the projector trains), the
  encoder's output (``encode_audio_hidden``) is cached on the batch instead and only the projector
  reruns, so rollout and update share one encoder pass. The teacher (frozen initial model) keeps its
  projected features per clip across steps in a bounded cache keyed by (weights fingerprint, clip
  content) (``feature_cache.ClipFeatureCache``, optionally on disk so later runs reuse them too): the
  same clean clip is never encoded twice. ``cache_encoder_output = False`` restores one encoder
  pass per call (benchmarks compare both). ``encoder_calls`` / ``encoder_clips`` count the encoder runs.
* **Shared prompt prefix.** The G samples of an item share its prompt: generation runs the prompt
  once per item (B rows) and repeats its KV cache G times, instead of running the same prompt G
  times (``share_prefix``). Scoring, with gradients (``share_prefix_grad``) or without
  (``share_prefix``), packs each item's G completions behind its one prompt in a single row with a
  4-D attention mask (``packing.py``), so the G completions' gradients sum into the one prompt pass
  and the prompt's activation memory does not grow with G (for attention kernels without 4-D masks:
  the prompt's KV cache repeated G times, a differentiable copy with gradients, ``pack_completions``).
* **Our own sampling loop** (KV cache, temperature, top-p) rather than ``GenerationMixin.generate``:
  it starts from ``inputs_embeds``, uses exactly the same position ids as scoring (cumsum of the
  attention mask, so left padding changes nothing), suppresses every special token except EOS
  (a sampled ``<|AUDIO|>`` crashed a prototype at the next feature merge), and returns the raw
  log-probs of the sampled tokens, equal to ``token_logprobs`` at temperature 1.
* **Teacher = initial model.** With LoRA, ``teacher()`` disables the adapter (peft's
  ``disable_adapter``): no second copy in memory. Otherwise a frozen deep copy made at load time.
* Scoring calls the text model and applies the LM head to the T completion positions only (the full
  ``[N, L+T, V]`` logits of a 7B model would not fit).
"""

from __future__ import annotations

import abc
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import torch
from torch import nn

from ..config import ConfigError
from . import loading
from .checkpointing import wrap_layers
from .loading import DTYPES, META_FILE, backbone_of
from .packing import packed_attention_mask, packed_positions, unpack_predicting
from .feature_cache import BatchFeatures, ClipFeatureCache, clip_key, weights_fingerprint

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."


@dataclass
class Completions:
    """Sampled completions, item-major.

    ids: [N, T] long (pad id after EOS); mask: [N, T] long, 1 up to and including the first EOS, 0
    after (all 1 when no EOS within ``max_new_tokens``); texts: N strings decoded without special
    tokens; logprobs: [N, T] float32 raw log-probs (temperature 1, no suppression) of the sampled
    tokens under the sampling model, 0 where mask is 0.
    """

    ids: torch.Tensor
    mask: torch.Tensor
    texts: list[str]
    logprobs: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        return self.ids.shape[0]


@dataclass
class PromptState:
    """The prompts after one decoder pass, expanded to N = B*G rows (``AudioLLM.encode_prompt``).

    last: [N, D] hidden state at the last prompt position (predicts the first completion token);
    cache: the KV cache of the N rows (HF ``Cache``); attention_mask, position_ids: [N, L].
    """

    last: torch.Tensor
    cache: Any
    attention_mask: torch.Tensor
    position_ids: torch.Tensor


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """[N, S] 0/1 mask -> [N, S] positions counting attended tokens only (pads at 0)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus filtering on [N, V] logits: keep the smallest set with cumulative prob >= top_p."""
    if top_p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
    probs = sorted_logits.softmax(-1)
    drop = probs.cumsum(-1) - probs > top_p  # mass strictly before this token already reaches top_p
    drop[..., 0] = False
    sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)


class AudioLLM(abc.ABC):
    """One audio LLM behind the adapter contract. Subclasses fill in the backbone-specific bits.

    Attributes: ``model`` (the top-level nn.Module: PeftModel or HF model; give it to the optimizer /
    accelerate), ``hf`` (the underlying HF model, LoRA layers injected in place), ``processor``,
    ``peft`` (PeftModel or None), ``teacher_mode`` (adapter_disabled | frozen_copy | self),
    ``system_prompt``, ``encoder_calls`` (audio-encoder forwards), ``encoder_clips`` (clips encoded).
    """

    backbone: str = ""
    # Module-name prefix of the language model inside the HF model (LoRA must stay under it).
    lm_prefix: str = ""
    # Extra kwargs for the processor call (feature extractor options).
    sampling_rate: int = 16000

    # ---------------------------------------------------------------- backbone-specific hooks
    @classmethod
    @abc.abstractmethod
    def hf_class(cls) -> type:
        """The transformers model class to load."""

    # transformers 5.x lays out every Qwen audio backbone the same way; subclasses override if not.
    def text_model(self, m: nn.Module) -> nn.Module:
        """The decoder stack of HF model ``m``: forward(inputs_embeds, attention_mask, position_ids, cache)."""
        return m.model.language_model

    def lm_head(self, m: nn.Module) -> nn.Module:
        """The output projection of HF model ``m``."""
        return m.lm_head

    def audio_encoder(self, m: nn.Module) -> nn.Module:
        """The audio encoder module of ``m`` (frozen by ``freeze_audio_encoder``; counted)."""
        return m.model.audio_tower

    @abc.abstractmethod
    def audio_modules(self, m: nn.Module) -> list[nn.Module]:
        """Every module on the audio path (encoder, projector): if none trains, features are cached."""

    @abc.abstractmethod
    def encode_audio(self, m: nn.Module, batch: Any) -> torch.Tensor:
        """Projected audio features for every placeholder of the batch, in order: [n_placeholders, D]."""

    @property
    @abc.abstractmethod
    def audio_token_id(self) -> int:
        """Id of the audio placeholder token the features replace."""

    # ---------------------------------------------------------------- optional capabilities
    # Declared here (not found by hasattr): a backbone that has one sets the flag and overrides the methods.
    #: The audio path is a frozen-able encoder then a per-frame projector: the encoder's output can be
    #: cached (per batch, per clip in the warm-up) while the projector trains.
    has_separate_projector: bool = False

    def encode_audio_hidden(self, m: nn.Module, batch: Any) -> torch.Tensor:
        """Encoder output before the projector, valid frames of every clip in order: [n, H]."""
        raise NotImplementedError(f"{type(self).__name__} has no separate projector (has_separate_projector)")

    def project_audio(self, m: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        """The projector on encoder frames [n, H] -> [n, D] (per frame)."""
        raise NotImplementedError(f"{type(self).__name__} has no separate projector (has_separate_projector)")

    def chat_messages(self, prompt: str) -> list[dict]:
        """The conversation for one user text with one clip (system prompt first)."""
        return [
            {"role": "system", "content": self.system_prompt},
            {"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": prompt}]},
        ]

    def position_ids(self, attention_mask: torch.Tensor) -> torch.Tensor:
        """Position ids for the text model (Omni models override for 3-D rope if needed)."""
        return position_ids_from_mask(attention_mask)

    @classmethod
    def lora_target_modules(cls, regex: str) -> str:
        """The LoRA target regex for this backbone (subclasses translate the Qwen2-Audio default)."""
        return regex

    # ---------------------------------------------------------------- construction
    def __init__(self, hf_model: nn.Module, processor: Any, *, peft_model: Optional[nn.Module] = None,
                 teacher_model: Optional[nn.Module] = None, teacher_mode: str = "self",
                 base_path: Optional[str] = None, system_prompt: str = DEFAULT_SYSTEM_PROMPT):
        self.hf = hf_model
        self.peft = peft_model
        self.model = peft_model if peft_model is not None else hf_model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.tokenizer.padding_side = "left"
        self.teacher_model = teacher_model
        self.teacher_mode = teacher_mode
        self.base_path = base_path
        self.system_prompt = system_prompt
        self.encoder_calls = 0
        self.encoder_clips = 0
        self.cache_encoder_output = True  # batch-level encoder-output cache + per-clip teacher cache
        self.clip_cache = ClipFeatureCache()  # the teacher's per-clip features (``load`` sets its bounds)
        self.share_prefix = True  # prompt run once per item, its KV cache repeated for the G samples
        self.share_prefix_grad = True  # the same with gradients (update, KD); False: prompt repeated G times
        self.pack_completions = True  # completions packed behind the prompt (else KV cache repeated)
        # Recompute each decoder layer in the backward pass instead of keeping its activations
        # (``train.gradient_checkpointing``); our own wrapper, since HF's needs train() and drops the cache.
        self.gradient_checkpointing = False
        self._fingerprints: dict[tuple, str] = {}  # ids of frozen modules -> fingerprint of their weights
        self._active = hf_model
        self._in_teacher = False
        for m in [hf_model] + ([teacher_model] if teacher_model is not None else []):
            self.audio_encoder(m).register_forward_pre_hook(self._count_encoder, with_kwargs=True)
        wrap_layers(self.text_model(hf_model).layers, lambda: self.gradient_checkpointing)
        self._init_token_sets()

    def _count_encoder(self, module, args, kwargs):
        self.encoder_calls += 1  # every forward of an audio encoder, whoever calls it

    def _init_token_sets(self) -> None:
        tok = self.tokenizer
        gen = getattr(self.hf, "generation_config", None)
        eos = getattr(gen, "eos_token_id", None) if gen is not None else None
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        if tok.eos_token_id is not None:
            eos.append(tok.eos_token_id)
        self.eos_token_ids = sorted(set(int(e) for e in eos))
        if not self.eos_token_ids:
            raise ConfigError("the model has no EOS token (generation_config.eos_token_id and tokenizer.eos_token "
                              "are both empty): set one in the model directory")
        pad = tok.pad_token_id if tok.pad_token_id is not None else self.eos_token_ids[0]
        self.pad_token_id = int(pad)
        vocab = self.lm_head(self.hf).weight.shape[0]
        special = set(int(i) for i in tok.all_special_ids)
        for i, added in getattr(tok, "added_tokens_decoder", {}).items():
            if getattr(added, "special", False):
                special.add(int(i))
        special.add(int(self.audio_token_id))
        # Rows of the embedding beyond the tokenizer (padding to a multiple) decode to nothing.
        extra = set(range(len(tok), vocab))
        self.suppress_token_ids = sorted((special | extra) - set(self.eos_token_ids))
        self._suppress = torch.tensor([i for i in self.suppress_token_ids if i < vocab], dtype=torch.long)

    @classmethod
    def load(cls, path: str | Path, cfg_model: Any, *, lora: Any = None, train: bool = True,
             base_path: Optional[str | Path] = None, fold_adapter: bool = True) -> "AudioLLM":
        """Load from a local HF directory: full weights or a saved PEFT adapter (``loading.load``)."""
        return loading.load(cls, path, cfg_model, lora=lora, train=train, base_path=base_path,
                            fold_adapter=fold_adapter)

    @classmethod
    def load_processor(cls, path: Path, cfg_model: Any) -> Any:
        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(str(path), trust_remote_code=bool(getattr(cfg_model, "trust_remote_code", False)))

    # ---------------------------------------------------------------- public pieces (other losses: warm-up SFT)
    @property
    def active_model(self) -> nn.Module:
        """The HF model computing now: the student, or the frozen copy inside ``teacher()``."""
        return self._active

    def audio_features(self, batch: Any) -> torch.Tensor:
        """Projected audio features [n_placeholders, D] of ``batch`` under the active model (cached if frozen)."""
        return self._audio_features(self._active, batch)

    def hidden_states(self, embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Decoder output [B, S, D] (active model) on merged embeddings [B, S, D], left-padded mask [B, S]."""
        return self._decoder(self._active, embeds, attention_mask, self.position_ids(attention_mask))[0]

    # ---------------------------------------------------------------- basic properties
    @property
    def device(self) -> torch.device:
        return self.text_model(self.hf).get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.text_model(self.hf).get_input_embeddings().weight.dtype

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def to(self, device: Any) -> "AudioLLM":
        self.model.to(device)
        if self.teacher_model is not None:
            self.teacher_model.to(device)
        return self

    # ---------------------------------------------------------------- inputs
    def build_inputs(self, prompts: list[str], waveforms: list[np.ndarray]) -> Any:
        """Chat-templated prompts (one clip each), audio features, left padding -> BatchFeature.

        ``prompts``: B user texts; ``waveforms``: B float32 mono 16 kHz arrays (cropped/padded to the
        model's window by the feature extractor).
        """
        if len(prompts) != len(waveforms):
            raise ValueError(f"build_inputs: {len(prompts)} prompts but {len(waveforms)} waveforms")
        texts = [self.processor.apply_chat_template(self.chat_messages(p), add_generation_prompt=True, tokenize=False)
                 for p in prompts]
        wavs = [np.asarray(w, dtype=np.float32).reshape(-1) for w in waveforms]
        self.processor.tokenizer.padding_side = "left"
        # features in float32 even under a mixed-precision autocast (the Whisper extractor's torch STFT
        # would come out bf16 and fail its numpy conversion)
        with torch.autocast("cpu", enabled=False), (torch.autocast("cuda", enabled=False)
                                                     if torch.cuda.is_available() else nullcontext()):
            batch = self.processor(text=texts, audio=wavs, sampling_rate=self.sampling_rate, return_tensors="pt",
                                   padding=True)
        n_ph = (batch["input_ids"] == self.audio_token_id).sum(-1)
        if (n_ph == 0).any():
            raise ValueError("build_inputs: a prompt has no audio placeholder after processing (empty clip?)")
        # Content keys of the clips: the teacher's per-clip feature cache is keyed by them.
        BatchFeatures.attach(batch, [clip_key(w) for w in wavs])
        return batch

    # ---------------------------------------------------------------- prompt embeddings
    def _audio_path_frozen(self, m: nn.Module) -> bool:
        return not any(p.requires_grad for mod in self.audio_modules(m) for p in mod.parameters())

    def _audio_features(self, m: nn.Module, batch: Any) -> torch.Tensor:
        frozen = self._audio_path_frozen(m)
        cache = BatchFeatures.of(batch) or BatchFeatures.attach(batch, None)
        key = ("projected", id(self.audio_modules(m)[-1]), str(self.device))
        if frozen and key in cache.store:
            return cache.store[key]
        if (frozen and self.cache_encoder_output and self._in_teacher and self.teacher_mode != "self"
                and self.clip_cache.enabled and cache.clip_keys is not None):
            feats = self._teacher_clip_features(m, batch, cache.clip_keys)
        elif (not frozen and self.cache_encoder_output and self.has_separate_projector
              and not any(p.requires_grad for p in self.audio_encoder(m).parameters())):
            # Frozen encoder, trainable projector: cache the encoder's output, rerun the projector only.
            hkey = ("hidden", id(self.audio_encoder(m)), str(self.device))
            if hkey not in cache.store:
                with torch.no_grad():
                    cache.store[hkey] = self.encode_audio_hidden(m, batch)
                self.encoder_clips += int(batch["input_features"].shape[0])
            return self.project_audio(m, cache.store[hkey])
        else:
            with torch.no_grad() if frozen else nullcontext():
                feats = self.encode_audio(m, batch)
            self.encoder_clips += int(batch["input_features"].shape[0])
        if frozen:
            cache.store[key] = feats
        return feats

    def _fingerprint(self, modules: list[nn.Module]) -> str:
        key = tuple(id(mod) for mod in modules)
        if key not in self._fingerprints:
            self._fingerprints[key] = weights_fingerprint(modules)
        return self._fingerprints[key]

    def _teacher_clip_features(self, m: nn.Module, batch: Any, clip_keys: list[str]) -> torch.Tensor:
        """The frozen teacher's projected features, per clip, from ``clip_cache`` where it has them.

        On a miss with a separate projector, the encoder's output comes from ``encoder_output`` (which
        the warm-up filled, on disk with ``model.feature_cache_dir``) and only the projector runs.
        """
        fp = self._fingerprint(self.audio_modules(m))
        counts = (batch["input_ids"] == self.audio_token_id).sum(-1).tolist()
        parts: list[Optional[torch.Tensor]] = [self.clip_cache.get((fp, k)) for k in clip_keys]
        missing = [i for i, p in enumerate(parts) if p is None]
        if missing:
            with torch.no_grad():
                if self.has_separate_projector:
                    hidden = self.encoder_output(batch, missing, model=m)
                    feats = self.project_audio(m, torch.cat([h.to(self.device) for h in hidden]))
                else:
                    idx = torch.tensor(missing)
                    feats = self.encode_audio(m, {"input_features": batch["input_features"][idx],
                                                  "feature_attention_mask": batch["feature_attention_mask"][idx]})
                    self.encoder_clips += len(missing)
            for i, part in zip(missing, feats.split([counts[i] for i in missing])):
                parts[i] = part
                self.clip_cache.put((fp, clip_keys[i]), part)
        return torch.cat([p.to(self.device) for p in parts])

    def encoder_output(self, batch: Any, rows: list[int], model: Optional[nn.Module] = None) -> list[torch.Tensor]:
        """The frozen encoder's output per clip (``has_separate_projector``): [n_i, H] for ``rows`` of ``batch``.

        From ``clip_cache`` where present, keyed by (the encoder's weights fingerprint, clip content):
        the warm-up's encodings serve the RL teacher's clean clips (same frozen encoder, same clip),
        across processes with a disk folder. No gradients. ``model``: default the student's HF model.
        """
        m = model if model is not None else self.hf
        fp = "encoder-" + self._fingerprint([self.audio_encoder(m)])
        keys = BatchFeatures.of(batch).clip_keys
        out: list[Optional[torch.Tensor]] = [self.clip_cache.get((fp, keys[i])) for i in rows]
        todo = [j for j, h in enumerate(out) if h is None]
        if todo:
            idx = torch.tensor([rows[j] for j in todo])
            counts = (batch["input_ids"][idx] == self.audio_token_id).sum(-1).tolist()
            with torch.no_grad():
                h = self.encode_audio_hidden(m, {"input_features": batch["input_features"][idx],
                                                 "feature_attention_mask": batch["feature_attention_mask"][idx]})
            self.encoder_clips += len(todo)
            for j, part in zip(todo, h.split(counts)):
                out[j] = part
                self.clip_cache.put((fp, keys[rows[j]]), part)
        return out

    def clear_feature_cache(self) -> None:
        """Drop the teacher's per-clip features held in memory (batch-level caches die with their batch)."""
        self.clip_cache.clear()

    def prompt_embeds(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Merged prompt embeddings [B, L, D] and attention mask [B, L] under the active model."""
        m = self._active
        ids = batch["input_ids"].to(self.device)
        am = batch["attention_mask"].to(self.device)
        emb = self.text_model(m).get_input_embeddings()(ids)
        feats = self._audio_features(m, batch)
        ph = (ids == self.audio_token_id)
        if int(ph.sum()) != feats.shape[0]:
            raise ValueError(f"audio placeholders ({int(ph.sum())}) and audio features ({feats.shape[0]}) differ: "
                             "the prompt and the clip do not match (was the batch built by build_inputs?)")
        emb = emb.masked_scatter(ph.unsqueeze(-1), feats.to(emb.dtype))
        return emb, am

    def _expand(self, x: torch.Tensor, num_samples: int) -> torch.Tensor:
        return x if num_samples == 1 else x.repeat_interleave(num_samples, dim=0)

    def _decoder(self, m: nn.Module, embeds, attention_mask, position_ids, cache=None, use_cache=False):
        out = self.text_model(m)(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids,
                                 cache=cache, use_cache=use_cache)
        return out.last_hidden_state, getattr(out, "cache", None)

    def encode_prompt(self, batch: Any, num_samples: int = 1) -> "PromptState":
        """Run the B prompts of ``batch`` under the active model, expanded to N = B*G rows.

        With ``share_prefix`` (no grad) / ``share_prefix_grad`` (grad enabled) each prompt runs once
        and its KV cache is repeated G times; the repeat is differentiable, so with gradients the G
        completions' gradients sum into the one prompt computation (and the trainable projector).
        Otherwise the prompt embeddings are repeated and run G times (the reference path).
        """
        m = self._active
        emb, am = self.prompt_embeds(batch)
        share = self.share_prefix_grad if torch.is_grad_enabled() else self.share_prefix
        if share and num_samples > 1:
            pos = self.position_ids(am)
            h, cache = self._decoder(m, emb, am, pos, use_cache=True)
            if cache is not None and hasattr(cache, "batch_repeat_interleave"):
                cache.batch_repeat_interleave(num_samples)
                return PromptState(self._expand(h[:, -1], num_samples), cache, self._expand(am, num_samples),
                                   self._expand(pos, num_samples))
        emb, am = self._expand(emb, num_samples), self._expand(am, num_samples)
        pos = self.position_ids(am)
        h, cache = self._decoder(m, emb, am, pos, use_cache=True)
        return PromptState(h[:, -1], cache, am, pos)

    # ---------------------------------------------------------------- generation
    @torch.no_grad()
    def generate(self, batch: Any, num_samples: int = 1, *, max_new_tokens: int, do_sample: bool = True,
                 temperature: float = 1.0, top_p: float = 1.0,
                 generator: Optional[torch.Generator] = None) -> Completions:
        """Sample ``num_samples`` completions per prompt (item-major), encoding each clip once."""
        m = self._active
        st = self.encode_prompt(batch, num_samples)
        last, cache, am, pos = st.last, st.cache, st.attention_mask, st.position_ids
        n = last.shape[0]
        dev = last.device
        next_pos = pos[..., -1:] + 1
        head = self.lm_head(m)
        embed = self.text_model(m).get_input_embeddings()
        eos = torch.tensor(self.eos_token_ids, device=dev)
        suppress = self._suppress.to(dev)
        finished = torch.zeros(n, dtype=torch.bool, device=dev)
        toks, lps = [], []
        for step in range(max_new_tokens):
            logits = head(last).float()  # [N, V]
            raw_lp = logits.log_softmax(-1)
            work = logits.index_fill(-1, suppress, float("-inf")) if suppress.numel() else logits
            if do_sample:
                work = top_p_filter(work / temperature, top_p)
                tok = torch.multinomial(work.softmax(-1), 1, generator=generator).squeeze(-1)
            else:
                tok = work.argmax(-1)
            tok = torch.where(finished, torch.full_like(tok, self.pad_token_id), tok)
            toks.append(tok)
            lps.append(torch.where(finished, torch.zeros_like(tok, dtype=raw_lp.dtype),
                                   raw_lp.gather(-1, tok[:, None]).squeeze(-1)))
            finished = finished | torch.isin(tok, eos)
            if step == max_new_tokens - 1 or finished.all():
                break
            am = torch.cat([am, torch.ones_like(am[:, :1])], dim=1)
            h, cache = self._decoder(m, embed(tok[:, None]), am, next_pos, cache=cache, use_cache=True)
            next_pos = next_pos + 1
            last = h[:, -1]
        ids = torch.stack(toks, 1)
        is_eos = torch.isin(ids, eos)
        after = (is_eos.long().cumsum(1) - is_eos.long()) > 0
        mask = (~after).long()
        ids = ids.masked_fill(after, self.pad_token_id)
        lp = torch.stack(lps, 1) * mask
        texts = self.decode(ids, mask)
        return Completions(ids=ids, mask=mask, texts=texts, logprobs=lp)

    def decode(self, ids: torch.Tensor, mask: torch.Tensor) -> list[str]:
        out = []
        for row, mrow in zip(ids.tolist(), mask.tolist()):
            out.append(self.tokenizer.decode([t for t, k in zip(row, mrow) if k], skip_special_tokens=True).strip())
        return out

    # ---------------------------------------------------------------- scoring
    def completion_hidden(self, batch: Any, ids: torch.Tensor, mask: torch.Tensor, num_samples: int = 1) -> torch.Tensor:
        """Hidden states [N, T, D] whose LM-head output predicts completion token t of ``ids`` [N, T].

        Under the active model, with gradients when the caller's context enables them. The prompt
        runs once per item when ``share_prefix`` (no grad) / ``share_prefix_grad`` (grad) is on:
        each item's G completions are packed behind its prompt in one row (``packing.py``: the
        prompt's activations stay constant in G; without gradients it is also ~1.4x faster than
        attending a repeated cache); where the attention implementation takes no 4-D mask, the
        completions run on the prompt's KV cache repeated G times (``encode_prompt``). Otherwise one
        forward over the repeated prompt + completion. ``mask`` [N, T] hides the pads after EOS from
        later positions; a row whose mask is all 0 is a placeholder (its outputs are meaningless).
        """
        n_prompts = batch["input_ids"].shape[0]
        if n_prompts * num_samples != ids.shape[0]:
            raise ValueError(f"{ids.shape[0]} completions but {n_prompts * num_samples} prompt rows "
                             f"(B={n_prompts} x num_samples={num_samples})")
        m = self._active
        ids, mask = ids.to(self.device), mask.to(self.device)
        comp = self.text_model(m).get_input_embeddings()(ids)
        share = self.share_prefix_grad if torch.is_grad_enabled() else self.share_prefix
        attn = getattr(self.text_model(m).config, "_attn_implementation", "sdpa")
        if share and num_samples > 1 and self.pack_completions and attn in ("sdpa", "eager"):
            emb, am = self.prompt_embeds(batch)
            b, big, d = emb.shape
            cm = mask.view(b, num_samples, -1)
            x = torch.cat([emb, comp.view(b, -1, d)], dim=1)  # [B, L + G*T, D]
            amask = packed_attention_mask(am, cm, emb.dtype if attn == "eager" else None)
            h, _ = self._decoder(m, x, amask, packed_positions(am, cm))
            return unpack_predicting(h, big, num_samples)
        if share and num_samples > 1:
            st = self.encode_prompt(batch, num_samples)
            full_am = torch.cat([st.attention_mask, mask.to(st.attention_mask.dtype)], dim=1)
            big = st.attention_mask.shape[1]
            hc, _ = self._decoder(m, comp, full_am, self.position_ids(full_am)[:, big:], cache=st.cache,
                                  use_cache=True)
            return torch.cat([st.last.unsqueeze(1), hc[:, :-1]], dim=1)  # predicting tokens 0..T-1
        emb, am = self.prompt_embeds(batch)
        emb, am = self._expand(emb, num_samples), self._expand(am, num_samples)
        big, t = emb.shape[1], ids.shape[1]
        full_am = torch.cat([am, mask.to(am.dtype)], dim=1)
        h, _ = self._decoder(m, torch.cat([emb, comp], dim=1), full_am, self.position_ids(full_am))
        return h[:, big - 1: big + t - 1]

    def completion_logits(self, batch: Any, ids: torch.Tensor, mask: torch.Tensor, *, num_samples: int = 1,
                          with_grad: bool = False) -> torch.Tensor:
        """Full next-token logits [N, T, V] (float32) at the completion positions (KD, teacher argmax).

        [N, T, V] is small (T completion tokens only); the prompt positions never reach the LM head.
        """
        with nullcontext() if with_grad else torch.no_grad():
            return self.lm_head(self._active)(self.completion_hidden(batch, ids, mask, num_samples)).float()

    def token_logprobs(self, batch: Any, ids: torch.Tensor, mask: torch.Tensor, *, num_samples: int = 1,
                       with_grad: bool = False, return_entropy: bool = False, temperature: float = 1.0):
        """Log-probs [N, T] of completion tokens ``ids`` [N, T] given the prompts of ``batch`` (B rows).

        ``mask`` [N, T]: 1 for real tokens; outputs are 0 where it is 0. With ``return_entropy``
        also returns entropies [N, T] of the full next-token distributions. ``temperature`` divides
        the logits (1 = the raw model). Under ``teacher()`` the frozen initial model scores.
        """
        with nullcontext() if with_grad else torch.no_grad():
            logits = self.completion_logits(batch, ids, mask, num_samples=num_samples, with_grad=with_grad)
            if temperature != 1.0:
                logits = logits / temperature
            ids, mask = ids.to(logits.device), mask.to(logits.device)
            lse = logits.logsumexp(-1)
            lp = (logits.gather(-1, ids.unsqueeze(-1)).squeeze(-1) - lse) * mask
            if not return_entropy:
                return lp
            p = (logits - lse.unsqueeze(-1)).exp()
            ent = (lse - (p * logits).sum(-1)) * mask
            return lp, ent

    # ---------------------------------------------------------------- teacher
    @contextmanager
    def teacher(self) -> Iterator["AudioLLM"]:
        """Inside: the same adapter computes with the frozen initial model (LoRA off, or frozen copy)."""
        if self._in_teacher:
            yield self
            return
        self._in_teacher = True
        try:
            if self.teacher_mode == "frozen_copy":
                prev = self._active
                self._active = self.teacher_model
                try:
                    yield self
                finally:
                    self._active = prev
            elif self.teacher_mode == "adapter_disabled":
                with self.peft.disable_adapter():
                    yield self
            else:  # "self": an untrained (evaluation) model is its own initial model
                yield self
        finally:
            self._in_teacher = False

    # ---------------------------------------------------------------- save
    def save(self, out_dir: str | Path) -> Path:
        """HF format: the PEFT adapter (``PeftModel.from_pretrained`` loads it) or full weights; + processor."""
        return loading.save(self, out_dir)


__all__ = ["AudioLLM", "Completions", "PromptState", "position_ids_from_mask", "top_p_filter", "DTYPES",
           "META_FILE", "backbone_of", "DEFAULT_SYSTEM_PROMPT"]
