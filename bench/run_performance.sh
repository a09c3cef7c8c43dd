#!/usr/bin/env bash
# The side-by-side training-throughput table of docs/performance.md: tensorpar's `bench` in each
# configuration and the PyTorch Megatron-style baseline (../shared/bench/torch_gpt_tp.py) of the same
# model, all in one run on this machine. Needs a quiet machine: other load skews every number.
#   bench/run_performance.sh [build-dir] [preset] [steps]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-$root/build}"
preset="${2:-gpt-bench}"
steps="${3:-5}"
tp="$build/tensorpar"
torch_script="$root/../shared/bench/torch_gpt_tp.py"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

field() { python3 -c "import json,sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])['$1'])"; }

# PyTorch at its best setting: OpenBLAS's AVX-512 kernels (this machine's environment says Haswell).
torch_tp2=""
torch_tp1=""
if [ "$preset" = gpt-bench ] && /usr/bin/python3 -c "import torch" 2>/dev/null && [ -f "$torch_script" ]; then
  torch_tp2=$(OPENBLAS_CORETYPE=SkylakeX /usr/bin/python3 "$torch_script" 2 1 | sed -n 's/.*tokens\/s=\([0-9.]*\).*/\1/p')
  torch_tp1=$(OPENBLAS_CORETYPE=SkylakeX /usr/bin/python3 "$torch_script" 1 2 | sed -n 's/.*tokens\/s=\([0-9.]*\).*/\1/p')
fi

printf '| configuration | ranks x threads | tokens/s | MFU (f32 peak) | MFU (bf16 peak) | comm share | peak RSS/rank | vs PyTorch TP=2 |\n'
printf '|---|---|---|---|---|---|---|---|\n'
run() {  # label, ranks, threads, extra flags
  local label="$1" ranks="$2" threads="$3"; shift 3
  local out
  # one rank per core pinned; a single rank with two threads must not be pinned to one core
  local bind=core
  [ "$threads" -gt 1 ] && bind=none
  out=$(mpirun -np "$ranks" --bind-to "$bind" "$tp" --threads "$threads" bench --preset "$preset" --steps "$steps" --json "$@" | tail -1)
  local tok mfu mfu16 comm rss
  tok=$(echo "$out" | field tokens_per_s); mfu=$(echo "$out" | field mfu); mfu16=$(echo "$out" | field mfu_bf16)
  comm=$(echo "$out" | field comm_fraction); rss=$(echo "$out" | field peak_rss_mb)
  local ratio="-"
  [ -n "$torch_tp2" ] && ratio=$(python3 -c "print(f'{$tok/$torch_tp2:.2f}x')")
  python3 -c "print(f'| $label | $ranks x $threads | {$tok:.0f} | {100*$mfu:.1f}% | ' + ('-' if $mfu16 == 0 else f'{100*$mfu16:.1f}%') + f' | {100*$comm:.1f}% | {$rss:.0f} MB | $ratio |')"
}
run "tensorpar f32 TP=2" 2 1
run "tensorpar f32 TP=2, non-blocking all-reduce" 2 1 --overlap nonblocking
run "tensorpar f32 TP=2 + SP" 2 1 --sequence-parallel
run "tensorpar f32 TP=1" 1 2
run "tensorpar bf16 TP=2" 2 1 --precision bf16
run "tensorpar bf16 TP=2 + SP" 2 1 --precision bf16 --sequence-parallel
run "tensorpar bf16 TP=1" 1 2 --precision bf16
if [ -n "$torch_tp2" ]; then
  printf '| PyTorch 1.13 f32 TP=2 (gloo) | 2 x 1 | %.0f | | | | | 1.00x |\n' "$torch_tp2"
  printf '| PyTorch 1.13 f32 TP=1 | 1 x 2 | %.0f | | | | | %s |\n' "$torch_tp1" \
    "$(python3 -c "print(f'{$torch_tp1/$torch_tp2:.2f}x')")"
fi
