#!/bin/bash
# TP-only, PP-only and TP x PP at equal rank counts on the namespace test cluster (docs/scaling.md,
# "Pipeline parallelism"): 2 hosts x 2 ranks at each link rate, the same model and global batch
# (batch 2 x 8 micro-batches), REPS times each layout, interleaved; prints tokens/s, the largest
# rank's peak RSS and, for pipelines, the measured bubble. Root (network namespaces).
#   bench/run_pipeline_layouts.sh TENSORPAR [rates...]   (default: 1gbit 100mbit; REPS=3)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cli=$(realpath "$1")
shift
rates=("$@")
((${#rates[@]})) || rates=(1gbit 100mbit)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
export TENSORPAR_CLUSTER=${TENSORPAR_CLUSTER:-tpcpipe} TENSORPAR_CLUSTER_SUBNET=${TENSORPAR_CLUSTER_SUBNET:-10.79.0}
cluster="$here/scripts/cluster.sh"
work=$(mktemp -d)
trap '"$cluster" down >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
for i in $(seq 3000); do echo "It was the best of times, it was the worst of times; line $((i % 13)) of a tale."; done > "$work/text.txt"
# GPT-2 family, 4 layers (one per stage at PP=4), hidden 256, 8 heads, seq 128; 16 sequences per step
shape="--layers 4 --hidden 256 --heads 8 --seq 128 --vocab 256 --batch 2 --grad-accum 8"
layouts=("4 1" "1 4" "2 2")  # "TP PP": TP inside a host, stages across hosts
for rate in "${rates[@]}"; do
  "$cluster" up 2 --rate "$rate" >/dev/null
  for rep in $(seq "${REPS:-3}"); do
    for layout in "${layouts[@]}"; do
      read -r tp pp <<<"$layout"
      echo -n "rate=$rate rep=$rep tp=$tp pp=$pp "
      "$cluster" run -np 4 -- "$cli" --threads 1 train --data "$work/text.txt" $shape --tp "$tp" --pp "$pp" \
        --steps "${STEPS:-6}" --lr 1e-3 --warmup 1 --seed 1 --val-fraction 0 --json 2>/dev/null | tail -n 1 |
        python3 -c 'import json,sys; j=json.load(sys.stdin); print("tokens/s %.0f peak_rss_mb %.0f loss %.5f bubble %s ideal %s" % (j["tokens_per_s"], j["peak_rss_mb"], j["loss"], j.get("pp_bubble", "-"), j.get("pp_bubble_ideal", "-")))'
    done
  done
  "$cluster" down >/dev/null
done
