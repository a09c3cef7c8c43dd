#!/usr/bin/env bash
# Cost as the work grows (issue 13, docs/performance.md): tensorpar bench --json --profile at TP=2
#  - sequence length 256 -> 4096 at a fixed 4096 tokens per step (batch 16 -> 1), gpt-bench's width;
#  - width 768 -> 2048 (64 per head) at gpt-bench's 256 x 8 tokens.
# Prints markdown tables (tokens/s, MFU, peak RSS and activation bytes per rank, attention's share of
# the step beside its share of the FLOPs) and writes two SVG plots into OUT.
#   bench/run_sweep.sh [build-dir] [out-dir] [precision]   (defaults: build, sweep-out, f32)
# SEQS / WIDTHS override the lists, e.g. SEQS="256 512" WIDTHS="768" for a quick look.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$(cd "${1:-$root/build}" && pwd)"
out="${2:-sweep-out}"
precision="${3:-f32}"
mkdir -p "$out"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
run() {  # kind, value, flags...
  local kind="$1" value="$2"; shift 2
  mpirun -np 2 --bind-to core "$build/tensorpar" bench --preset gpt-bench --steps 3 --warmup 1 --precision "$precision" \
    --json --profile "$@" | tail -1 | python3 -c "import json,sys; j=json.load(sys.stdin); j['sweep']='$kind'; print(json.dumps(j))"
}
: > "$out/sweep.jsonl"
for s in ${SEQS:-256 512 1024 2048 4096}; do run seq "$s" --seq "$s" --batch $((4096 / s)) >> "$out/sweep.jsonl"; done
for h in ${WIDTHS:-768 1024 1536 2048}; do run width "$h" --hidden "$h" >> "$out/sweep.jsonl"; done
exec python3 "$root/bench/sweep_plot.py" "$out/sweep.jsonl" "$out"
