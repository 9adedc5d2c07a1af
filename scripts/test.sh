#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs the Debian packages it needs, builds shoal and runs
# every test with ctest (unit, simulator, multi-process, C99 API, install, tool smoke tests), runs
# the fuzz targets briefly, then builds and runs the suite again under ASan+UBSan and under TSan,
# each in its own build folder.
#
#   scripts/test.sh                          everything (about 20-25 minutes on 2 cores)
#   SHOAL_SANITIZERS=none scripts/test.sh    the plain build only (a few minutes)
#   SHOAL_FUZZ=0 scripts/test.sh             skips the short fuzz run (about 3.5 minutes)
#   SHOAL_BUILD_ROOT=... scripts/test.sh     where the build folders go (default build/)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/install-deps.sh

root=${SHOAL_BUILD_ROOT:-build}
jobs=$(nproc)
suite_start=$(date +%s)

# run_suite NAME SANITIZE: configure, build and test one build folder.
run_suite() {
  local name=$1 sanitize=$2 dir="$root/$1" start
  start=$(date +%s)
  echo "=== $name build (sanitizers: ${sanitize:-none})"
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSHOAL_SANITIZE="$sanitize" >/dev/null
  cmake --build "$dir" -j "$jobs"
  echo "=== $name build: $(( $(date +%s) - start )) s"
  # Unit and simulator tests run in parallel; multi-process tests and tool smoke tests are
  # RUN_SERIAL because they start many processes on a 2-core machine.
  ctest --test-dir "$dir" --output-on-failure -j "$jobs" --timeout 900
  echo "=== $name: $(( $(date +%s) - start )) s"
}

run_suite ci ""
# A short fixed-seed run of every fuzz target and a replay of the saved crash inputs
# (docs/hardening.md); SHOAL_FUZZ=0 skips it.
if [[ ${SHOAL_FUZZ:-1} != 0 ]]; then
  start=$(date +%s)
  echo "=== fuzz (short run)"
  scripts/fuzz.sh --short --build-dir "$root/fuzz"
  echo "=== fuzz: $(( $(date +%s) - start )) s"
fi
case "${SHOAL_SANITIZERS:-asan tsan}" in
  none) ;;
  *)
    for s in ${SHOAL_SANITIZERS:-asan tsan}; do
      case "$s" in
        asan) run_suite asan "address,undefined" ;;
        tsan) run_suite tsan "thread" ;;
        *) echo "unknown sanitizer '$s' (use asan, tsan or none)" >&2; exit 64 ;;
      esac
    done
    ;;
esac
echo "suite: $(( $(date +%s) - suite_start )) s"
