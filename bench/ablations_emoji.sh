#!/usr/bin/env bash
# The training-recipe ablations of docs/results_recipe.md on the emoji set (the bundled demo's data).
#
#   bash bench/ablations_emoji.sh NAME [NAME ...]     # train (resumable) + export + headline eval
#   bash bench/ablations_emoji.sh floor               # FID of the VAE round trip (the floor) and of real images
#   bash bench/ablations_emoji.sh list                # the runs this script knows
#
# Every run is configs/emoji_demo.yaml taken back to the 2023 recipe the ablations started from (BASE2023
# below: no adaLN-Zero, every row, one EMA; 2.26M parameters, 3.67M with adaLN-Zero; batch 32; fp32)
# with one change, trained for a fixed budget of STEPS (default 4500, about 30 minutes on one CPU
# core). Needs the recipe's data: `tld recipe emoji --out runs/emoji` up to its encode step (or
# runs/emoji/latents encoded with weights/tld-emoji/vae). One core each (OMP_NUM_THREADS=1).
#
# Scored with the model's default sampler (dpmpp_2m, 15 steps, its own schedule) and the demo's guidance
# (cfg 1.5, 4 while sigma >= 2):
#   shapes   `tld eval shapes`, "<colour> heart|circle|square", seeds 1000-1007 (the card uses 0-7)
#   colours  `tld eval colours`, the card's colour table, seeds 1000-1007
#   FID      N = 1000 generated (the reference's captions) vs 1000 real images drawn at random, EfficientNet-Lite0
set -euo pipefail
cd "$(dirname "$0")/.."
TLD=${TLD:-.venv/bin/tld}
PY=${PY:-.venv/bin/python}
RUN=runs/emoji
OUT=$RUN/abl
STEPS=${STEPS:-4500}
SHARDS=$RUN/shards/captioned
REAL=$OUT/floor.images  # drawn by `floor` (bench/vae_floor.py): 2000 random images, the first 1000 the reference
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

FLOW="--set 'diffusion.parameterization={name: flow}' --set 'diffusion.density={name: logit_normal}'"
ADALN="--set model.adaln=true"
# the shipped demo config has adaLN-Zero, skin tones dropped and three EMAs: the ablations' base had none
BASE2023="--set model.adaln=false --set 'data.balance={}' --set 'ema.extra_decays=[]'"
declare -A RUNS=(
  [base]=""
  [adaln]="$ADALN"
  [adaln_seed1]="$ADALN --set seed=1"
  [flow_adaln]="$ADALN $FLOW"
  # half of the set is skin-tone variants of people emoji: leave them out (data.balance.drop)
  [adaln_noskin]="$ADALN --set 'data.balance.drop=[skin tone]'"
  [adaln_wide]="$ADALN --set model.embed_dim=256 --set model.depth=6 --set model.num_heads=4 --set steps=$((STEPS * 4 / 10))"
  # the candidate demo: adaLN-Zero for 10000 steps (docs/results_recipe.md)
  [demo_v2]="$ADALN --set steps=10000"
)

floor() {
  "$PY" bench/vae_floor.py --vae weights/tld-emoji/vae --data "$SHARDS" -n 1000 --real-n 1000 \
    --cache-dir "$RUN/eval_cache" --out "$OUT/floor.json"
}

run() {
  local name=$1 dir=$OUT/$1
  mkdir -p "$dir"
  eval "\"$TLD\" train --config configs/emoji_demo.yaml --set resume=auto --set output_dir=$dir \
    --set data.path=$RUN/latents --set steps=$STEPS --set \"mixed_precision='no'\" --set sample.every=0 --set tracker=none \
    --set progress=false $BASE2023 ${RUNS[$name]} --export $dir/model"
  python3 - "$dir/model/config.json" <<'EOF'
import json, sys
path = sys.argv[1]
cfg = json.load(open(path))
cfg["sampling"] = {"cfg": 1.5, "steps": 15, "cfg_schedule": [[2.0, 4.0]]}
json.dump(cfg, open(path, "w"), indent=2)
EOF
  [ -f "$REAL/done" ] || floor
  local common=(--model "$dir/model" --device cpu --no-progress)
  [ -f "$dir/shapes.json" ] || "$TLD" eval shapes "${common[@]}" --seed 1000 --out "$dir/shapes.json" > "$dir/shapes.md"
  [ -f "$dir/colours.json" ] || "$TLD" eval colours "${common[@]}" --seed 1000 --out "$dir/colours.json" > "$dir/colours.md"
  [ -f "$dir/fid.json" ] || "$TLD" eval fid "${common[@]}" --data "$REAL" -n 1000 --real-n 1000 --batch-size 50 \
    --cache-dir "$RUN/eval_cache" --sampler dpmpp_2m --steps 15 --out "$dir/fid.json" > "$dir/fid.txt"
}

if [ "${1:-}" = list ] || [ $# -eq 0 ]; then
  for k in "${!RUNS[@]}"; do echo "$k: ${RUNS[$k]}"; done | sort
  exit 0
fi
for name in "$@"; do
  if [ "$name" = floor ]; then floor; continue; fi
  [ -n "${RUNS[$name]+x}" ] || { echo "unknown run $name (bash $0 list)" >&2; exit 2; }
  run "$name"
done
