#!/bin/bash
# A 2-process `echodistill train` of the embedded model under `accelerate launch` (DDP on CPU, gloo), once
# per commit given, then the largest weight difference between consecutive commits' final weights.
# Issue 12: the accelerate engine (4f357a0) against the manual gradient all-reduce before it.
#   scripts/compare_two_process_paths.sh RUN_DIR BENCH_DIR MODEL_DIR COMMIT [COMMIT ...]
# e.g. scripts/compare_two_process_paths.sh /tmp/cmp runs/exp/bench runs/exp/warmup/final 4f357a0^ 4f357a0 HEAD
# Each commit runs from its own git worktree (under RUN_DIR), one torch thread per process.
set -euo pipefail
out=$(realpath -m "$1"); bench=$(realpath "$2"); model=$(realpath "$3"); shift 3
repo=$(git rev-parse --show-toplevel); py="$repo/.venv/bin/python"
mkdir -p "$out"
names=()
for commit in "$@"; do
  sha=$(git -C "$repo" rev-parse --short "$commit"); names+=("$sha")
  tree="$out/tree-$sha"
  [ -d "$tree" ] || git -C "$repo" worktree add -f --detach "$tree" "$sha" -q
  rm -rf "$out/run-$sha"
  (cd "$tree" && HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_NUM_THREADS=1 PYTHONPATH="$tree/src" \
    "$py" -m accelerate.commands.launch --config_file configs/accelerate/ddp_cpu.yaml --num_processes 2 \
    --main_process_port $((29500 + RANDOM % 1000)) -m echodistill.cli train \
    data.bench_dir="$bench" model.path="$model" train.variant=echodistill train.max_steps=6 \
    train.prompts_per_device=2 train.num_generations=4 train.max_completion_length=4 train.eval_steps=0 \
    train.save_steps=6 train.learning_rate=1e-4 run.log_with=null run.output_dir="$out/run-$sha" \
    > "$out/run-$sha.log" 2>&1) || { echo "$sha failed: see $out/run-$sha.log"; exit 1; }
  echo "$sha: trained, 2 processes $(grep -o 'student [a-z0-9]*' "$out/run-$sha.log" | head -1 || true)"
done
"$py" - "$out" "$model" "${names[@]}" <<'PY'
import sys
from safetensors.torch import load_file
out, model, names = sys.argv[1], sys.argv[2], sys.argv[3:]
w = {n: load_file(f"{out}/run-{n}/final/model.safetensors") for n in names}
start = load_file(f"{model}/model.safetensors")
diff = lambda a, b: max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
print(f"moved from the start: {diff(w[names[0]], {k: start[k] for k in w[names[0]]}):.3g}")
for a, b in zip(names, names[1:]):
    print(f"{a} vs {b}: max |dw| = {diff(w[a], w[b]):.3g}")
PY
