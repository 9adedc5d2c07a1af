#!/usr/bin/env bash
# The main job: installs the Debian packages it needs, builds shoal, and runs the local swarm demo
# (tools/demo): a coordinator and 4 peers on 127.0.0.1 training a shared model (sync, all-reduce,
# update) while one peer is killed, the coordinator is killed and restarted, and another peer joins
# and receives the model. Extra arguments go to shoal-swarm (see `shoal-swarm --help`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/install-deps.sh
build=${SHOAL_BUILD_DIR:-build/release}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSHOAL_BUILD_TESTS=OFF >/dev/null
cmake --build "$build" -j "$(nproc)" --target shoal-swarm shoal-coord
exec "$build/tools/demo/shoal-swarm" "$@"
