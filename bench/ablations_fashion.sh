#!/usr/bin/env bash
# The training-recipe ablations of docs/results_recipe.md on class-conditional Fashion-MNIST.
#
#   bash bench/ablations_fashion.sh NAME [NAME ...]     # train (resumable) + export + headline eval
#   bash bench/ablations_fashion.sh list                # the runs this script knows
#   EMA=1 CFGS=2 bash bench/ablations_fashion.sh adaln_seed1_ema   # score every EMA length the run kept
#
# Every run is configs/fashion_mnist.yaml (the 2.18M-parameter small model, batch 32; fp32, since bf16
# autocast was 2.6x slower than fp32 on the Intel Xeon these ran on; 2500 steps = the 15-minute
# single-core budget of docs/results_fashion_mnist.md) with one change.
# The budget is fixed in steps, not wall time, so a busy machine changes how long a run takes, never
# what it computes; a change that makes steps cheaper (masked training) gets the steps the same time
# buys, measured by bench/masked_throughput.py. Needs `bash bench/results_fashion.sh build` first
# (shards, VAE, latents, classifier). One core each (OMP_NUM_THREADS=1); two runs fit side by side.
set -euo pipefail
cd "$(dirname "$0")/.."
TLD=${TLD:-.venv/bin/tld}
RUN=runs/fashion
OUT=$RUN/abl
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

FLOW="--set 'diffusion.parameterization={name: flow}' --set 'diffusion.density={name: logit_normal}'"
declare -A RUNS=(
  [base]=""
  [base_seed1]="--set seed=1"
  [flow]="$FLOW"
  [flow_seed1]="$FLOW --set seed=1"
  [adaln]="--set model.adaln=true"
  # adaLN-Zero's step took 1.22x the CPU time (0.384 vs 0.316 s: 3.59M parameters for AdamW, not 2.18M)
  [adaln_budget]="--set model.adaln=true --set steps=2050"
  [skips]="--set model.skips=true"
  [qknorm]="--set model.qk_norm=true"
  [minsnr]="--set diffusion.min_snr_gamma=5"
  [mask50]="--set mask.ratio=0.5 --set mask.until=0.9 --set steps=${MASK_STEPS:-3150}"
  [flow_adaln]="$FLOW --set model.adaln=true"
  # the best combination: the two changes that won alone (adaLN-Zero, long skips), on the 2023 objective
  [adaln_skips]="--set model.adaln=true --set model.skips=true"
  [flow_adaln_skips]="$FLOW --set model.adaln=true --set model.skips=true"
  # the seed noise of adaLN-Zero, and EMA lengths: the extra averages do not change the model or the
  # main (0.999) EMA, so this run is adaln with seed 1 plus two more EMAs to score (EMA=1 below)
  [adaln_seed1_ema]="--set model.adaln=true --set seed=1 --set 'ema.extra_decays=[0.9995, 0.9999]'"
  [flow_adaln_mask50]="$FLOW --set model.adaln=true --set mask.ratio=0.5 --set mask.until=0.9 --set steps=${MASK_STEPS:-3150}"
)

run() {
  local name=$1 dir=$OUT/$1
  mkdir -p "$dir"
  eval "\"$TLD\" train --config configs/fashion_mnist.yaml --set resume=auto --set output_dir=$dir \
    --set \"mixed_precision='no'\" --set sample.every=0 --set tracker=none --set progress=false ${RUNS[$name]} --export $dir/model"
  if [ -n "${EMA:-}" ]; then  # score every EMA the run tracked (model_ema/ema_<decay>/)
    [ -d "$dir/model_ema" ] || "$TLD" export "$dir" "$dir/model_ema" --all-ema
    for m in "$dir"/model_ema/ema_*; do
      for cfg in ${CFGS:-3 1.5}; do
        [ -f "$dir/eval_$(basename "$m")_cfg$cfg/results.csv" ] || score "$m" "$cfg" "$dir/eval_$(basename "$m")_cfg$cfg"
      done
    done
    return
  fi
  for cfg in ${CFGS:-3 1.5}; do
    [ -f "$dir/eval_cfg$cfg/results.csv" ] || score "$dir/model" "$cfg" "$dir/eval_cfg$cfg"
  done
}

score() {  # MODEL CFG OUT: the headline evaluation
  "$TLD" eval sweep --model "$1" --data "$RUN/shards/test" \
    -n 2000 --real-n 10000 --extractor classifier --classifier "$RUN/classifier" --batch-size 100 \
    --cache-dir "$RUN/eval_cache" --device cpu --no-progress --samplers dpmpp_2m --steps 15 \
    --schedules karras --cfgs "$2" --out "$3"
}

if [ "${1:-}" = list ] || [ $# -eq 0 ]; then
  for k in "${!RUNS[@]}"; do echo "$k: ${RUNS[$k]}"; done | sort
  exit 0
fi
for name in "$@"; do
  [ -n "${RUNS[$name]+x}" ] || { echo "unknown run $name (bash $0 list)" >&2; exit 2; }
  run "$name"
done
