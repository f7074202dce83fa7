#!/usr/bin/env bash
# The sampler tables of docs/results.md on the bundled demo model (weights/tld-emoji), CPU.
#
#   bash bench/results_demo.sh [first|reference|second|schedules|options|cfg|seeds|all]   (default: all)
#   (reference = Heun at NFE 99, the goal's reference; second = the other long runs, NFE 25-100)
#
# Needs the demo model's data: `tld recipe emoji --out runs/emoji` (its data steps are enough), then
# the reference set below. Every cell is cached under results/demo/cells/, so a rerun (or a
# run killed half way) only computes what is missing. Two parts can run side by side on two cores.
set -euo pipefail
cd "$(dirname "$0")/.."
TLD=${TLD:-.venv/bin/tld}
REF=runs/emoji/shards/eval
OUT=results/demo
[ -d "$REF" ] || "$TLD" preprocess subset runs/emoji/shards/captioned "$REF" -n 1000 --seed 0
COMMON=(--model weights/tld-emoji --data "$REF" -n 250 --real-n 1000 --batch-size 50 --cfgs 2 --device cpu --no-progress)

# All tables share one cell cache (results/demo/cells): a setting in two tables is computed once.
sweep() { "$TLD" eval sweep "${COMMON[@]}" --out "$OUT" "$@"; }

first() {  # sampler x NFE on the karras schedule; second-order samplers make 2 calls per step but the last
  sweep --samplers euler,euler_ancestral,lms,dpmpp_2m,dpmpp_2m_sde,ddim,ddpm --steps 5,10,15 --schedules karras
  sweep --samplers heun,dpm_2,dpmpp_2s_ancestral --steps 3,5,8 --schedules karras   # NFE 5, 9, 15
}
reference() {  # Heun at 50 steps (NFE 99), the reference of the "<= 15 NFE within 5%" goal
  sweep --samplers heun --steps 50 --schedules karras
}
second() {  # the long runs: NFE 25, 50, 100 (second-order samplers: 13, 25, 50 steps = NFE 25, 49, 99)
  sweep --samplers euler,euler_ancestral,lms,dpmpp_2m,dpmpp_2m_sde,ddim,ddpm --steps 25,50,100 --schedules karras
  sweep --samplers heun,dpm_2,dpmpp_2s_ancestral --steps 13,25 --schedules karras
  sweep --samplers dpm_2,dpmpp_2s_ancestral --steps 50 --schedules karras
}
schedules() {  # the tld and exponential schedules next to karras
  sweep --samplers euler,dpmpp_2m --steps 5,10,15 --schedules tld,exponential
  sweep --samplers heun --steps 3,5,8 --schedules tld,exponential
}
options() {  # DDIM eta (0 is the plain ddim row); Heun churn; dynamic thresholding
  sweep --samplers ddim --steps 5,10,15,25 --schedules karras \
    --option '{"sampler_opts": {"eta": 0.5}}' --option '{"sampler_opts": {"eta": 1.0}}'
  sweep --samplers heun --steps 8,13 --schedules karras --option '{"sampler_opts": {"s_churn": 40}}'
  sweep --samplers dpmpp_2m --steps 15 --schedules karras --cfgs 2,5 \
    --option none --option '{"threshold": {"percentile": 0.995}}'
}
cfg() {  # guidance scale: FID against colour-word and caption alignment
  sweep --samplers dpmpp_2m --steps 15 --schedules karras --cfgs 1,2,3,4,5,7,9
}
seeds() {  # the noise in the numbers: the dpmpp_2m 15-step cell again with seeds 1000+k and 2000+k
  for seed in 1000 2000; do
    "$TLD" eval sweep "${COMMON[@]}" --samplers dpmpp_2m --steps 15 --schedules karras --seed "$seed" \
      --out "$OUT/seed_$seed"
  done
}

case "${1:-all}" in
  all) first; reference; seeds; cfg; schedules; options; second ;;
  first|reference|second|schedules|options|cfg|seeds) "$1" ;;
  *) echo "usage: $0 [first|reference|second|schedules|options|cfg|seeds|all]" >&2; exit 2 ;;
esac
