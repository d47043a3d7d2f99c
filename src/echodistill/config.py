"""Every hyperparameter in one place.

Dataclasses, loaded with OmegaConf structured configs: a YAML file sets what differs from the
defaults, dotted CLI overrides (``train.learning_rate=1e-5``) set the rest, OmegaConf rejects unknown
keys and ill-typed values, and ``validate`` checks ranges. The resolved config is saved beside every
run (``save_config``). Names follow TRL's GRPOConfig where the concept is the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import II, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from .errors import ConfigError


@dataclass
class RunConfig:
    output_dir: str = "runs/demo"  # where checkpoints, metrics, config and reports go
    seed: int = 0  # seeds python, numpy, torch and every noise draw
    device: str = "cpu"  # cpu | cuda | auto (accelerate decides under `accelerate launch`)
    num_threads: int = 2  # torch intra-op threads on CPU
    log_with: Optional[str] = "tensorboard"  # tensorboard | wandb | trackio, comma-separated for several; null = none
    project_name: str = "echodistill"  # tracker project (TensorBoard: <output_dir>/<project_name>/)
    run_name: str = ""  # tracker run name; "" = the output folder's name
    # Shard the student over the processes with FSDP2 (fully_shard, train/distributed.py). An accelerate
    # FSDP config (configs/accelerate/fsdp2_gpu.yaml) turns it on by itself; on CPU (gloo) set it here.
    fsdp: bool = False
    # An update whose loss or gradient norm is not finite is skipped (counted in metrics.jsonl as
    # nonfinite_skipped); this many in a row stop the run before any checkpoint could hold NaN.
    max_nonfinite_updates: int = 3


@dataclass
class DataConfig:
    bench_dir: str = "data/bench"  # the offline benchmark (echodistill data build)
    train_manifest: str = "${data.bench_dir}/train.jsonl"  # items used for training
    val_manifest: str = "${data.bench_dir}/val.jsonl"  # items for periodic/tuning evaluation
    test_manifest: str = "${data.bench_dir}/test.jsonl"  # final evaluation only
    path_map: dict = field(default_factory=dict)  # prefix -> replacement for relative/foreign paths
    # Hugging Face datasets (save_to_disk folder, .parquet) as manifests: our field -> the dataset's
    # column, e.g. {question: prompt, target: label} (answer: the old name of target); unmapped fields are found by usual names (data/hf.py)
    columns: dict = field(default_factory=dict)
    max_duration_s: float = 2.0  # clips are cropped/padded to at most this (the model's window)
    min_duration_s: float = 0.05  # shorter clips are rejected as invalid
    long_audio: str = "truncate"  # truncate | skip: clips longer than the window are cut to it (counted) or skipped
    max_prompt_tokens: int = 1024  # longer prompts (question + choices) are skipped; capped by the model's positions
    choice_seed: int = 1234  # seeds the per-item shuffle of choices at prompt time
    # answer: the completion is one choice's text | reasoning: <think>what is heard</think><answer>choice</answer>
    response_format: str = "answer"
    # Semi-supervised / label-free regime: the warm-up sees the labels of this fraction of the
    # training items only (per task, seeded by label_seed); RL picks its items with train.rl_items.
    labeled_fraction: float = 1.0
    label_seed: int = 0


@dataclass
class NoiseConfig:
    train_types: list = field(default_factory=lambda: ["white", "pink", "brown", "babble", "music"])
    heldout_types: list = field(default_factory=lambda: ["hum", "midi"])  # generalisation test only
    train_snr_min: float = -5.0  # online SNR draw during training, uniform in [min, max] dB
    train_snr_max: float = 5.0
    noise_dir: str = "${data.bench_dir}/noise"  # noise bank folder written by `data build`
    extra_noise_paths: list = field(default_factory=list)  # user noise files or folders


@dataclass
class LoraConfig:
    enabled: bool = False  # LoRA adapters on the language model; teacher = adapter disabled
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    # Regex limited to the language model so the audio encoder is never adapted by accident.
    target_modules: str = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


@dataclass
class ModelConfig:
    backbone: str = "embedded"  # embedded | qwen2_audio | qwen2_5_omni | qwen3_omni
    path: str = "models/embedded"  # local HF directory (no hub access); `echodistill model build` makes it
    dtype: str = "float32"  # float32 | bfloat16 | float16
    attn_implementation: str = "sdpa"  # eager | sdpa | flash_attention_2
    device_map: Optional[str] = None  # e.g. "auto" for big models on one node
    trust_remote_code: bool = False
    teacher_mode: str = "auto"  # auto | adapter_disabled | frozen_copy  (auto: adapter if LoRA)
    freeze_audio_encoder: bool = True  # the encoder is a pretrained listener: keep it
    # The frozen teacher's clean-clip features, keyed by (weights, clip content): memory bound, and an
    # optional folder that keeps them for later runs from the same model (no first-epoch miss). In eval and
    # predict the folder also keeps each batch's encoder output: the next checkpoint from the same base model
    # evaluated on the same grid encodes nothing (the same bits: models/feature_cache.py).
    feature_cache_mb: float = 256.0
    feature_cache_dir: str = ""  # "" = memory only
    feature_cache_disk_mb: float = 4096.0
    # Generation: each prompt's KV cache kept once and attended by its G samples (false: copied G times;
    # the same tokens, log-probs within ~1e-6; true holds G x less prompt cache, faster at B = G = 8, T = 24)
    share_prompt_kv: bool = True
    lora: LoraConfig = field(default_factory=LoraConfig)


@dataclass
class WarmupConfig:
    noisy: bool = False  # True = the `sft-noisy` baseline (same training on noisy mixes)
    init_from: str = ""  # checkpoint to start from (e.g. a clean warm-up's final/ for sft-noisy); "" = model.path
    # training items it reads (data.labeled_fraction's split): labeled = the labels the teacher-to-be may see;
    # unlabeled = the hidden true labels of the others (the supervised reference of the label-free regime); all
    sft_items: str = "labeled"
    prompts_per_device: int = 32  # B items per step and process, one target completion each
    max_steps: int = 300  # ~80-90 % clean val on the embedded model: sharp enough to answer, not saturated
    max_minutes: float = 10.0  # wall-clock cap (evaluation included); stops cleanly and saves
    learning_rate: float = 1e-3
    lr_scheduler_type: str = "cosine"  # a transformers scheduler name (LR_SCHEDULES), as train.lr_scheduler_type
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0  # 0 = no clipping
    save_steps: int = 100  # mid-run checkpoint (checkpoint-<step>/) every this many steps, for resume
    eval_steps: int = 50  # greedy val accuracy every this many steps (0 = no evaluation)
    eval_items: int = 100  # seeded subset of the val split (0 = all)
    eval_noisy: bool = True  # also greedy val accuracy on noisy audio (eval.noise_seed, train types/SNRs)
    metric_for_best_model: str = ""  # e.g. val_noisy_acc: keep the best evaluation's weights in best/ ("" = off)
    greater_is_better: bool = True  # for metric_for_best_model (False for e.g. val_noisy_invalid)
    logging_steps: int = 10  # train rows in metrics.jsonl every this many steps
    cache_audio: bool = True  # cache the frozen encoder's output per clip (needs the adapter hooks)
    noise_versions: int = 4  # sft-noisy: K pre-drawn noisy versions per item (epoch % K); 0 = fresh each epoch


@dataclass
class TeacherConfig:
    """The frozen clean-audio teacher, shared by the signals (``signals.*``, train/signals/) that read it."""

    min_confidence: float = 0.0  # teacher answers below this probability give no target (distill, pseudo-label)
    # How the signals' summed teacher score (the bonus: consistency, grounding) enters the advantages:
    # joint = added to the reward before one group z-score (paper); decoupled = normalised apart (scale
    # below) and added with weight w(snr).
    advantage: str = "joint"  # joint | decoupled
    scale: str = "batch"  # decoupled teacher term: group | batch | none (batch: tiny gaps stay tiny)
    gate: str = "none"  # none | equal_groups (only where accuracy is all-equal) | confidence (x p_T(answer))
    w0: float = 0.5  # bonus weight at the worst SNR (decoupled: the teacher term's weight vs accuracy's 1)
    snr_lo: float = II("noise.train_snr_min")  # shaping band = the band drawn in training
    snr_hi: float = II("noise.train_snr_max")
    w_min: float = 0.2
    shaping: bool = True  # False = constant weight w0
    shaping_direction: str = "noisier"  # noisier: most weight at low SNR (paper) | cleaner: the mirror


@dataclass
class TrainConfig:
    variant: str = "echodistill-rescue"  # a named list of teacher signals (VARIANTS; `echodistill train --help`)
    init_from: str = ""  # checkpoint the run starts from (a warm-up dir); "" = model.path
    num_generations: int = 8  # G samples per item
    # B items (prompts) per micro-batch and process, each sampled G times: N = B*G completions.
    # Not TRL's per_device_train_batch_size, which counts completions (TRL's value = B*G).
    prompts_per_device: int = 8
    gradient_accumulation_steps: int = 1
    gradient_checkpointing: bool = False  # recompute decoder layers in backward (less memory, ~+1/3 update time)
    group_by_length: bool = False  # micro-batches of prompts of similar length (less padding; other batches)
    max_steps: int = 200
    max_minutes: float = 0.0  # 0 = no wall-clock cap
    learning_rate: float = 1e-5
    lr_scheduler_type: str = "constant_with_warmup"  # a transformers scheduler name (LR_SCHEDULES)
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0  # 0 = no clipping
    beta: float = 0.0  # KL(pi_theta || pi_ref) weight, k3 estimator
    epsilon: float = 0.2  # PPO clip low
    epsilon_high: Optional[float] = None  # PPO clip high (DAPO); null = epsilon
    loss_type: str = "dr_grpo"  # grpo | dr_grpo | dapo | bnpo
    rl_items: str = "all"  # training items RL uses: all | labeled | unlabeled (data.labeled_fraction)
    log_component_grad_norms: bool = False  # extra backward per loss term on the first iteration (costly)
    scale_rewards: str = "group"  # group | batch | none
    num_iterations: int = 1  # policy updates per rollout batch
    max_completion_length: int = 8
    temperature: float = 1.0
    top_p: float = 1.0
    # + plug-ins by name; or TRL's list, one weight per reward in order: accuracy, format, then reward_funcs
    reward_weights: dict = field(default_factory=lambda: {"accuracy": 1.0, "format": 0.1})
    reward_funcs: list = field(default_factory=list)  # plug-in rewards "module:function" (TRL signature; train/plugins.py)
    wrong_answer_reward: float = 0.0  # 0 or -1
    answer_format: str = "choice"  # choice: the completion is exactly one offered choice
    save_steps: int = 50  # checkpoint-<step>/ every this many steps (and at the end)
    eval_steps: int = 50  # greedy val accuracy every this many steps (0 = no evaluation)
    eval_items: int = 64  # seeded subset of the val split (0 = all)
    # checkpoint selection: keep the best evaluation's weights in best/ ("" = off). Without labels use a
    # label-free one: val_teacher_agreement (noisy student = clean teacher), val_consistency, val_noisy_invalid
    metric_for_best_model: str = ""
    greater_is_better: bool = True  # for metric_for_best_model (False for val_noisy_invalid)
    logging_steps: int = 1  # rows in metrics.jsonl every this many steps
    # TRL's log_completions: every logging_steps, the first micro-batch's completions (question, noise,
    # completion, answer, target, reward, advantage; the teacher's answer) to completions.jsonl and the trackers
    log_completions: bool = False
    # Where rollouts come from (train/rollout_backends.py): builtin = our sampler in the trainer; vllm = a
    # vLLM OpenAI-compatible server (docs/scale-out.md), weights synced after each update, log-probs recomputed
    rollout_backend: str = "builtin"  # builtin | vllm
    vllm_server_url: str = ""  # e.g. http://127.0.0.1:8000 (rollout_backend=vllm)
    vllm_model: str = ""  # the served model name; "" = the first of GET /v1/models
    vllm_sync_dir: str = ""  # folder trainer and server both read (weight sync); "" = <output_dir>/vllm_sync
    vllm_timeout_s: float = 600.0  # per HTTP request
    vllm_api_key: str = ""  # bearer token sent to the server ("" = $VLLM_API_KEY); ${oc.env:VAR} is never written out


@dataclass
class EvalConfig:
    snr_levels: list = field(default_factory=lambda: [-10, -5, 0, 5, 10, 20, 30])
    noise_types: list = field(default_factory=lambda: ["white", "pink", "babble", "music"])
    strong_snr_max: float = 0.0  # strong noise = SNR <= this
    batch_size: int = 32
    max_new_tokens: int = 8
    max_items: int = 0  # 0 = all
    noise_seed: int = 777  # fixed online mixing for evaluation
    bootstrap: int = 1000
    no_audio: bool = True  # the silent-audio control
    enhance: bool = False  # DeepFilterNet3 front-end before the model


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    warmup: WarmupConfig = field(default_factory=WarmupConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    # one section per teacher signal (train/signals/, their own Config dataclasses): set by load_config
    signals: Any = None
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


@dataclass(frozen=True)
class Variant:
    """A named list of teacher signals with their weights (``signals.<name>.weight``; a dict sets the
    signal's other keys too), plus the other keys the method sets. ``research``: kept runnable for the
    stored experiments (docs/results.md) but not what the results support."""

    summary: str
    signals: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    research: bool = False

    def overrides(self) -> dict[str, Any]:
        """The variant as dotted config keys (applied before the user's own)."""
        out: dict[str, Any] = {}
        for name, spec in self.signals.items():
            for k, v in (spec if isinstance(spec, dict) else {"weight": spec}).items():
                out[f"signals.{name}.{k}"] = v
        return {**out, **self.settings}


_NO_TASK_REWARD = {"train.reward_weights": {"accuracy": 0.0, "format": 0.0}}

# The variants, in one table: everyday ones first (what docs/results.md supports), then research ones.
VARIANTS: dict[str, Variant] = {
    "grpo": Variant("GRPO on the noisy clips, rewarded by the labels; no teacher"),
    "echodistill-rescue": Variant(
        "GRPO + distillation toward the clean teacher's answer in the groups where every sample is wrong "
        "(GRPO has no signal there)", {"distill": {"weight": 1.0, "scope": "all_wrong"}}),
    "clean-distill": Variant(
        "label-free: distillation toward the clean teacher's answer on every item; no label read, nothing "
        "sampled", {"distill": 1.0}, _NO_TASK_REWARD),
    "ttrl": Variant("label-free baseline: GRPO against the majority vote of the noisy samples; no teacher",
                    {"majority_vote": 1.0}),
    # --- research variants: behind GRPO-only or rescue on val or test (docs/results.md)
    "echodistill": Variant("the paper's bonus: consistency with the clean teacher, SNR-shaped, one joint "
                           "z-score with accuracy", {"consistency": 1.0}, research=True),
    "echodistill-token": Variant("the bonus + the teacher-vs-student log-ratio as per-token credit",
                                 {"consistency": 1.0, "token_credit": 0.5}, research=True),
    "echodistill-kd": Variant("the bonus + distillation toward the clean teacher's answer on every item",
                              {"consistency": 1.0, "distill": 0.5}, research=True),
    "echodistill-decoupled": Variant("the bonus normalised apart from accuracy; the weight sets its share",
                                     {"consistency": 1.0}, {"teacher.advantage": "decoupled"}, research=True),
    "echodistill-gated": Variant("the decoupled bonus only in all-equal groups + the rescue distillation",
                                 {"consistency": 1.0, "distill": {"weight": 1.0, "scope": "all_wrong"}},
                                 {"teacher.advantage": "decoupled", "teacher.gate": "equal_groups"}, research=True),
    "pseudo-label-sft": Variant(
        "label-free baseline: supervised training on the noisy clips toward the clean teacher's greedy answers "
        "(hard pseudo-labels, the noisy student); nothing sampled",
        {"distill": {"weight": 1.0, "target": "hard"}}, _NO_TASK_REWARD, research=True),
    "sft-distill": Variant(
        "supervised + distillation in one run: the label's cross-entropy on the noisy clip + KL toward the clean "
        "teacher's answer (nothing sampled)", {"supervised": 1.0, "distill": 1.0}, _NO_TASK_REWARD, research=True),
    "echodistill-unlabeled": Variant(
        "label-free EchoDistill: GRPO with the clean teacher's consistency as the only reward",
        {"consistency": 1.0}, _NO_TASK_REWARD, research=True),
    "echodistill-labelfree": Variant(
        "label-free: GRPO against the clean teacher's confident answers + the decoupled bonus",
        {"consistency": 1.0, "pseudo_label": 1.0}, {"teacher.advantage": "decoupled", "teacher.min_confidence": 0.5},
        research=True),
    # --- the reasoning format (data.response_format=reasoning): completions state what they hear, then answer
    "echodistill-evidence": Variant(
        "the bonus (consistency over every completion token) + grounding over the evidence tokens: the clean "
        "teacher's support beyond its silent-audio prior for what the student says it hears",
        {"consistency": 1.0, "evidence_grounding": 1.0}, research=True),
}
# Old names of variants, still read (stored experiment specs and run folders use them).
VARIANT_ALIASES = {"distill-only": "clean-distill"}


def variant_named(name: str) -> Variant:
    return VARIANTS[VARIANT_ALIASES.get(name, name)]


# Keys that were renamed (one vocabulary across sections, TRL's names where TRL has the idea):
# old key -> (new key or None when no config key replaces it, what to write instead).
# Setting an old key is a ConfigError naming the new one; a run's own saved config.yaml is migrated.
RENAMED: dict[str, tuple[Optional[str], str]] = {
    "train.per_device_batch_size": ("train.prompts_per_device", "train.prompts_per_device (items per micro-batch "
                                    "and process, each sampled train.num_generations times; TRL's "
                                    "per_device_train_batch_size counts completions)"),
    "warmup.batch_size": ("warmup.prompts_per_device", "warmup.prompts_per_device"),
    "warmup.lr_scheduler": ("warmup.lr_scheduler_type", "warmup.lr_scheduler_type"),
    "warmup.eval_every": ("warmup.eval_steps", "warmup.eval_steps"),
    "warmup.log_every": ("warmup.logging_steps", "warmup.logging_steps"),
    "warmup.resume": (None, "the --resume flag (`echodistill warmup --resume`, run_warmup(cfg, resume=True)): "
                            "continues from the newest checkpoint-<step>/ in run.output_dir, as `echodistill train` does"),
}
# Teacher flags that became signals (train/signals/): old key -> (new key, value converter, hint).
_ON = lambda v: 1.0 if v else 0.0  # noqa: E731
SIGNAL_KEYS: dict[str, tuple[Optional[str], Any, str]] = {
    "teacher.enabled": ("signals.consistency.weight", _ON, "signals.consistency.weight=1.0 (0 = off)"),
    "teacher.consistency": ("signals.consistency.mode", None, "signals.consistency.mode"),
    "teacher.logprob_clip": ("signals.consistency.logprob_clip", None, "signals.consistency.logprob_clip"),
    "teacher.include_eos": ("signals.consistency.include_eos", None, "signals.consistency.include_eos"),
    "teacher.lambda_g": ("signals.grounding.weight", None, "signals.grounding.weight"),
    "teacher.grounding_clip": ("signals.grounding.clip", None, "signals.grounding.clip"),
    "teacher.token_credit": (None, None, "signals.token_credit.weight=ETA (0 = off)"),
    "teacher.eta": (None, None, "signals.token_credit.weight"),
    "teacher.token_clip": ("signals.token_credit.clip", None, "signals.token_credit.clip"),
    "teacher.lambda_kd": ("signals.distill.weight", None, "signals.distill.weight"),
    "teacher.kd_scope": ("signals.distill.scope", None, "signals.distill.scope"),
    "train.lambda_clean": ("signals.clean_retention.weight", None, "signals.clean_retention.weight"),
    "train.reward_source": (None, None, "signals.pseudo_label.weight=1 (the teacher's answers) or "
                                        "signals.majority_vote.weight=1 (TTRL); the labels when neither"),
}


def _migrate_signal_keys(layer: Any, where: str, migrate: bool) -> None:
    """Old teacher flags -> ``signals.*``: a ConfigError naming the new key, or (a run's saved config.yaml,
    ``migrate``) the same method expressed in signals."""
    found = {k: _select(layer, k) for k in SIGNAL_KEYS if _select(layer, k) is not None}
    if not found:
        return
    if not migrate:
        old = next(iter(found))
        raise ConfigError(f"{old}{where} became a teacher signal: use {SIGNAL_KEYS[old][2]} "
                          "(`echodistill config show` lists the signals.* keys)")
    for key in found:
        section, name = key.split(".")
        layer[section].pop(name)
    sets: dict[str, Any] = {}
    for key, value in found.items():
        new_key, convert, _ = SIGNAL_KEYS[key]
        if new_key is not None:
            sets[new_key] = convert(value) if convert else value
    if not found.get("teacher.enabled", True):  # grounding was part of the bonus
        sets["signals.grounding.weight"] = 0.0
    if found.get("teacher.token_credit"):
        sets["signals.token_credit.weight"] = found.get("teacher.eta", 0.5)
    elif "teacher.token_credit" in found:
        sets["signals.token_credit.weight"] = 0.0
    if "train.reward_source" in found:
        source = found["train.reward_source"]
        sets["signals.pseudo_label.weight"] = 1.0 if source == "teacher" else 0.0
        sets["signals.majority_vote.weight"] = 1.0 if source == "majority" else 0.0
    for key, value in sets.items():
        OmegaConf.update(layer, key, value, force_add=True)


# TRL's GRPOConfig / TrainingArguments names whose idea lives under another key here: key -> (our key,
# how to write it). Set in a YAML file or an override (at the top level or in train:/warmup:) it is a
# ConfigError naming ours, never an "unknown key". ``{value}`` and ``{G}`` are filled in (``_trl_hint``).
TRL_HINTS: dict[str, tuple[str, str]] = {
    "per_device_train_batch_size": ("train.prompts_per_device", "train.prompts_per_device={prompts} (TRL counts "
                                    "completions: per_device_train_batch_size = prompts_per_device x num_generations "
                                    "= {value} here with train.num_generations={G})"),
    "report_to": ("run.log_with", "run.log_with={value} (tensorboard | wandb | trackio, comma-separated; null = none)"),
    "use_vllm": ("train.rollout_backend", "train.rollout_backend=vllm (or builtin) with train.vllm_server_url"),
    "vllm_mode": ("train.rollout_backend", "train.rollout_backend=vllm: a vLLM server (TRL's server mode; no "
                                           "colocate mode) at train.vllm_server_url"),
    "vllm_server_base_url": ("train.vllm_server_url", "train.vllm_server_url={value} with train.rollout_backend=vllm"),
    "vllm_server_host": ("train.vllm_server_url", "train.vllm_server_url=http://<host>:<port> with "
                                                  "train.rollout_backend=vllm"),
    "vllm_server_port": ("train.vllm_server_url", "train.vllm_server_url=http://<host>:<port> with "
                                                  "train.rollout_backend=vllm"),
    "bf16": ("model.dtype", "model.dtype=bfloat16 (float32 | bfloat16 | float16)"),
    "fp16": ("model.dtype", "model.dtype=float16 (float32 | bfloat16 | float16)"),
    "per_device_eval_batch_size": ("eval.batch_size", "eval.batch_size={value}"),
    "num_train_epochs": ("train.max_steps", "train.max_steps (training is counted in steps of "
                                            "train.prompts_per_device items per process)"),
    "max_prompt_length": ("data.max_prompt_tokens", "data.max_prompt_tokens={value}"),
    "model_init_kwargs": ("model.dtype", "the model: keys (model.dtype, model.attn_implementation, model.device_map)"),
    "output_dir": ("run.output_dir", "run.output_dir={value}"),
    "seed": ("run.seed", "run.seed={value}"),
    "run_name": ("run.run_name", "run.run_name={value}"),
    "gradient_checkpointing_kwargs": ("train.gradient_checkpointing", "train.gradient_checkpointing=true"),
    "num_completions_to_print": ("train.log_completions", "train.log_completions=true (the first micro-batch's "
                                                          "completions every train.logging_steps)"),
}


def _trl_hint(key: str, value: Any, layers: list) -> str:
    num_generations = next((g for g in (_select(x, "train.num_generations") for x in reversed(layers)) if g is not None),
                           TrainConfig.num_generations)
    prompts = "?"
    if key == "per_device_train_batch_size" and isinstance(value, int) and not isinstance(value, bool):
        prompts = str(value // num_generations) if value % num_generations == 0 else f"{value}/{num_generations}?"
    value = str(value).lower() if isinstance(value, bool) else value
    return TRL_HINTS[key][1].format(value=value, G=num_generations, prompts=prompts)


def _check_trl_names(layer: Any, where: str, layers: list) -> None:
    """ConfigError for a TRL key name (``TRL_HINTS``), at the top level or in train:/warmup:, and for a top-level
    key that is a train: key (TRL's configs are flat)."""
    if layer is None:
        return
    top = list(layer.keys())
    sections = set(Config.__dataclass_fields__)
    for key in top:
        if key in sections:
            continue
        if key in TRL_HINTS:
            raise ConfigError(f"{key}{where} is TRL's name: use {_trl_hint(key, layer[key], layers)}")
        if key in TrainConfig.__dataclass_fields__:
            raise ConfigError(f"{key}{where}: our keys are grouped in sections (run, data, noise, model, warmup, "
                              f"teacher, train, eval); use train.{key}")
    for section in ("train", "warmup", "run", "model"):
        node = layer.get(section) if hasattr(layer, "get") else None
        if node is None or not hasattr(node, "keys"):
            continue
        for key in node.keys():
            if key in TRL_HINTS and TRL_HINTS[key][0] != f"{section}.{key}":
                raise ConfigError(f"{section}.{key}{where} is TRL's name: use {_trl_hint(key, node[key], layers)}")


def _weights_from_list(layers: list, where: list[str]) -> Optional[list]:
    """TRL's ``reward_weights`` list, in reward order, taken out of the layers (the last one wins); None if none.

    The order is ``accuracy, format`` then the plug-ins of ``train.reward_funcs`` in their order."""
    found = None
    for layer, w in zip(layers, where):
        node = _select(layer, "train.reward_weights")
        if node is not None and OmegaConf.is_list(node):
            values = list(node)
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                raise ConfigError(f"train.reward_weights{w}: a list must hold numbers, got {values}")
            found = values
            layer.train.pop("reward_weights")
    return found


def _check_renamed(layer: Any, where: str, migrate: bool = False) -> None:
    """Raise ConfigError on a renamed key; with ``migrate`` (a run's saved config.yaml written before
    the rename) move its value to the new key instead, or drop it when no key replaces it."""
    for old, (new_key, hint) in RENAMED.items():
        if _select(layer, old) is None:
            continue
        if not migrate:
            raise ConfigError(f"{old}{where} was renamed: use {hint}")
        section, name = old.split(".")
        value = layer[section].pop(name)
        if new_key is not None and _select(layer, new_key) is None:
            layer[section][new_key.split(".")[1]] = value


# Allowed values of the keys whose implementation lives elsewhere, defined once: the implementing
# modules (models/, data/validate.py, train/grpo.py, train/rewards.py, train/sft.py, cli.py) import them.
BACKBONES = ("embedded", "qwen2_audio", "qwen2_5_omni", "qwen3_omni")
DTYPES = ("float32", "bfloat16", "float16")
TEACHER_MODES = ("auto", "adapter_disabled", "frozen_copy")
LONG_AUDIO = ("truncate", "skip")
CONSISTENCY_MODES = ("mean_prob", "argmax_agree", "mean_logprob")  # signals.consistency.mode
# transformers' get_scheduler names that need nothing but warm-up and total steps; both sections (warm-up
# steps ceil(warmup_ratio * steps)). "constant" has no ramp (the warm-up's own schedule, before
# transformers' served every recipe, ramped it: that is "constant_with_warmup").
LR_SCHEDULES = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                "inverse_sqrt")
LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
SCALE_REWARDS = ("group", "batch", "none")
RESPONSE_FORMATS = ("answer", "reasoning")
# Completion lengths each response format needs, applied before the YAML file and the overrides (which win):
# evidence + tags take 10-19 tokens of the embedded tokenizer (+ end of turn), a bare answer 1-3.
FORMAT_PRESETS: dict[str, dict[str, Any]] = {
    "answer": {},
    "reasoning": {"train.max_completion_length": 24, "eval.max_new_tokens": 24},
}

_CHOICES = {
    "run.device": {"cpu", "cuda", "auto"},
    "model.backbone": set(BACKBONES),
    "model.dtype": set(DTYPES),
    "data.long_audio": set(LONG_AUDIO),
    "data.response_format": set(RESPONSE_FORMATS),
    "model.teacher_mode": set(TEACHER_MODES),
    "warmup.lr_scheduler_type": set(LR_SCHEDULES),
    "train.lr_scheduler_type": set(LR_SCHEDULES),
    "train.variant": set(VARIANTS) | set(VARIANT_ALIASES),
    "train.loss_type": set(LOSS_TYPES),
    "train.scale_rewards": set(SCALE_REWARDS),
    "train.answer_format": {"choice"},
    "train.rl_items": {"all", "labeled", "unlabeled"},
    "warmup.sft_items": {"all", "labeled", "unlabeled"},
    "train.rollout_backend": {"builtin", "vllm"},
    "teacher.shaping_direction": {"noisier", "cleaner"},
    "teacher.advantage": {"joint", "decoupled"},
    "teacher.scale": set(SCALE_REWARDS),
    "teacher.gate": {"none", "equal_groups", "confidence"},
}


def _select(cfg: Any, dotted: str) -> Any:
    return OmegaConf.select(cfg, dotted, throw_on_missing=False)


def validate(cfg: Any, *, plugin_files: bool = True) -> None:
    """Range and choice checks OmegaConf's typing cannot express. Raises ConfigError. ``plugin_files``:
    also find each reward plug-in's file and function (off for a run's saved config: a run folder from
    another machine is read for prediction, where its plug-ins play no part)."""
    from .train.signals import REGISTRY, build_signals
    signal_choices = {f"signals.{n}.{k}": set(v) for n, c in REGISTRY.items() for k, v in c.choices.items()}
    for key, allowed in {**_CHOICES, **signal_choices}.items():
        value = _select(cfg, key)
        if value not in allowed:
            raise ConfigError(f"{key}={value!r} is not one of {sorted(allowed)}")
    positive = ["train.num_generations", "train.prompts_per_device", "train.max_completion_length",
                "train.num_iterations", "train.gradient_accumulation_steps", "warmup.prompts_per_device",
                "eval.batch_size", "data.max_duration_s", "data.max_prompt_tokens", "run.max_nonfinite_updates"]
    for key in positive:
        if _select(cfg, key) <= 0:
            raise ConfigError(f"{key} must be > 0, got {_select(cfg, key)}")
    if cfg.train.num_generations < 2:
        raise ConfigError("train.num_generations must be >= 2: group-relative advantages need a group")
    if not 0 < cfg.train.top_p <= 1:
        raise ConfigError(f"train.top_p must be in (0, 1], got {cfg.train.top_p}")
    if cfg.train.temperature <= 0:
        raise ConfigError(f"train.temperature must be > 0, got {cfg.train.temperature}")
    if cfg.noise.train_snr_min > cfg.noise.train_snr_max:
        raise ConfigError("noise.train_snr_min must be <= noise.train_snr_max")
    if cfg.teacher.snr_hi <= cfg.teacher.snr_lo:
        raise ConfigError("teacher.snr_hi must be > teacher.snr_lo")
    if not 0 <= cfg.teacher.w_min <= 1:
        raise ConfigError("teacher.w_min must be in [0, 1]")
    if cfg.teacher.gate != "none" and cfg.teacher.advantage != "decoupled":
        raise ConfigError(f"teacher.gate={cfg.teacher.gate} needs teacher.advantage=decoupled (a joint z-score "
                          "cannot gate the teacher term)")
    if not 0 <= cfg.data.labeled_fraction <= 1:
        raise ConfigError(f"data.labeled_fraction must be in [0, 1], got {cfg.data.labeled_fraction}")
    if cfg.train.rl_items == "unlabeled" and cfg.data.labeled_fraction >= 1:
        raise ConfigError("train.rl_items=unlabeled needs data.labeled_fraction < 1 (every item is labeled)")
    if cfg.warmup.sft_items == "unlabeled" and cfg.data.labeled_fraction >= 1:
        raise ConfigError("warmup.sft_items=unlabeled needs data.labeled_fraction < 1 (every item is labeled)")
    signals = build_signals(cfg)  # also refuses two signals that both replace the labels
    if not signals.samples and not signals.signals:
        raise ConfigError(f"train.variant={cfg.train.variant}: no reward weight, no KL and no teacher signal: "
                          "nothing would train (set train.reward_weights or a signals.<name>.weight)")
    from .train.plugins import check_reward_config  # reads each plug-in's source (imports none): a typo fails early
    check_reward_config(list(cfg.train.reward_funcs), dict(cfg.train.reward_weights), find=plugin_files)


def _parse_overrides(overrides: list[str]) -> tuple[Any, Optional[str]]:
    """Split ``key=value`` strings into an OmegaConf dotlist; pull out ``train.variant``."""
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"override {item!r} must look like key.sub=value (e.g. train.learning_rate=1e-5)")
    try:
        dot = OmegaConf.from_dotlist(list(overrides))
    except OmegaConfBaseException as e:
        raise ConfigError(f"cannot parse overrides {overrides}: {e}") from None
    return dot, _select(dot, "train.variant")


def load_config(path: Optional[str | Path] = None, overrides: Optional[list[str]] = None, *,
                saved: bool = False, trust_remote_code: bool = False) -> Any:
    """Defaults <- variant preset <- response-format preset <- YAML file <- CLI overrides; validated.

    The variant and format presets (``VARIANTS``, ``FORMAT_PRESETS``) are applied first so that
    explicit YAML or CLI values always win. A renamed key (``RENAMED``) is a ConfigError naming the
    new one, except with ``saved=True`` (``path`` is a run's own saved config.yaml, possibly written
    before the rename): then it is read as the new key.
    Returns an OmegaConf DictConfig typed by ``Config`` (attribute access, type-checked assignment).

    Reading a config runs no code (plug-ins are checked by reading their source). A saved config is
    data from a run folder, possibly downloaded: one asking for the model's own code
    (``model.trust_remote_code: true``) is refused unless ``trust_remote_code=True`` (the user's
    ``--trust-remote-code``), which also turns it on.
    """
    overrides = list(overrides or [])
    base = _schema()
    layers = []
    if path is not None:
        from .config_files import resolve_config_path
        path = resolve_config_path(path)  # a file, or a config shipped with the package by name (`-c demo`)
        try:
            layers.append(OmegaConf.load(path))
        except Exception as e:  # yaml.YAMLError and OmegaConf errors alike
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
    cli, cli_variant = _parse_overrides(overrides)
    if layers:
        _check_renamed(layers[0], f" (in {path})", migrate=saved)
        _check_trl_names(layers[0], f" (in {path})", layers + [cli])
        _migrate_signal_keys(layers[0], f" (in {path})", migrate=saved)
    _check_renamed(cli, " (command-line override)")
    _check_trl_names(cli, " (command-line override)", layers + [cli])
    _migrate_signal_keys(cli, " (command-line override)", migrate=False)
    weight_list = _weights_from_list(layers + [cli], [f" (in {path})"] * len(layers) + [" (command-line override)"])
    variant = cli_variant or (_select(layers[0], "train.variant") if layers else None) or base.train.variant
    if variant not in VARIANTS and variant not in VARIANT_ALIASES:
        raise ConfigError(f"train.variant={variant!r} is not one of {sorted(VARIANTS)}")
    preset = OmegaConf.from_dotlist([f"{k}={_dotlist_value(v)}"
                                     for k, v in variant_named(variant).overrides().items()])
    fmt = _select(cli, "data.response_format") or (_select(layers[0], "data.response_format") if layers else None) \
        or base.data.response_format
    if fmt not in FORMAT_PRESETS:
        raise ConfigError(f"data.response_format={fmt!r} is not one of {sorted(FORMAT_PRESETS)}")
    preset = OmegaConf.merge(preset, OmegaConf.from_dotlist(
        [f"{k}={_dotlist_value(v)}" for k, v in FORMAT_PRESETS[fmt].items()]))
    try:
        cfg = OmegaConf.merge(base, preset, *layers)
    except OmegaConfBaseException as e:
        raise ConfigError(f"invalid config{f' in {path}' if path else ''}: {_short(e)}") from None
    try:  # the command line on its own: its mistakes are reported as the command line's, not the file's
        cfg = OmegaConf.merge(cfg, cli)
    except OmegaConfBaseException as e:
        raise ConfigError(f"invalid override (command line or make_config keys): {_short(e)}") from None
    try:
        env = _env_interpolations(OmegaConf.to_container(cfg, resolve=False))
        OmegaConf.resolve(cfg)
        _remember_secrets(cfg, env)
    except OmegaConfBaseException as e:
        where = f" in {path}" if path else ""
        raise ConfigError(f"invalid config{where}: {_short(e)}") from None
    if weight_list is not None:
        _set_weight_list(cfg, weight_list)
    validate(cfg, plugin_files=not saved)
    if trust_remote_code:
        cfg.model.trust_remote_code = True
    elif saved and cfg.model.trust_remote_code:
        raise ConfigError(f"{path} asks to run Python code shipped with the model (model.trust_remote_code: true); "
                          "a run folder is data, so nothing was loaded: pass --trust-remote-code (Python: "
                          "trust_remote_code=True) only if you trust where this folder came from")
    return cfg


def code_requests(cfg: Any) -> list[str]:
    """What in ``cfg`` would run code beyond this library: lines naming the key (empty: nothing)."""
    out = []
    if cfg.model.trust_remote_code:
        out.append("model.trust_remote_code: true (the model folder's own .py files run when it loads); from a "
                   "run folder, `predict` / `export` / `load_model` refuse it unless given --trust-remote-code "
                   "(Python: trust_remote_code=True)")
    for spec in cfg.train.reward_funcs or []:
        out.append(f"train.reward_funcs: {spec} (imported only when `echodistill train` runs this config)")
    return out


def _set_weight_list(cfg: Any, weights: list) -> None:
    """``train.reward_weights`` given as TRL's list: one weight per reward, in reward order."""
    from .train.plugins import reward_names

    names = reward_names(list(cfg.train.reward_funcs))
    if len(weights) != len(names):
        raise ConfigError(f"train.reward_weights has {len(weights)} weight(s) for {len(names)} rewards; as a list it "
                          f"gives one per reward in this order: {', '.join(names)} (or write a mapping: "
                          f"{{{', '.join(f'{n}: ...' for n in names)}}})")
    cfg.train.reward_weights = dict(zip(names, (float(w) for w in weights)))


def _schema() -> Any:
    """The structured defaults, with one ``signals.<name>`` section per registered teacher signal."""
    from .train.signals import signals_schema

    base = OmegaConf.structured(Config)
    with open_dict(base):
        base.signals = OmegaConf.structured(signals_schema())
    return base


def _dotlist_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {v}" for k, v in value.items()) + "}"
    return str(value).lower() if isinstance(value, bool) else str(value)


