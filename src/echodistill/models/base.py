"""The model adapter contract: every backbone is used through ``AudioLLM``; the trainer never branches.

The contract (what code outside ``models/`` may call): ``build_inputs``, ``generate``,
``token_logprobs``, ``completion_logits``, ``encode_prompt``, ``prompt_embeds``, ``teacher()``,
``save`` (``load_adapter`` loads), ``trainable_parameters``, and for other losses (warm-up SFT)
``active_model``, ``audio_features``, ``hidden_states``, ``text_model`` / ``lm_head``,
``encoder_output`` / ``project_audio``, ``features`` (the feature-cache service). ``AudioLLM`` is
generic; what differs between backbones is its ``family`` (``family.py``, one class per family,
registered by name). Sampling: ``sampler.py``; scoring layouts: ``scorer.py``; the audio cache
policy: ``audio_path.py`` over ``feature_cache.py``; loading / LoRA / saving: ``loading.py``.

Shapes: ``B`` prompts (one clip each), ``G`` samples per prompt, ``N = B*G`` completions, item-major
(rows ``i*G .. i*G+G-1`` belong to prompt ``i``), ``L`` prompt tokens (left padded), ``T`` completion
tokens, ``D`` hidden size, ``V`` vocabulary.

**Teacher = initial model, as a read-only view** (``teacher.py``): ``with model.teacher() as teacher:``
gives another ``AudioLLM`` over the same processor, tokens and feature cache that computes with the
frozen initial model; the student object never changes mode.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import torch
from torch import nn

from . import audio_path, loading, sampler, scorer
from .checkpointing import wrap_layers
from .family import Family, position_ids_from_mask
from .feature_cache import FeatureCache, clip_key
from .loading import DTYPES, META_FILE, backbone_of
from .sampler import Completions, special_tokens, top_p_filter
from .scorer import PromptState
from .teacher import checked, computes

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."


class AudioLLM:
    """One audio LLM behind the adapter contract.

    Attributes: ``family`` (the backbone's ``Family``), ``model`` (the top-level nn.Module: PeftModel
    or HF model; give it to the optimizer / accelerate), ``hf`` (the underlying HF model, LoRA layers
    injected in place), ``processor``, ``tokenizer``, ``peft`` (PeftModel or None), ``teacher_mode``
    (adapter_disabled | frozen_copy | self), ``is_teacher`` (a view from ``teacher()``),
    ``system_prompt``, ``features`` (``FeatureCache``, shared with the teacher view), ``eos_token_ids``,
    ``pad_token_id``, ``suppress_token_ids`` (never sampled), ``audio_token_id``, ``end_of_turn_id``.
    Switches (benchmarks compare both settings): ``cache_encoder_output`` (``audio_path``),
    ``share_prefix`` / ``share_prefix_grad`` (the G samples share one prompt pass without / with
    gradients), ``share_kv`` (generation keeps that pass's KV cache once: ``sampler``),
    ``pack_completions`` (``scorer``), ``gradient_checkpointing``.
    """

    def __init__(self, family: Family, hf_model: nn.Module, processor: Any, *, peft_model: Optional[nn.Module] = None,
                 teacher_model: Optional[nn.Module] = None, teacher_mode: str = "self",
                 base_path: Optional[str] = None, system_prompt: str = DEFAULT_SYSTEM_PROMPT,
                 features: Optional[FeatureCache] = None):
        self.family = family
        self.hf, self.peft = hf_model, peft_model
        self.model = peft_model if peft_model is not None else hf_model
        self.processor, self.tokenizer = processor, processor.tokenizer
        self.tokenizer.padding_side = "left"
        self.teacher_model, self.teacher_mode = teacher_model, teacher_mode
        self.base_path, self.system_prompt = base_path, system_prompt
        self.features = features if features is not None else FeatureCache()
        self.merged_adapters: list[str] = []
        self.is_teacher, self.calls = False, 0  # calls: computing calls made (``teacher.checked``)
        self._model = hf_model  # the HF model this object computes with (the frozen copy in a teacher view)
        self._adapter_off = False  # a LoRA teacher view inside one of its calls
        self.cache_encoder_output = self.share_prefix = self.share_prefix_grad = self.pack_completions = True
        self.share_kv = True  # ``model.share_prompt_kv``
        self.gradient_checkpointing = False  # our wrapper: HF's needs train() and drops the prompt's KV cache
        for m in [hf_model] + ([teacher_model] if teacher_model is not None else []):
            family.audio_encoder(m).register_forward_pre_hook(self.features.count_call, with_kwargs=True)
        wrap_layers(family.text_model(hf_model).layers, lambda: self.gradient_checkpointing)
        self.backbone, self.has_separate_projector = family.name, family.has_separate_projector
        self.audio_token_id = family.audio_token_id(hf_model)
        self.eos_token_ids, self.pad_token_id, self.suppress_token_ids = special_tokens(
            self.tokenizer, getattr(hf_model, "generation_config", None), family.lm_head(hf_model).weight.shape[0],
            self.audio_token_id)
        self.end_of_turn_id = family.end_of_turn_id(self.tokenizer, self.eos_token_ids)  # ends a supervised answer

    # ---------------------------------------------------------------- what the family knows
    encoder_calls = property(lambda self: self.features.encoder_calls)  # audio-encoder forwards (shared counter)
    encoder_clips = property(lambda self: self.features.encoder_clips)  # clips encoded (student and teacher)

    def chat_messages(self, prompt: str) -> list[dict]:
        return self.family.chat_messages(self.system_prompt, prompt)

    def text_model(self, m: nn.Module) -> nn.Module:
        return self.family.text_model(m)

    def lm_head(self, m: nn.Module) -> nn.Module:
        return self.family.lm_head(m)

    @property
    def active_model(self) -> nn.Module:
        """The HF model this object computes with: the student's, or the teacher view's frozen model."""
        return self._model

    @property
    def device(self) -> torch.device:
        return self.family.text_model(self.hf).get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.family.text_model(self.hf).get_input_embeddings().weight.dtype

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [] if self.is_teacher else [p for p in self.model.parameters() if p.requires_grad]

    def to(self, device: Any) -> "AudioLLM":
        self.model.to(device)
        if self.teacher_model is not None:
            self.teacher_model.to(device)
        return self

    # ---------------------------------------------------------------- inputs and features
    def build_inputs(self, prompts: list[str], waveforms: list[np.ndarray]) -> Any:
        """Chat-templated prompts (one clip each), audio features, left padding -> BatchFeature.

        ``prompts``: B user texts; ``waveforms``: B float32 mono 16 kHz arrays (cropped/padded to the
        model's window by the feature extractor). The clips' content keys go to ``features``.
        """
        if len(prompts) != len(waveforms):
            raise ValueError(f"build_inputs: {len(prompts)} prompts but {len(waveforms)} waveforms")
        texts = [self.processor.apply_chat_template(self.chat_messages(p), add_generation_prompt=True, tokenize=False)
                 for p in prompts]
        wavs = [np.asarray(w, dtype=np.float32).reshape(-1) for w in waveforms]
        self.tokenizer.padding_side = "left"
        # features in float32 even under autocast (the Whisper extractor's torch STFT would come out bf16)
        with torch.autocast("cpu", enabled=False), (torch.autocast("cuda", enabled=False)
                                                     if torch.cuda.is_available() else nullcontext()):
            batch = self.processor(text=texts, audio=wavs, sampling_rate=self.family.sampling_rate,
                                   return_tensors="pt", padding=True)
        if ((batch["input_ids"] == self.audio_token_id).sum(-1) == 0).any():
            raise ValueError("build_inputs: a prompt has no audio placeholder after processing (empty clip?)")
        self.features.register(batch, [clip_key(w) for w in wavs])
        return batch

    @computes
    def audio_features(self, batch: Any) -> torch.Tensor:
        """Projected audio features [n_placeholders, D] of ``batch`` (cached where frozen: ``audio_path``)."""
        return audio_path.audio_features(self.family, self.features, self._model, batch, device=self.device,
                                         teacher=self.is_teacher and self.teacher_mode != "self",
                                         cache_encoder_output=self.cache_encoder_output)

    def encoder_output(self, batch: Any, rows: list[int], pin: bool = False) -> list[torch.Tensor]:
        """The frozen encoder's output [n_i, H] per clip of ``rows`` (``audio_path.encoder_output``)."""
        return audio_path.encoder_output(self.family, self.features, self.hf, batch, rows, pin=pin)

    def project_audio(self, m: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        """The projector of HF model ``m`` on encoder frames [n, H] -> [n, D] (``has_separate_projector``)."""
        return self.family.project_audio(m, hidden)

    @computes
    def prompt_embeds(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Merged prompt embeddings [B, L, D] (audio features in the placeholders) and mask [B, L]."""
        ids = batch["input_ids"].to(self.device)
        emb = self.family.text_model(self._model).get_input_embeddings()(ids)
        feats = self.audio_features(batch)
        ph = ids == self.audio_token_id
        if int(ph.sum()) != feats.shape[0]:
            raise ValueError(f"audio placeholders ({int(ph.sum())}) and audio features ({feats.shape[0]}) differ: "
                             "the prompt and the clip do not match (was the batch built by build_inputs?)")
        return emb.masked_scatter(ph.unsqueeze(-1), feats.to(emb.dtype)), batch["attention_mask"].to(self.device)

    def decoder(self, embeds, attention_mask, position_ids, cache=None, use_cache=False):
        """The decoder stack on ``embeds`` [N, S, D] -> (hidden [N, S, D], the KV cache or None)."""
        out = self.family.text_model(self._model)(inputs_embeds=embeds, attention_mask=attention_mask,
                                                  position_ids=position_ids, cache=cache, use_cache=use_cache)
        return out.last_hidden_state, getattr(out, "cache", None)

    @computes
    def hidden_states(self, embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Decoder output [B, S, D] on merged embeddings [B, S, D] with a left-padded mask [B, S]."""
        return self.decoder(embeds, attention_mask, self.family.position_ids(attention_mask))[0]

    # ---------------------------------------------------------------- sampling and scoring
    @computes
    def encode_prompt(self, batch: Any, num_samples: int = 1) -> PromptState:
        """The B prompts' decoder pass expanded to N = B*G rows (``scorer.encode_prompt``)."""
        return scorer.encode_prompt(self, batch, num_samples)

    @computes
    def generate(self, batch: Any, num_samples: int = 1, **kwargs: Any) -> Completions:
        """``num_samples`` completions per prompt (``sampler.sample``: max_new_tokens, do_sample,
        temperature, top_p, generator), each clip encoded once and each prompt run once."""
        return sampler.sample(self, batch, num_samples, **kwargs)

    def decode(self, ids: torch.Tensor, mask: torch.Tensor) -> list[str]:
        return sampler.decode(self.tokenizer, ids, mask)

    @computes
    def completion_hidden(self, batch: Any, ids: torch.Tensor, mask: torch.Tensor, num_samples: int = 1) -> torch.Tensor:
        """Hidden states [N, T, D] predicting completion tokens ``ids`` [N, T] (``scorer.completion_hidden``)."""
        return scorer.completion_hidden(self, batch, ids, mask, num_samples)

    @computes
    def completion_logits(self, batch: Any, ids: torch.Tensor, mask: torch.Tensor, *, num_samples: int = 1,
                          with_grad: bool = False) -> torch.Tensor:
        """Full next-token logits [N, T, V] (float32) at the completion positions (KD, teacher argmax)."""
        with nullcontext() if with_grad else torch.no_grad():
            return self.family.lm_head(self._model)(self.completion_hidden(batch, ids, mask, num_samples)).float()

    def token_logprobs(self, batch: Any, ids: torch.Tensor, mask: torch.Tensor, *, num_samples: int = 1,
                       with_grad: bool = False, return_entropy: bool = False, temperature: float = 1.0):
        """Log-probs [N, T] of ``ids`` [N, T] given the prompts of ``batch`` (B rows), 0 where ``mask``
        is 0; with ``return_entropy`` also entropies [N, T]. ``temperature`` divides the logits."""
        with nullcontext() if with_grad else torch.no_grad():
            logits = self.completion_logits(batch, ids, mask, num_samples=num_samples, with_grad=with_grad)
            if temperature != 1.0:
                logits = logits / temperature
            return scorer.token_logprobs_from_logits(logits, ids, mask, return_entropy)

    # ---------------------------------------------------------------- teacher
    @contextmanager
    def teacher(self) -> Iterator["AudioLLM"]:
        """``with model.teacher() as teacher:`` a read-only view computing with the frozen initial model
        (LoRA disabled, or the frozen copy; ``teacher.py``). ``model`` itself stays the student."""
        with checked(self) as view:
            yield view

    def save(self, out_dir: str | Path) -> Path:
        """HF format: the PEFT adapter (``PeftModel.from_pretrained`` loads it) or full weights; + processor."""
        if self.is_teacher:
            raise TypeError("the teacher view is read-only: save the student")
        return loading.save(self, out_dir)


__all__ = ["AudioLLM", "Completions", "PromptState", "position_ids_from_mask", "top_p_filter", "DTYPES",
           "META_FILE", "backbone_of", "DEFAULT_SYSTEM_PROMPT"]
