#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/, clang, ASan+UBSan) in build-fuzz/ and runs each for SECONDS
# (default 60) from its committed seed corpus (fuzz/corpus/<target>/), one after the other. New
# interesting inputs go to build-fuzz/corpus/<target>/ (not the tree); a crash stops with the input
# saved as build-fuzz/crash-<target>-*, to be turned into a regression test in tests/io/.
# Prints the number of inputs tried per target ("#execs").
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
seconds="${1:-60}"
build="$root/build-fuzz"
"$root/scripts/install_deps.sh" clang libclang-rt-14-dev
targets=(fuzz_safetensors fuzz_model_config fuzz_sharded_index fuzz_token_file fuzz_tokenizer)
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
  -DTENSORPAR_SANITIZE=fuzzer -DTENSORPAR_TESTS=OFF -DTENSORPAR_BENCH=OFF >/dev/null
cmake --build "$build" -j "$(nproc)" --target "${targets[@]}"
status=0
for t in "${targets[@]}"; do
  mkdir -p "$build/corpus/$t"
  log="$build/$t.log"
  if (cd "$build" && "./fuzz/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -artifact_prefix="$build/crash-$t-" -print_final_stats=1 "$build/corpus/$t" "$root/fuzz/corpus/$t") \
        >"$log" 2>&1; then
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
    echo "fuzz: $t: ${seconds} s, $execs inputs, no crash"
  else
    echo "fuzz: $t: FAILED (log $log):"
    grep -E '^(==[0-9]+==ERROR|SUMMARY|.*runtime error|artifact_prefix|Test unit written)' "$log" | head -20 || tail -30 "$log"
    status=1
  fi
done
exit $status
