#!/usr/bin/env bash
# Installs what is needed, builds, and runs every test (CTest; MPI tests at 1, 2, 3 and 4 ranks).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
"$root/scripts/install_deps.sh"
"$root/scripts/build.sh" -DTENSORPAR_BENCH=OFF
cd "$root/build"
ctest --output-on-failure --timeout 300 "$@"
