#!/usr/bin/env bash
# The class-conditional Fashion-MNIST benchmark of docs/results_fashion_mnist.md, CPU, end to end.
#
#   bash bench/results_fashion.sh [build|samples|headline|first|reference|longer|longest|objective|schedules|options|cfg|seeds|all]
#   (default: all; build = shards -> VAE -> latents -> classifier -> denoiser -> export)
#
# Needs Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist). Every step resumes:
# the trainers from their last checkpoint, encode with --resume, and every sweep cell is cached under
# runs/fashion/eval/, so a rerun (or a run killed half way) only computes what is missing.
# Meant for one core each (OMP_NUM_THREADS=1); two parts can run side by side on two cores.
set -euo pipefail
cd "$(dirname "$0")/.."
TLD=${TLD:-.venv/bin/tld}
RUN=runs/fashion
N=${N:-500}
OUT=$RUN/eval

build() {
  [ -n "$(ls "$RUN"/shards/test/*.tar 2>/dev/null)" ] || "$TLD" preprocess fashion-mnist "$RUN/shards"
  "$TLD" train-vae --config configs/vae_fashion.yaml --set resume=auto
  "$TLD" preprocess encode "$RUN/shards/train" "$RUN/latents" --vae "$RUN/vae/vae" --text-encoder minilm \
    --batch-size 128 --device cpu --resume
  [ -f "$RUN/classifier/classifier.json" ] ||
    "$TLD" eval train-classifier "$RUN/shards/train" "$RUN/classifier" --test "$RUN/shards/test" --device cpu
  "$TLD" train --config configs/fashion_mnist.yaml --set resume=auto --export "$RUN/model"
}

# Image k is generated for the class of test image k with seed k; features from the classifier.
COMMON=(--model "$RUN/model" --data "$RUN/shards/test" --real-n 10000 --extractor classifier
  --classifier "$RUN/classifier" --batch-size 100 --cache-dir "$RUN/eval_cache" --device cpu --no-progress)
sweep() { "$TLD" eval sweep "${COMMON[@]}" -n "$N" --out "$OUT/sweep_n$N" "$@"; }

headline() {  # the headline number: N = 2000
  "$TLD" eval sweep "${COMMON[@]}" -n 2000 --out "$OUT/headline_n2000" --samplers dpmpp_2m --steps 15 \
    --schedules karras --cfgs 3
}
first() {  # every sampler at NFE 5, 10, 15 (second-order samplers: 3, 5, 8 steps = NFE 5, 9, 15)
  sweep --samplers euler,euler_ancestral,lms,dpmpp_2m,dpmpp_2m_sde,ddim,ddpm --steps 5,10,15 \
    --schedules karras --cfgs 3
  sweep --samplers heun,dpm_2,dpmpp_2s_ancestral --steps 3,5,8 --schedules karras --cfgs 3
}
reference() {  # the goal's reference, Heun at 50 steps (NFE 99), and dpmpp_2m at NFE 25 and 50
  sweep --samplers heun --steps 50 --schedules karras --cfgs 3
  sweep --samplers dpmpp_2m --steps 25,50 --schedules karras --cfgs 3
}
longer() {  # more of the long runs, if there is time: NFE 25-100 for the other first-order samplers
  sweep --samplers dpmpp_2m,euler --steps 100 --schedules karras --cfgs 3
  sweep --samplers euler,euler_ancestral,lms,dpmpp_2m_sde,ddim,ddpm --steps 25,50 --schedules karras --cfgs 3
  sweep --samplers heun,dpm_2,dpmpp_2s_ancestral --steps 13,25 --schedules karras --cfgs 3
}
longest() {  # NFE ~100 for the rest (ddim/ddpm equal euler/euler_ancestral, heun's NFE 99 is in `first`)
  sweep --samplers euler_ancestral,lms,dpmpp_2m_sde --steps 100 --schedules karras --cfgs 3
  sweep --samplers dpm_2,dpmpp_2s_ancestral --steps 50 --schedules karras --cfgs 3
}
objective() {  # Table 3: the TLD interpolant vs EDM preconditioning at equal steps, FID over training
  "$TLD" train --config configs/objective_fashion.yaml --set resume=auto
  "$TLD" train --config configs/objective_fashion.yaml --set resume=auto --set output_dir=$RUN/objective/edm \
    --set 'diffusion.parameterization={name: edm, sigma_data: 1.0}' \
    --set 'diffusion.density={name: lognormal, p_mean: -1.2, p_std: 1.2}'
}
samples() {  # docs/images/fashion_mnist_samples.png: one row per class, seeds 10c+0..9 for class c
  "$TLD" generate "t-shirt/top" trouser pullover dress coat sandal shirt sneaker bag "ankle boot" \
    --class-label 0 1 2 3 4 5 6 7 8 9 -n 10 --model "$RUN/model" --seed 0 --cfg 3 --steps 15 \
    --sampler dpmpp_2m --schedule karras --device cpu --no-progress -o docs/images/fashion_mnist_samples.png
}
schedules() {  # the tld and exponential schedules next to karras
  sweep --samplers euler,dpmpp_2m --steps 10,15 --schedules tld,exponential --cfgs 3
}
options() {  # DDIM eta (0 is the plain ddim row); Heun churn; dynamic thresholding
  sweep --samplers ddim --steps 5,10,15,25 --schedules karras --cfgs 3 \
    --option '{"sampler_opts": {"eta": 0.5}}' --option '{"sampler_opts": {"eta": 1.0}}'
  sweep --samplers heun --steps 8 --schedules karras --cfgs 3 --option '{"sampler_opts": {"s_churn": 40}}'
  sweep --samplers dpmpp_2m --steps 15 --schedules karras --cfgs 3 --option '{"threshold": {"percentile": 0.995}}'
}
cfg() {  # guidance scale: FID against class accuracy
  sweep --samplers dpmpp_2m --steps 15 --schedules karras --cfgs 1,2,3,5
}
seeds() {  # the noise in the numbers: the dpmpp_2m 15-step cell again with seeds 1000+k and 2000+k
  for seed in 1000 2000; do
    "$TLD" eval sweep "${COMMON[@]}" -n "$N" --samplers dpmpp_2m --steps 15 --schedules karras --cfgs 3 \
      --seed "$seed" --out "$OUT/seed_${seed}_n$N"
  done
}

case "${1:-all}" in
  all) build; samples; first; reference; seeds; cfg; headline; objective; schedules; options; longer; longest ;;
  build|samples|headline|first|reference|longer|longest|objective|schedules|options|cfg|seeds) "$1" ;;
  *) echo "usage: $0 [build|samples|headline|first|reference|longer|longest|objective|schedules|options|cfg|seeds|all]" >&2; exit 2 ;;
esac
