#!/bin/bash
# Measured tokens/s for `tensorpar plan`'s validation (docs/scaling.md, "Planner"): on the namespace
# test cluster (scripts/cluster.sh, root), 2 hosts x 2 ranks, every (TP, DP) layout of the 4 ranks at
# each link rate, REPS times each (the machine is shared: report medians). Then, at each rate,
# `tensorpar plan --probe` under the same cluster, whose predictions the table compares against.
#   bench/run_plan_validation.sh TENSORPAR [rates...]   (default rates: 1gbit 100mbit; REPS=3)
# The planner's probe times blocking all-reduces, so the runs use --dp-overlap deferred (blocking
# bucket all-reduces); DP_OVERLAP=nonblocking measures the default's non-blocking ones instead.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cli=$(realpath "$1")
shift
rates=("$@")
((${#rates[@]})) || rates=(1gbit 100mbit)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
export TENSORPAR_CLUSTER=${TENSORPAR_CLUSTER:-tpcplan} TENSORPAR_CLUSTER_SUBNET=${TENSORPAR_CLUSTER_SUBNET:-10.78.0}
cluster="$here/scripts/cluster.sh"
work=$(mktemp -d)
trap '"$cluster" down; rm -rf "$work"' EXIT
for i in $(seq 2000); do echo "It was the best of times, it was the worst of times; line $((i % 13)) of a tale."; done > "$work/text.txt"
# the model of docs/scaling.md: 2 layers, hidden 128, 4 heads, seq 128, 32 sequences per step
shape="--layers 2 --hidden 128 --heads 4 --seq 128"
global=32
for rate in "${rates[@]}"; do
  "$cluster" up 2 --rate "$rate" >/dev/null
  # each repetition probes, then trains every layout, so prediction and measurement see similar load
  for rep in $(seq "${REPS:-3}"); do
    echo -n "plan rate=$rate rep=$rep "
    "$cluster" run -np 4 -- "$cli" --threads 1 plan $shape --vocab 256 --global-batch "$global" --hosts 2 \
      --ranks-per-host 2 --memory-per-host 1GiB --probe --json 2>/dev/null | tail -n 1
    for tp in 1 2 4; do
      batch=$((global * tp / 4))
      echo -n "train rate=$rate rep=$rep tp=$tp dp=$((4 / tp)) "
      "$cluster" run -np 4 -- "$cli" --threads 1 train --data "$work/text.txt" $shape --vocab 256 \
        --steps "${STEPS:-8}" --lr 1e-3 --warmup 1 --seed 1 --json --tp "$tp" --batch "$batch" \
        --dp-overlap "${DP_OVERLAP:-deferred}" 2>/dev/null | tail -n 1
    done
  done
  "$cluster" down
done
