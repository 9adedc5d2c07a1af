#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs the Debian packages it needs, builds shoal and runs
# every test with ctest (unit, simulator, multi-process, C99 API, tool smoke tests).
#
#   scripts/test.sh                  build in build/ci and run everything
#   SHOAL_BUILD_DIR=... scripts/test.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/install-deps.sh

build=${SHOAL_BUILD_DIR:-build/ci}
jobs=$(nproc)
start=$(date +%s)
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j "$jobs"
echo "build: $(( $(date +%s) - start )) s"

# Unit and simulator tests run in parallel; multi-process tests (label mp) run one at a time
# (RUN_SERIAL) because they start many processes on a 2-core machine.
ctest --test-dir "$build" --output-on-failure -j "$jobs" --timeout 900
echo "suite: $(( $(date +%s) - start )) s"
