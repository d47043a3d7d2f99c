"""Loading, LoRA and adapter folding, and saving: how an ``AudioLLM`` comes to be and is written out.

Not part of the computing contract (``base.py``): these functions take the backbone family
(``family.py``) whose hooks (``hf_class``, ``load_processor``, ``lora_target_modules``, ``lm_prefix``,
``audio_encoder``) they use. ``models.load_adapter`` / ``AudioLLM.save`` are the entry points.
"""

from __future__ import annotations

import copy
import json
import pickle
import re
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from ..config import ConfigError
from .feature_cache import ClipFeatureCache, FeatureCache

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
META_FILE = "echodistill_model.json"  # written by ``save``: backbone name, base path, lora flag


def load(cls: type, family: Any, path: str | Path, cfg_model: Any, *, lora: Any = None, train: bool = True,
         base_path: Optional[str | Path] = None, fold_adapter: bool = True):
    """An ``AudioLLM`` (``cls``) of ``family`` from a local HF directory: full weights, or a saved PEFT
    adapter (adapter_config.json).

    ``cfg_model``: ``ModelConfig`` (dtype, device_map, attn_implementation, trust_remote_code,
    teacher_mode, freeze_audio_encoder). ``lora``: ``LoraConfig`` (default ``cfg_model.lora``);
    applied only when ``train`` and the directory is not already an adapter.

    Training from a saved adapter (e.g. GRPO after a LoRA warm-up) with ``fold_adapter``: the
    adapter is merged into the weights and a fresh one trains on top, so the teacher (adapter
    disabled) is this run's initial model, not the base model before the warm-up. The merged
    stages are recorded in the saved metadata (``merged_adapters``) and re-applied on load.
    ``fold_adapter=False`` keeps training the same adapter (resuming that adapter's own run).
    """
    path = Path(path)
    if not path.is_dir():
        raise ConfigError(f"model directory {path} does not exist: build it (`echodistill model build`) "
                          "or set model.path")
    lora = lora if lora is not None else getattr(cfg_model, "lora", None)
    is_adapter = (path / "adapter_config.json").is_file()
    if is_adapter:
        # save() records the absolute base path; the adapter config names the base as the user gave it
        # (the model card's name: maybe relative or a Hub id), so the recorded path is tried first.
        named = json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")
        base = Path(next((b for b in (base_path, read_meta(path).get("base_path"), named)
                          if b and Path(b).is_dir()), cfg_model.path))
    else:
        base = path
    hf = load_hf(family, base, cfg_model)
    merged = list(read_meta(path).get("merged_adapters", [])) if is_adapter else []
    for stage in merged:  # earlier LoRA stages this adapter was trained on top of
        hf = merge_adapter(hf, path / stage)  # relative: shipped inside the folder (`echodistill export`)
    if is_adapter and train and fold_adapter:
        hf = merge_adapter(hf, path)
        merged.append(str(path.resolve()))
        is_adapter = False
    processor = family.load_processor(path if has_processor(path) else base, cfg_model)
    teacher_mode = getattr(cfg_model, "teacher_mode", "auto")
    use_lora = is_adapter or bool(lora is not None and getattr(lora, "enabled", False) and train)
    if teacher_mode == "auto":
        teacher_mode = "adapter_disabled" if use_lora else ("frozen_copy" if train else "self")
    if teacher_mode == "adapter_disabled" and not use_lora:
        raise ConfigError("model.teacher_mode=adapter_disabled needs model.lora.enabled=true "
                          "(or use teacher_mode=frozen_copy / auto)")
    teacher = None
    if teacher_mode == "frozen_copy":
        teacher = copy.deepcopy(hf)
        teacher.requires_grad_(False)
        teacher.eval()
    peft_model = None
    if is_adapter:
        from peft import PeftModel

        peft_model = PeftModel.from_pretrained(hf, str(path), is_trainable=train)
    elif use_lora:
        from peft import LoraConfig as PeftLoraConfig, get_peft_model

        target = lora_targets(family, hf, lora.target_modules)
        pcfg = PeftLoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, bias="none",
                              target_modules=target)
        peft_model = get_peft_model(hf, pcfg)
    if peft_model is not None:
        hf = peft_model.get_base_model()
        check_lora_scope(family, hf)
    elif not train:
        hf.requires_grad_(False)
    features = FeatureCache(ClipFeatureCache(max_mb=getattr(cfg_model, "feature_cache_mb", 256.0),
                                             disk_dir=getattr(cfg_model, "feature_cache_dir", "") or None,
                                             disk_mb=getattr(cfg_model, "feature_cache_disk_mb", 4096.0)),
                            inference=not train)
    obj = cls(family, hf, processor, peft_model=peft_model, teacher_model=teacher, teacher_mode=teacher_mode,
              base_path=str(base.resolve()) if base.is_dir() else str(base), features=features)
    obj.merged_adapters = merged
    obj.share_kv = bool(getattr(cfg_model, "share_prompt_kv", True))
    if train and peft_model is None and getattr(cfg_model, "freeze_audio_encoder", True):
        family.audio_encoder(hf).requires_grad_(False)
    if not train and peft_model is not None:
        for p in peft_model.parameters():
            p.requires_grad_(False)
    obj.model.eval()  # no dropout: sampling and scoring must see the same function
    return obj


