#!/usr/bin/env bash
# Inference memory and batch-1 decode speed of the 156M-parameter Llama of docs/inference.md
# (8 layers, hidden 1024, 16 heads, 4 KV heads, FFN 2816, vocab 32000, random weights written by
# `tensorpar train --steps 1 --out`), at TP=1 and TP=2, one thread per rank:
#   1. peak resident memory per rank of `generate` (/usr/bin/time -v "Maximum resident set size"),
#      f32 / int8 / int4 weights; with BASELINE=/path/to/an/older/tensorpar also that binary's, in
#      the same run;
#   2. decode tokens/s (greedy, F32; then our int4 against its Q40 weights + Q80 buffers) of tensorpar
#      against distributed-llama (DLLAMA=/path/to/dllama,
#      built as /work/shared/peers/README.md says) and BASELINE, alternating run by run (ours, theirs,
#      baseline, ours, ...), ROUNDS rounds, medians; without DLLAMA / BASELINE only ours.
# Usage: bench/run_inference.sh [build dir]   env: MODEL (an existing model dir), ROUNDS=5, NEW=64,
#        BASELINE, DLLAMA, TO_DLLAMA (converter, default /work/shared/peers/to_dllama.py; run by the
#        system /usr/bin/python3, which needs python3-numpy), SKIP_MEMORY=1
# On a shared machine the speeds are noisy: compare the ratios of the same round, and rerun quiet.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build}
CLI=$BUILD/tensorpar
ROUNDS=${ROUNDS:-5} NEW=${NEW:-64}
TO_DLLAMA=${TO_DLLAMA:-/work/shared/peers/to_dllama.py}
WORK=$(mktemp -d /tmp/tensorpar_run_inference.XXXXXX)
WORKER_PID=
cleanup() {
  [ -n "$WORKER_PID" ] && kill "$WORKER_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
MPIRUN="mpirun --oversubscribe --bind-to none"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1

MODEL=${MODEL:-}
if [ -z "$MODEL" ]; then
  MODEL=$WORK/model
  python3 - "$WORK/tokens.bin" 32000 <<'PY'
import random, struct, sys
path, vocab = sys.argv[1], int(sys.argv[2])
n = 4096
random.seed(0)
with open(path, "wb") as f:
    f.write(struct.pack("<256i", 20240520, 1, n, *([0] * 253)))
    f.write(struct.pack(f"<{n}H", *[random.randrange(vocab) for _ in range(n)]))
PY
  $MPIRUN -np 2 "$CLI" train --data "$WORK/tokens.bin" --family llama --layers 8 --hidden 1024 --heads 16 \
    --kv-heads 4 --ffn 2816 --vocab 32000 --seq 32 --batch 1 --steps 1 --lr 1e-5 --val-fraction 0 --out "$MODEL" \
    --json > /dev/null
fi
PROMPT=$(python3 -c "print(','.join(str(i) for i in range(1, 9)))")

# peak RSS (MB) of every rank of one generate run: "max over ranks" and the rank 0 value
peak_rss() {  # binary tp weights
  rm -f "$WORK"/rss.*
  $MPIRUN -np "$2" sh -c "/usr/bin/time -f %M -o $WORK/rss.\$OMPI_COMM_WORLD_RANK $1 --threads 1 generate \
    --model $MODEL --prompt-ids $PROMPT -n 16 --weights $3 --json > /dev/null"
  python3 -c "import glob; v=[int(open(f).read().split()[-1])/1024 for f in sorted(glob.glob('$WORK/rss.*'))]; print(' '.join(f'{x:.0f}' for x in v))"
}

if [ "${SKIP_MEMORY:-0}" != 1 ]; then
  echo "== peak resident memory per rank (MB) of generate -n 16, one thread per rank"
  printf "%-4s %-7s %-22s %s\n" TP weights "this build" "${BASELINE:+baseline}"
  for TP in 1 2; do
    for W in f32 int8 int4; do
      NOW=$(peak_rss "$CLI" $TP $W)
      BASE=$([ -n "${BASELINE:-}" ] && peak_rss "$BASELINE" $TP $W || echo "")
      printf "%-4s %-7s %-22s %s\n" $TP $W "$NOW" "$BASE"
    done
  done
fi

# ranks pinned one per core (rank r on core r), as distributed-llama's nodes are below (taskset)
ours() {  # tp [binary] -> decode tokens/s; env OURS_WEIGHTS (f32|int8|int4)
  mpirun --oversubscribe --bind-to core --map-by core -np "$1" "${2:-$CLI}" --threads 1 generate --model "$MODEL" \
    --weights "${OURS_WEIGHTS:-f32}" --prompt-ids "$PROMPT" -n "$NEW" --json | tail -1 |
    python3 -c "import json,sys; print(f\"{json.load(sys.stdin)['decode_tokens_per_s']:.2f}\")"
}
theirs() {  # tp -> decode tokens/s ("Prediction" block); env THEIR_MODEL (f32.m|q40.m), THEIR_BUFFER (f32|q80)
  local workers=""
  if [ "$1" = 2 ]; then
    taskset -c 1 "$DLLAMA" worker --host 127.0.0.1 --port 9998 --nthreads 1 > "$WORK/worker.log" 2>&1 &
    WORKER_PID=$!
    sleep 1
    workers="--workers 127.0.0.1:9998"
  fi
  taskset -c 0 "$DLLAMA" inference --model "$WORK/${THEIR_MODEL:-f32.m}" --tokenizer "$WORK/tok.t" --prompt "Hello world" \
    --steps $((NEW + 12)) --nthreads 1 --buffer-float-type "${THEIR_BUFFER:-f32}" --temperature 0 $workers \
    > "$WORK/root.log" 2>&1 || true
  if [ -n "$WORKER_PID" ]; then
    kill "$WORKER_PID" 2>/dev/null || true
    wait "$WORKER_PID" 2>/dev/null || true
    WORKER_PID=
  fi
  awk '/^Prediction/{p=1} p && /tokens\/s/{print $2; exit}' "$WORK/root.log"
}

# the machine's streaming read bandwidth with as many single-thread processes as ranks, summed, probed
# before each round: on a VM it changes from minute to minute (docs/inference.md), and decode follows it
g++ -O3 -march=native -fopenmp "$ROOT/bench/membw.cpp" -o "$WORK/membw"
probe() {  # processes -> GB/s summed over them
  local i
  for i in $(seq "$1"); do "$WORK/membw" 1 > "$WORK/bw.$i" & done
  wait
  cat "$WORK"/bw.* | awk '{s += $1} END {printf "%.1f", s}'
  rm -f "$WORK"/bw.*
}

echo "== batch-1 greedy decode tokens/s, F32, one thread per rank ($NEW new tokens), $ROUNDS interleaved rounds"
if [ -n "${DLLAMA:-}" ]; then
  # its converter knows rms_norm_eps 1e-5 or 1e-6 only; our config.json has the f32-rounded value
  mkdir -p "$WORK/conv" && ln -sf "$(cd "$MODEL" && pwd)/model.safetensors" "$WORK/conv/model.safetensors"
  python3 -c "import json; c=json.load(open('$MODEL/config.json')); c['rms_norm_eps']=float(f\"{c['rms_norm_eps']:.6g}\"); json.dump(c, open('$WORK/conv/config.json', 'w'))"
  /usr/bin/python3 "$TO_DLLAMA" "$WORK/conv" --model "$WORK/f32.m" --tokenizer "$WORK/tok.t" > /dev/null
fi
decode_rounds() {  # the interleaved rounds at TP=1 and TP=2 for the weights the env selects
  for TP in 1 2; do
    A=() B=() C=() P=()
    for r in $(seq "$ROUNDS"); do
      P+=("$(probe $TP)")
      A+=("$(ours $TP)")
      [ -n "${DLLAMA:-}" ] && B+=("$(theirs $TP)")
      [ -n "${BASELINE:-}" ] && C+=("$(ours $TP "$BASELINE")")
    done
    python3 - "$TP" "${A[*]}" "${B[*]:-}" "${C[*]:-}" "${P[*]}" "${OURS_WEIGHTS:-f32}" <<'PY'
import statistics, sys
tp, a = sys.argv[1], [float(x) for x in sys.argv[2].split()]
bw = [float(x) for x in sys.argv[5].split()]
b = [float(x) for x in sys.argv[3].split()] if sys.argv[3].strip() else []
c = [float(x) for x in sys.argv[4].split()] if sys.argv[4].strip() else []
line = f"TP={tp}: tensorpar {statistics.median(a):.1f} tok/s (runs {' '.join(f'{x:.1f}' for x in a)})"
if c:
    line += f"; baseline {statistics.median(c):.1f} (runs {' '.join(f'{x:.1f}' for x in c)})"
if b:
    ratios = [x / y for x, y in zip(a, b) if y > 0]
    line += (f"; distributed-llama {statistics.median(b):.1f} (runs {' '.join(f'{x:.1f}' for x in b)}); "
             f"ratio of medians {statistics.median(a) / statistics.median(b):.2f}x, "
             f"median of per-round ratios {statistics.median(ratios):.2f}x")
# 491.9 MB of weights read per token (docs/inference.md): the bound of each round at its probed bandwidth
line += f"; read bandwidth per round {' '.join(f'{x:.1f}' for x in bw)} GB/s"
if sys.argv[6] == "f32":
    line += f", bound {' '.join(f'{x * 1e9 / 491.9e6:.0f}' for x in bw)} tok/s"
print(line)
PY
  done
}
decode_rounds
if [ -n "${DLLAMA:-}" ]; then
  # the issue's quantized comparison: our int4 (blocks of 32 with a scale, as Q4_0) against
  # distributed-llama's Q40 weights with Q80 synchronisation
  echo "== batch-1 greedy decode tokens/s, int4 against distributed-llama Q40 weights + Q80 buffers, $ROUNDS rounds"
  /usr/bin/python3 "$TO_DLLAMA" "$WORK/conv" --model "$WORK/q40.m" --type q40 > /dev/null
  OURS_WEIGHTS=int4 THEIR_MODEL=q40.m THEIR_BUFFER=q80 BASELINE= decode_rounds
fi
