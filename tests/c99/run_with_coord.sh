#!/usr/bin/env bash
# Usage: run_with_coord.sh COORD_BIN PROGRAM [ARGS...]
# Starts shoal-coord on an OS-chosen port of 127.0.0.1, runs PROGRAM ARGS... PORT, and stops the
# coordinator on every exit path.
set -u
coord=$1; shift
dir=$(mktemp -d)
pid=""
cleanup() { [[ -n $pid ]] && kill -9 "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT INT TERM
"$coord" --host 127.0.0.1 --port 0 --port-file "$dir/port" --log-level warn >"$dir/coord.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do [[ -s $dir/port ]] && break; sleep 0.05; done
[[ -s $dir/port ]] || { echo "shoal-coord did not start"; cat "$dir/coord.log"; exit 1; }
timeout -k 5 60 "$@" "$(cat "$dir/port")"
rc=$?
((rc != 0)) && { echo "--- coordinator log"; tail -20 "$dir/coord.log"; }
exit $rc