def _short(e: Exception) -> str:
    """OmegaConf messages carry a multi-line context block; keep the first line and the key."""
    msg = str(e).splitlines()[0]
    key = getattr(e, "full_key", None)
    hint = " (unknown keys: check spelling against `echodistill config show`)" if "not in struct" in str(e) or "Key '" in msg else ""
    return f"{msg}" + (f" [key: {key}]" if key and key not in msg else "") + hint


# ---------------------------------------------------------------- secrets
# Values that came from ``${oc.env:VAR}`` (tokens, passwords) are resolved for the run but never written
# out: every record of a config (config.yaml, TensorBoard hparams, `config show`) holds the interpolation
# text instead, which re-resolves from the environment when the saved config is loaded again.
_SECRETS: dict[str, str] = {}  # resolved value -> the interpolation text it came from (process-wide)


def _env_interpolations(raw: Any, prefix: str = "") -> dict[str, str]:
    """dotted key -> raw string, for every string node that mentions ``oc.env``."""
    out: dict[str, str] = {}
    items = raw.items() if isinstance(raw, dict) else enumerate(raw) if isinstance(raw, list) else ()
    for k, v in items:
        key = f"{prefix}{k}"
        if isinstance(v, (dict, list)):
            out.update(_env_interpolations(v, key + "."))
        elif isinstance(v, str) and "oc.env" in v:
            out[key] = v
    return out


def _remember_secrets(cfg: Any, env: dict[str, str]) -> None:
    for key, raw in env.items():
        value = OmegaConf.select(cfg, key, throw_on_missing=False)
        if value is not None and str(value) != raw and str(value) != "":
            _SECRETS[str(value)] = raw


def _mask(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _mask(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_mask(v) for v in x]
    if isinstance(x, str) and _SECRETS:
        if x in _SECRETS:
            return _SECRETS[x]
        for secret in _SECRETS:  # a secret inside a longer value (a URL with a token, ${a}/${oc.env:B})
            if len(secret) >= 4 and secret in x:
                x = x.replace(secret, "***")
    return x


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as YAML (the record of what a run actually used), secrets masked."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(OmegaConf.to_yaml(OmegaConf.create(to_dict(cfg))))


def to_dict(cfg: Any) -> dict:
    """The resolved config as plain containers, for records (files, trackers): ``oc.env`` values masked."""
    return _mask(OmegaConf.to_container(cfg, resolve=True))


__all__ = ["Config", "ConfigError", "Variant", "VARIANTS", "FORMAT_PRESETS", "VARIANT_ALIASES", "variant_named",
           "RENAMED", "TRL_HINTS", "load_config", "save_config", "validate", "to_dict", "code_requests"]
