#!/usr/bin/env bash
# Every throughput target of docs/performance.md (issue 13) in one run on this machine: tensorpar's
# `bench --json` in each configuration, RUNS times each (median reported), interleaved with the
# PyTorch Megatron-style baseline (../shared/bench/torch_gpt_tp.py) in f32 and bf16 autocast, so the
# ratios compare runs minutes apart. Needs a quiet machine: other load skews every number.
#   bench/run_performance.sh [build-dir] [runs]          (defaults: build, 5)
# Environment: GPT2_SMALL=0 skips the 124M model (about 5 min of the ~20 of a quiet 2-core run);
# TORCH=0 skips PyTorch. Prints one line per run as it goes, then the summary table (markdown).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$(cd "${1:-$root/build}" && pwd)"
runs="${2:-5}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# the baseline runs on Debian's PyTorch (python3-torch, for the system /usr/bin/python3)
if [ "${TORCH:-1}" = 1 ] && ! /usr/bin/python3 -c "import torch" 2>/dev/null; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3-torch >/dev/null
fi
exec python3 - "$build/tensorpar" "$runs" "$root/../shared/bench/torch_gpt_tp.py" "${GPT2_SMALL:-1}" "${TORCH:-1}" <<'PY'
import json, os, re, statistics, subprocess, sys

exe, runs, torch_script, gpt2_small, use_torch = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4] == "1", sys.argv[5] == "1"

def bench(ranks, threads, preset, *flags):
    # one rank per core pinned; a single rank with two threads must not be pinned to one core
    bind = "none" if threads > 1 else "core"
    steps = ["--steps", "3", "--warmup", "1"] if preset == "gpt2-small" else ["--steps", "5"]
    cmd = ["mpirun", "-np", str(ranks), "--bind-to", bind, exe, "--threads", str(threads), "bench", "--preset", preset,
           *steps, "--json", *flags]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])

avx512 = " avx512f " in open("/proc/cpuinfo").read().replace("\n", " ")

def torch(ranks, threads, bf16):
    env = dict(os.environ, BF16="1" if bf16 else "0")
    # see bench/README.md: not the Haswell these machines export, where the CPU has AVX-512; elsewhere
    # (an AVX2-only Zen 3) SkylakeX would be an illegal instruction, and OpenBLAS's own choice is right
    if avx512:
        env["OPENBLAS_CORETYPE"] = "SkylakeX"
    else:
        env.pop("OPENBLAS_CORETYPE", None)
    out = subprocess.run(["/usr/bin/python3", torch_script, str(ranks), str(threads)], check=True, capture_output=True,
                         text=True, env=env).stdout
    return {"tokens_per_s": float(re.search(r"tokens/s=([0-9.]+)", out).group(1))}

# (label, kind, ranks, threads, preset or bf16, flags, target: (field, minimum) or None)
configs = [
    ("tensorpar f32 gpt-bench TP=2", "tp", 2, 1, "gpt-bench", [], ("mfu", 0.87)),
    ("tensorpar bf16 gpt-bench TP=2", "tp", 2, 1, "gpt-bench", ["--precision", "bf16"], ("mfu_bf16", 0.80)),
    ("tensorpar f32 gpt-bench TP=1 x 2 threads", "tp", 1, 2, "gpt-bench", [], ("mfu", 0.87)),
    ("tensorpar bf16 gpt-bench TP=1 x 2 threads", "tp", 1, 2, "gpt-bench", ["--precision", "bf16"], ("mfu_bf16", 0.80)),
]
if gpt2_small:
    configs += [
        ("tensorpar f32 gpt2-small TP=2", "tp", 2, 1, "gpt2-small", [], ("mfu", 0.85)),
        ("tensorpar bf16 gpt2-small TP=2", "tp", 2, 1, "gpt2-small", ["--precision", "bf16"], ("mfu_bf16", 0.75)),
        ("tensorpar f32 gpt2-small TP=1 x 2 threads", "tp", 1, 2, "gpt2-small", [], ("mfu", 0.85)),
        ("tensorpar bf16 gpt2-small TP=1 x 2 threads", "tp", 1, 2, "gpt2-small", ["--precision", "bf16"], ("mfu_bf16", 0.75)),
    ]
have_torch = subprocess.run(["/usr/bin/python3", "-c", "import torch"], capture_output=True).returncode == 0
if use_torch and not (have_torch and os.path.exists(torch_script)):
    print(f"PyTorch baselines skipped: /usr/bin/python3 cannot import torch or {torch_script} is missing", flush=True)
