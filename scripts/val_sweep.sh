#!/usr/bin/env bash
# Teacher-signal variants on the VALIDATION split (never test), seed 0, same budget as the experiment.
# Needs the experiment's folders: `echodistill demo --preset full --out runs/full` first.
# Writes runs/full/val_sweep/report/report.md (baseline: grpo-s0).
set -euo pipefail
cd "$(dirname "$0")/.."
ED=.venv/bin/echodistill
OUT=runs/full/val_sweep
COMMON=(data.bench_dir=runs/full/bench model.path=runs/full/models/embedded run.seed=0
        train.init_from=runs/full/warmup/final train.learning_rate=1e-4 train.max_completion_length=4
        train.max_steps=60 train.eval_steps=0 train.save_steps=20)
EVAL=(data.bench_dir=runs/full/bench model.path=runs/full/models/embedded eval.max_items=140
      "eval.snr_levels=[-10,-5,0,10,30]" "eval.noise_types=[white,pink,babble,music]")

train() {  # name, overrides...
  local name=$1; shift
  [ -d "$OUT/train/$name/final" ] || $ED train "${COMMON[@]}" run.output_dir="$OUT/train/$name" "$@"
}
evaluate() {  # name, checkpoint
  [ -f "$OUT/eval/$1/metrics.json" ] || $ED eval "${EVAL[@]}" --checkpoint "$2" \
      --manifest runs/full/bench/val.jsonl --out "$OUT/eval/$1" --name "$1" --split-name val
}

train echodistill-kd-s0 train.variant=echodistill signals.distill.weight=0.5
train echodistill-token-s0 train.variant=echodistill-token
evaluate warmup runs/full/warmup/final
evaluate grpo-s0 runs/full/train/grpo-s0/final
evaluate echodistill-s0 runs/full/train/echodistill-s0/final
evaluate echodistill-kd-s0 "$OUT/train/echodistill-kd-s0/final"
evaluate echodistill-token-s0 "$OUT/train/echodistill-token-s0/final"
$ED report "$OUT"/eval/{warmup,grpo-s0,echodistill-s0,echodistill-kd-s0,echodistill-token-s0} \
    --out "$OUT/report" --baseline grpo-s0
