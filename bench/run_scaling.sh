#!/bin/bash
# Multi-host numbers for docs/scaling.md on the namespace test cluster (scripts/cluster.sh, root):
# for each link (tbf rate, or unshaped), the all-reduce bandwidth between two hosts (one rank each)
# and the training throughput (tokens/s; rank 0's --json) of TP=2 inside each host x DP=2 across hosts versus TP=4 across both.
#   bench/run_scaling.sh BENCH_BUILD_DIR BUILD_DIR [rates...]   (default rates: 1gbit 10gbit none)
# BENCH_BUILD_DIR has bench/bench_allreduce (-DTENSORPAR_BENCH=ON), BUILD_DIR has tensorpar.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bench=$(realpath "$1")/bench/bench_allreduce
cli=$(realpath "$2")/tensorpar
shift 2
rates=("$@")
((${#rates[@]})) || rates=(1gbit 10gbit none)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
export TENSORPAR_CLUSTER=tpcbench
cluster="$here/scripts/cluster.sh"
work=$(mktemp -d)
trap '"$cluster" down; rm -rf "$work"' EXIT
for i in $(seq 2000); do echo "It was the best of times, it was the worst of times; line $((i % 13)) of a tale."; done > "$work/text.txt"
# Few parameters (2 x 12 x 128^2 = 0.4M) and many tokens (32 x 128 per step over the mesh): the
# TP all-reduces ((tokens, hidden) activations, 8 per step) outweigh the DP gradient all-reduce.
model="--layers 2 --hidden 128 --heads 4 --seq 128 --steps ${STEPS:-8} --lr 1e-3 --warmup 1 --seed 1 --json"

for rate in "${rates[@]}"; do
  if [[ $rate == none ]]; then "$cluster" up 2 >/dev/null; else "$cluster" up 2 --rate "$rate" >/dev/null; fi
  echo "== link: $rate"
  "$cluster" run --host 10.77.0.1:1,10.77.0.2:1 -np 2 -- "$bench" --min-bytes $((1 << 20)) --max-bytes $((16 << 20)) \
    --min-time "${MIN_TIME:-0.3}" | grep -E '^#|all_reduce '
  for layout in "2 16" "4 32"; do
    read -r tp batch <<< "$layout"
    echo -n "train TP=$tp x DP=$((4 / tp)): "
    "$cluster" run -np 4 -- "$cli" train --data "$work/text.txt" $model --tp "$tp" --batch "$batch" | tail -n 1
  done
done