# Without a bf16 dot product (AVX2 only) PyTorch's bf16 autocast is no baseline: 26 tokens/s at TP=2
# on an AVX2 Zen 3 where its f32 made 519, so one run takes ~7 minutes. Skipped there, said so.
cpu_bf16 = " avx512_bf16 " in open("/proc/cpuinfo").read().replace("\n", " ")
if use_torch and have_torch and os.path.exists(torch_script):
    configs += [
        ("PyTorch f32 gpt-bench TP=2 (gloo)", "torch", 2, 1, False, [], None),
        ("PyTorch bf16 autocast gpt-bench TP=2 (gloo)", "torch", 2, 1, True, [], None),
        ("PyTorch f32 gpt-bench TP=1 x 2 threads", "torch", 1, 2, False, [], None),
        ("PyTorch bf16 autocast gpt-bench TP=1 x 2 threads", "torch", 1, 2, True, [], None),
    ]
    if not cpu_bf16:
        print("PyTorch bf16 autocast skipped: this CPU has no AVX512-BF16, where it runs at ~1/20 of its f32",
              flush=True)
        configs = [c for c in configs if not (c[1] == "torch" and c[4])]

results = {c[0]: [] for c in configs}
for r in range(runs):  # interleaved: a slow minute of the machine hits every configuration alike
    for label, kind, ranks, threads, what, flags, _ in configs:
        res = bench(ranks, threads, what, *flags) if kind == "tp" else torch(ranks, threads, what)
        results[label].append(res)
        print(f"run {r + 1}/{runs} {label}: {res['tokens_per_s']:.0f} tokens/s"
              + (f", MFU {100 * res['mfu']:.1f}%" if "mfu" in res else "")
              + (f", bf16 MFU {100 * res['mfu_bf16']:.1f}%" if res.get("mfu_bf16") else ""), flush=True)

def med(label, field):
    vals = [r[field] for r in results[label] if field in r]
    return statistics.median(vals) if vals else None

print(f"\nmedian of {runs} runs each, interleaved\n")
print("| configuration | tokens/s | MFU (f32 peak) | MFU (bf16 peak) | comm share | peak RSS/rank | target | met |")
print("|---|---|---|---|---|---|---|---|")
for label, kind, ranks, threads, what, flags, target in configs:
    tok = med(label, "tokens_per_s")
    cells = [label, f"{tok:.0f}"]
    if kind == "tp":
        m16 = med(label, "mfu_bf16")
        cells += [f"{100 * med(label, 'mfu'):.1f}%", f"{100 * m16:.1f}%" if m16 else "-",
                  f"{100 * med(label, 'comm_fraction'):.1f}%", f"{med(label, 'peak_rss_mb'):.0f} MB"]
        field, minimum = target
        value = med(label, field)
        cells += [f"{field} >= {100 * minimum:.0f}%", "yes" if value and value >= minimum else
                  "n/a: no bf16 dot product on this CPU" if field == "mfu_bf16" else "no"]
    else:
        cells += ["", "", "", "", "", ""]
    print("| " + " | ".join(cells) + " |")

# the ratios against PyTorch, each side at the same ranks x threads and precision
pairs = [("tensorpar f32 gpt-bench TP=2", "PyTorch f32 gpt-bench TP=2 (gloo)", None),
         ("tensorpar bf16 gpt-bench TP=2", "PyTorch bf16 autocast gpt-bench TP=2 (gloo)", 2.0),
         ("tensorpar bf16 gpt-bench TP=2", "PyTorch f32 gpt-bench TP=2 (gloo)", None),
         ("tensorpar f32 gpt-bench TP=1 x 2 threads", "PyTorch f32 gpt-bench TP=1 x 2 threads", None),
         ("tensorpar bf16 gpt-bench TP=1 x 2 threads", "PyTorch bf16 autocast gpt-bench TP=1 x 2 threads", 2.0)]
if any(p[1] in results for p in pairs):
    # "needs": the share of the bf16 peak tensorpar would have to reach for the target ratio
    print("\n| tensorpar | against | ratio of median tokens/s | target | the target needs (bf16 peak) |")
    print("|---|---|---|---|---|")
    for mine, theirs, minimum in pairs:
        if theirs in results and mine in results:
            ratio = med(mine, "tokens_per_s") / med(theirs, "tokens_per_s")
            goal = f">= {minimum:.1f}x: {'yes' if ratio >= minimum else 'no'}" if minimum else ""
            needs = f"{100 * minimum / ratio * med(mine, 'mfu_bf16'):.0f}%" if minimum and med(mine, "mfu_bf16") else ""
            print(f"| {mine} | {theirs} | {ratio:.2f}x | {goal} | {needs} |")
PY
