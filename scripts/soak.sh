#!/usr/bin/env bash
# The long chaos soak (docs/chaos.md): builds shoal-chaos and runs it for 30 minutes with 6 peers
# (between 3 and 8) and a fault every 2-5 s, with a random seed that it prints at the start and in
# the summary. Needs root (the emulated network). Exit status: shoal-chaos's (0 PASS, 1 FAIL).
#
#   scripts/soak.sh                              30 minutes, a random seed
#   scripts/soak.sh --seed 123456                replay that seed's fault schedule
#   SHOAL_SOAK_SECONDS=600 scripts/soak.sh       10 minutes
#   SHOAL_BUILD_DIR=build/rel scripts/soak.sh    build and run in that folder (default build/soak)
#   SHOAL_BUILD_JOBS=2 scripts/soak.sh           compile jobs (default: nproc)
#   scripts/soak.sh --kinds kill,stop,coord      any other shoal-chaos flag (shoal-chaos --help)
#
# The output also goes to soak-<date>.log in the build folder; the records and logs of a run that
# fails are kept (the summary names the folder).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/install-deps.sh
build=${SHOAL_BUILD_DIR:-build/soak}
# An existing build folder keeps its own options (tests, sanitizers); a new one is a release build.
if [[ ! -f $build/CMakeCache.txt ]]; then
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSHOAL_BUILD_TESTS=OFF >/dev/null
fi
cmake --build "$build" -j "${SHOAL_BUILD_JOBS:-$(nproc)}" --target shoal-chaos shoal-coord shoal-netem
log="$build/soak-$(date +%Y%m%d-%H%M%S).log"
echo "soak: output also in $log"
set +e
"$build/tools/chaos/shoal-chaos" --seconds "${SHOAL_SOAK_SECONDS:-1800}" --peers 6 --min-peers 3 \
  --max-peers 8 --fault-min-s 2 --fault-max-s 5 "$@" 2>&1 | tee "$log"
exit "${PIPESTATUS[0]}"