def lora_targets(family: Any, hf: nn.Module, regex: str) -> list[str]:
    """Full names of the nn.Linear modules the regex matches (``re.fullmatch``, as PEFT does).

    Passed to PEFT as an explicit list: given the regex *string*, PEFT 0.21 rewrites it for MoE
    models (Qwen3-Omni) into bare suffixes {q_proj, k_proj, ...} that also hit the audio tower.
    """
    regex = family.lora_target_modules(regex)
    try:
        pat = re.compile(regex)
    except re.error as e:
        raise ConfigError(f"model.lora.target_modules={regex!r} is not a valid regex: {e}") from None
    names = [n for n, mod in hf.named_modules() if isinstance(mod, nn.Linear) and pat.fullmatch(n)]
    if not names:
        raise ConfigError(f"model.lora.target_modules={regex!r} matched no linear layer of the {family.name} "
                          f"model: module names look like {family.lm_prefix}.layers.0.self_attn.q_proj")
    return names


def check_lora_scope(family: Any, hf: nn.Module) -> None:
    names = [n for n, m in hf.named_modules() if hasattr(m, "lora_A")]
    if not names:
        raise ConfigError("model.lora.target_modules matched no module of the language model: check the regex "
                          f"against module names under {family.lm_prefix!r}")
    outside = [n for n in names if not n.startswith(family.lm_prefix + ".")]
    if outside:
        raise ConfigError(f"model.lora.target_modules adapts modules outside the language model "
                          f"({outside[:3]}...): limit the regex to {family.lm_prefix!r}")


def load_hf(family: Any, path: Path, cfg_model: Any) -> nn.Module:
    dtype = DTYPES[getattr(cfg_model, "dtype", "float32")]
    kwargs = dict(dtype=dtype, attn_implementation=getattr(cfg_model, "attn_implementation", "sdpa"),
                  trust_remote_code=bool(getattr(cfg_model, "trust_remote_code", False)))
    if getattr(cfg_model, "device_map", None):
        kwargs["device_map"] = cfg_model.device_map
    try:
        return family.hf_class().from_pretrained(str(path), **kwargs)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot load a {family.name} model from {path}: {e}") from None
    except pickle.UnpicklingError:  # torch.load(weights_only=True) refused a pickle that is more than tensors
        raise ConfigError(f"{path}: its pickled weights (.bin/.pt) hold more than tensors and were refused (loading "
                          "them could run code); use the model's safetensors weights") from None


def has_processor(path: Path) -> bool:
    return (path / "preprocessor_config.json").is_file() or (path / "processor_config.json").is_file()


def read_meta(path: str | Path) -> dict:
    meta = Path(path) / META_FILE
    return json.loads(meta.read_text()) if meta.is_file() else {}


def backbone_of(path: str | Path) -> Optional[str]:
    """The backbone recorded by ``save`` in ``path`` (None if absent)."""
    return read_meta(path).get("backbone")


def merge_adapter(hf: nn.Module, adapter_dir: str | Path) -> nn.Module:
    """Fold the PEFT adapter saved in ``adapter_dir`` into ``hf``'s weights; returns the plain model."""
    from peft import PeftModel

    if not (Path(adapter_dir) / "adapter_config.json").is_file():
        raise ConfigError(f"{adapter_dir}: the LoRA stage this checkpoint was trained on is missing "
                          "(no adapter_config.json); restore that folder or retrain from the base model")
    return PeftModel.from_pretrained(hf, str(adapter_dir)).merge_and_unload()


def save(adapter: Any, out_dir: str | Path) -> Path:
    """HF format: the PEFT adapter (``PeftModel.from_pretrained`` loads it) or full weights; + processor."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if adapter.peft is not None:
        adapter.peft.save_pretrained(str(out))
        cfg_path = out / "adapter_config.json"
        cfg = json.loads(cfg_path.read_text())
        if adapter.base_path:
            cfg["base_model_name_or_path"] = adapter.base_path
            cfg_path.write_text(json.dumps(cfg, indent=2))
    else:
        adapter.hf.save_pretrained(str(out))
    adapter.processor.save_pretrained(str(out))
    (out / META_FILE).write_text(json.dumps({"backbone": adapter.backbone, "base_path": adapter.base_path,
                                             "lora": adapter.peft is not None,
                                             "merged_adapters": getattr(adapter, "merged_adapters", [])},
                                            indent=2))
    return out


__all__ = ["DTYPES", "META_FILE", "load", "save", "load_hf", "lora_targets", "check_lora_scope", "has_processor",
           "read_meta", "backbone_of", "merge_adapter"]
