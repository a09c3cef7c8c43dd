#!/usr/bin/env bash
# Batch-1 generation speed with the KV cache (tensorpar generate) for a Llama-shaped model with random
# weights, at TP=1 and TP=2, beside the memory-bandwidth bound: decoding one token reads every weight
# once (the embedding table only one row), so tokens/s <= bandwidth / bytes of weights per token.
# Usage: bench/bench_generate.sh [build dir]   (needs build/tensorpar; results go to stdout)
# Shape (override by env): LAYERS=8 HIDDEN=1024 HEADS=16 KV_HEADS=4 FFN=2816 VOCAB=32000 NEW=128
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build}
CLI=$BUILD/tensorpar
LAYERS=${LAYERS:-8} HIDDEN=${HIDDEN:-1024} HEADS=${HEADS:-16} KV_HEADS=${KV_HEADS:-4} FFN=${FFN:-2816}
VOCAB=${VOCAB:-32000} NEW=${NEW:-128}
WORK=$(mktemp -d /tmp/tensorpar_bench_generate.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
MPIRUN="mpirun --oversubscribe --bind-to none"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

# a random model, written by our own checkpoint writer: one training step from the random init
python3 - "$WORK/tokens.bin" "$VOCAB" <<'PY'
import random, struct, sys
path, vocab = sys.argv[1], int(sys.argv[2])
n = 4096
random.seed(0)
with open(path, "wb") as f:
    f.write(struct.pack("<256i", 20240520, 1, n, *([0] * 253)))
    f.write(struct.pack(f"<{n}H", *[random.randrange(vocab) for _ in range(n)]))
PY
$MPIRUN -np 2 "$CLI" train --data "$WORK/tokens.bin" --family llama --layers "$LAYERS" --hidden "$HIDDEN" \
  --heads "$HEADS" --kv-heads "$KV_HEADS" --ffn "$FFN" --vocab "$VOCAB" --seq 32 --batch 1 --steps 1 --lr 1e-5 \
  --val-fraction 0 --out "$WORK/model" --json > /dev/null

g++ -O3 -march=native -fopenmp "$ROOT/bench/membw.cpp" -o "$WORK/membw"
BW1=$("$WORK/membw" 1)
BW2=$("$WORK/membw" 2)
# TP=2 is two processes of one thread each: measure exactly that, both streaming at once
"$WORK/membw" 1 > "$WORK/bw_a" & "$WORK/membw" 1 > "$WORK/bw_b"; wait
BW11=$(python3 -c "print(f'{$(cat "$WORK/bw_a") + $(cat "$WORK/bw_b"):.2f}')")

# bytes of weights read per decoded token (f32): every block, the final norm and the untied LM head
BYTES=$(python3 -c "
h,f,l,v,kv,H=$HIDDEN,$FFN,$LAYERS,$VOCAB,$KV_HEADS,$HEADS
hd=h//H
block=2*h + h*(h+2*kv*hd) + h*h + 3*h*f
print(4*(l*block + h + v*h))")

PROMPT=$(python3 -c "print(','.join(str((i*7919)%$VOCAB) for i in range(16)))")
echo "model: llama layers $LAYERS hidden $HIDDEN heads $HEADS kv_heads $KV_HEADS ffn $FFN vocab $VOCAB (f32)"
echo "weights read per token: $(python3 -c "print(f'{$BYTES/1e6:.1f}')") MB; streaming read bandwidth: $BW1 GB/s (1 thread), $BW2 GB/s (2 threads), $BW11 GB/s (2 processes x 1 thread)"
printf "%-4s %-8s %-22s %-22s %-18s\n" TP threads "decode tokens/s" "bound tokens/s" "% of bound"
for TP in 1 2; do
  THREADS=$((2 / TP))
  BW=$([ "$TP" = 1 ] && echo "$BW2" || echo "$BW11")  # the bandwidth of the same process/thread layout
  OUT=$($MPIRUN -np $TP "$CLI" --threads $THREADS generate --model "$WORK/model" --prompt-ids "$PROMPT" \
    --max-new-tokens "$NEW" --temperature 0 --json | tail -1)
  python3 - "$OUT" "$BW" "$BYTES" "$TP" "$THREADS" <<'PY'
import json, sys
r, bw, nbytes, tp, threads = json.loads(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5]
bound = bw * 1e9 / nbytes
d = r["decode_tokens_per_s"]
print(f"{tp:<4} {threads:<8} {d:<22.2f} {bound:<22.2f} {100 * d / bound:<.0f}%   (overall incl. prompt {r['tokens_per_s']:.2f}/s)")
PY
done
