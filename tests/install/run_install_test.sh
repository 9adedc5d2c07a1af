#!/usr/bin/env bash
# Installs the build into a temporary prefix, builds tests/install/consumer against it with
# find_package(shoal), and runs the consumers. Usage: run_install_test.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1 src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
log="$tmp/log"
run() { "$@" >>"$log" 2>&1 || { echo "failed: $*"; cat "$log"; exit 1; }; }
run cmake --install "$build" --prefix "$tmp/prefix"
run cmake -S "$src/tests/install/consumer" -B "$tmp/consumer" -G Ninja \
  -DCMAKE_PREFIX_PATH="$tmp/prefix"
run cmake --build "$tmp/consumer"
LD_LIBRARY_PATH="$tmp/prefix/lib:$tmp/prefix/lib64:${LD_LIBRARY_PATH:-}" "$tmp/consumer/consumer_cxx"
"$tmp/consumer/consumer_static"
LD_LIBRARY_PATH="$tmp/prefix/lib:$tmp/prefix/lib64:${LD_LIBRARY_PATH:-}" "$tmp/consumer/consumer_c"
echo "installed package found and used by C and C++ consumers (shared and static)"
