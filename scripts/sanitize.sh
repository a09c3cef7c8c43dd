#!/usr/bin/env bash
# Builds the tests with sanitizers in a separate build directory and runs them:
#   scripts/sanitize.sh address [ctest args]   ASan + UBSan, Debug (-O0), in build-asan/
#   scripts/sanitize.sh thread  [ctest args]   TSan, Debug, in build-tsan/
# Debug on purpose: without optimisation the kernels round differently (no FMA contraction, other
# summation orders), so this run also checks that the tests' tolerances are error bounds, not
# numbers fitted to one compiler's output.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
kind="${1:?usage: scripts/sanitize.sh address|thread [ctest args]}"
shift
case "$kind" in
  address) build="$root/build-asan" ;;
  thread) build="$root/build-tsan" ;;
  *) echo "scripts/sanitize.sh: unknown sanitizer '$kind' (address or thread)" >&2; exit 2 ;;
esac
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
"$root/scripts/install_deps.sh"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Debug -DTENSORPAR_SANITIZE="$kind" -DTENSORPAR_TESTS=ON \
  -DTENSORPAR_BENCH=OFF >/dev/null
cmake --build "$build" -j "$(nproc)"
# Leaks (src/tensorpar/core/leak_check.hpp): blocks MPI_Init allocates are not reported, and the check
# runs just before MPI_Finalize, while Open MPI's state is still reachable and its plugins loaded. The
# few blocks Open MPI's own threads leak by then are allocated in its libraries, which lsan.supp names
# (and nothing else), so the first frame of the fast frame-pointer unwinder is enough to match them.
# Before, every malloc was unwound through DWARF (fast_unwind_on_malloc=0), ~0.5 s per process.
export ASAN_OPTIONS="abort_on_error=1:detect_stack_use_after_return=1:strict_string_checks=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export LSAN_OPTIONS="suppressions=$root/scripts/lsan.supp:print_suppressions=0${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
export TSAN_OPTIONS="halt_on_error=0:second_deadlock_stack=1${TSAN_OPTIONS:+:$TSAN_OPTIONS}"
cd "$build"
ctest --output-on-failure --no-tests=error --timeout 900 -j "$(nproc)" "$@"
