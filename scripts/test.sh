#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs the Debian packages it needs, builds shoal and runs
# every test with ctest (unit, simulator, multi-process, C99 API, install, tool smoke tests), runs
# the fuzz targets briefly, then builds and runs the suite again under ASan+UBSan and under TSan,
# each in its own build folder.
#
#   scripts/test.sh                          everything (about 37 minutes on 2 idle cores)
#   SHOAL_SANITIZERS=none scripts/test.sh    the plain build only (about 10 minutes)
#   SHOAL_FUZZ=0 scripts/test.sh             skips the short fuzz run (about 3.5 minutes)
#
# Clean clone, 2 idle cores, 2026-12-07: 2190 s in all; plain 570 s (build 359), fuzz 202 s,
# ASan+UBSan 721 s (build 461), TSan build 221 s + tests. The sanitizer builds compile at -O1 -g1
# (SHOAL_SANITIZE_OPT in CMakeLists.txt), half the time of -O2 -g.
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
