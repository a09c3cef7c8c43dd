#!/usr/bin/env bash
# The main demo: trains a small GPT with tensor parallelism over 2 MPI ranks on the text of
# Debian's fortunes package, draws the loss curve and prints samples. About three minutes on 2 cores.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$root/out/demo"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
"$root/scripts/install_deps.sh" fortunes
"$root/scripts/build.sh" -DTENSORPAR_TESTS=OFF -DTENSORPAR_BENCH=OFF
mkdir -p "$out"
# the corpus: every English fortune file (not the ASCII-art ones), about 2.4 MB of text
corpus="$out/fortunes.txt"
find /usr/share/games/fortunes -maxdepth 1 -type f ! -name '*.dat' ! -name '*.u8' ! -name 'art' ! -name 'ascii-art' \
  -print0 | sort -z | xargs -0 cat > "$corpus"
tp="$root/build/tensorpar"
mpirun -np 2 --bind-to core "$tp" train --data "$corpus" \
  --layers 4 --hidden 192 --heads 6 --seq 256 --batch 16 --steps ${DEMO_STEPS:-1500} \
  --lr 4e-3 --warmup 50 --precision bf16 --val-every 200 --metrics "$out/metrics.jsonl" --out "$out/model"
"$tp" report "$out/metrics.jsonl" -o "$out/loss.svg"
echo
echo "Samples from the TP=2 model, loaded here at TP=2 again:"
mpirun -np 2 --bind-to core "$tp" sample --model "$out/model" --prompt "The " --max-new-tokens 250 --samples 2 --temperature 0.7
