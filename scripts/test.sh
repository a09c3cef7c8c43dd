#!/usr/bin/env bash
# Installs what is needed, builds, and runs every test (CTest; MPI tests at 1, 2, 3 and 4 ranks).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
"$root/scripts/install_deps.sh"
# TESTS=ON every time: scripts/demo.sh leaves TENSORPAR_TESTS=OFF in build/'s CMake cache, and a
# test command that then finds no test must fail, not print "No tests were found!!!" and pass.
"$root/scripts/build.sh" -DTENSORPAR_BENCH=OFF -DTENSORPAR_TESTS=ON
cd "$root/build"
ctest --output-on-failure --no-tests=error --timeout 600 -j "$(nproc)" "$@"
