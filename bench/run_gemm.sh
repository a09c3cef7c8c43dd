#!/usr/bin/env bash
# Run bench_gemm single-threaded and print one compact table: GFLOP/s and % of the per-core peak
# measured in the same process, per shape, for oneDNN f32, OpenBLAS f32 under each OPENBLAS_CORETYPE
# setting, and oneDNN bf16.
#
# OpenBLAS reads OPENBLAS_CORETYPE once, when the library loads, so each setting is its own process:
#   inherited : whatever the caller's environment has (this machine's shell exports Haswell!)
#   autodetect: variable removed (0.3.21 detects Zen 5 as Cooperlake: AVX-512 kernels)
#   SkylakeX  : forced AVX-512 kernels
# Usage: bench/run_gemm.sh [build-dir] [extra benchmark args, e.g. --benchmark_min_time=0.5]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-$here/../build}
shift || true
bin=$build/bench/bench_gemm
[[ -x $bin ]] || { echo "no $bin: make -C $build bench_gemm" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
common=(--benchmark_min_time=0.2 --benchmark_out_format=json "$@")

inherited=${OPENBLAS_CORETYPE-}
echo "running oneDNN f32/bf16 and OpenBLAS (inherited OPENBLAS_CORETYPE='${inherited:-unset}')..." >&2
"$bin" "${common[@]}" --benchmark_out="$out/inherited.json" >/dev/null 2>&1
echo "running OpenBLAS with OPENBLAS_CORETYPE unset (autodetect)..." >&2
env -u OPENBLAS_CORETYPE "$bin" "${common[@]}" --benchmark_filter=openblas --benchmark_out="$out/autodetect.json" \
  >/dev/null 2>&1
echo "running OpenBLAS with OPENBLAS_CORETYPE=SkylakeX..." >&2
OPENBLAS_CORETYPE=SkylakeX "$bin" "${common[@]}" --benchmark_filter=openblas --benchmark_out="$out/skylakex.json" \
  >/dev/null 2>&1

python3 - "$out" <<'PY'
import json, sys, os
d = sys.argv[1]
runs = {k: json.load(open(os.path.join(d, k + ".json"))) for k in ("inherited", "autodetect", "skylakex")}
ctx = {k: r["context"] for k, r in runs.items()}
cols = [("onednn_f32", "inherited", "oneDNN f32"),
        ("openblas_f32", "inherited", "OpenBLAS " + ctx["inherited"]["openblas_corename"] + " (env " + ctx["inherited"]["OPENBLAS_CORETYPE"] + ")"),
        ("openblas_f32", "autodetect", "OpenBLAS " + ctx["autodetect"]["openblas_corename"] + " (auto)"),
        ("openblas_f32", "skylakex", "OpenBLAS " + ctx["skylakex"]["openblas_corename"] + " (forced)"),
        ("onednn_bf16", "inherited", "oneDNN bf16")]
cell = {}
shapes = []
for run, r in runs.items():
    for b in r["benchmarks"]:
        _, lib, name, tr, dims, _ = b["name"].split("/")
        key = f"{name} {tr} {dims}"
        if key not in shapes: shapes.append(key)
        cell[(lib, run, key)] = f'{b["GFLOP/s"]:5.0f} {b["%peak"]:3.0f}% ({b["%peak_best"]:3.0f}%)'
for run, c in ctx.items():
    print(f'# {run}: peak f32 {c["peak_f32_gflops_per_core"]} GFLOP/s/core, bf16 {c["peak_bf16_gflops_per_core"]}; '
          f'load avg {c.get("load_avg", "?")}')
print("# cells: mean GFLOP/s, its % of the peak of the same data type measured in the same process,")
print("#        and (in brackets) the % of peak of the fastest call, less sensitive to other load")
w = max(len(s) for s in shapes)
print(f'{"shape (M x N x K)":<{w}} | ' + " | ".join(f"{h:>24}" for _, _, h in cols))
for s in shapes:
    print(f"{s:<{w}} | " + " | ".join(f'{cell.get((l, r, s), "-"):>24}' for l, r, _ in cols))
PY
