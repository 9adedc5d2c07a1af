#!/usr/bin/env bash
# The emulator's own figures (docs/netem.md): for each (cap, one-way delay) it brings up 4 hosts and
# measures
#   - the idle round trip h0 <-> h1 (TCP connect and 1-byte ping-pong) against the configured one;
#   - the TCP throughput h0 -> h1 with 1 and with 4 streams, while h2 <-> h3 ping-pong over the same
#     forwarder gives the round trip of an unloaded link under that load (its excess over the
#     configured round trip is the delay error the load adds);
#   - the forwarder's own lateness (how long after its due time each packet was written).
# Run as root on a quiet machine (other load shows up as delay error):
#   tools/netem/figures.sh [SHOAL_NETEM_BIN] [SECONDS] ["CAP/DELAY ..."]
#   tools/netem/figures.sh build/ci/tools/netem/shoal-netem 10 "200mbit/50ms 1gbit/50ms unlimited/50ms unlimited/1ms"
#   UP_FLAGS="--spin-us 300" tools/netem/figures.sh ...   (extra flags for `up`)
set -euo pipefail
bin=${1:-build/ci/tools/netem/shoal-netem}
secs=${2:-10}
cases=${3:-"200mbit/50ms 1gbit/50ms unlimited/50ms unlimited/1ms"}
name=figures-$$
trap '"$bin" down --name "$name" >/dev/null 2>&1 || true' EXIT

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg); up flags: ${UP_FLAGS:-none}"
for c in $cases; do
  cap=${c%/*}
  delay=${c#*/}
  delay_ms=${delay%ms}
  # shellcheck disable=SC2086  # UP_FLAGS is a list of flags
  "$bin" up --name "$name" --hosts 4 --delay "$delay" --rate "$cap" --daemon ${UP_FLAGS:-} >/dev/null
  echo "== cap $cap, one-way $delay (configured round trip $((2 * delay_ms)) ms)"
  "$bin" probe --name "$name" --from 0 --to 1 --connects 10 --rtts 20 --seconds 0 | sed 1d |
    sed 's/^/idle  /'
  # Ping-pong samples that fit in the bulk run (each takes one round trip).
  samples=$((secs * 1000 * 8 / 10 / (2 * delay_ms + 1)))
  for streams in 1 4; do
    "$bin" stats --name "$name" --reset >/dev/null
    "$bin" probe --name "$name" --from 2 --to 3 --connects 0 --rtts "$samples" --seconds 0 \
      --timeout-ms 10000 >"/tmp/$name.rtt" &
    rtt_pid=$!
    "$bin" probe --name "$name" --from 0 --to 1 --connects 0 --rtts 0 --seconds "$secs" \
      --streams "$streams" | sed 1d | sed "s/^/bulk  /"
    wait "$rtt_pid"
    sed 1d "/tmp/$name.rtt" | sed 's/^/      under load: /'
    "$bin" stats --name "$name" | grep -E '^lateness' | sed 's/^/      forwarder /'
  done
  "$bin" down --name "$name" >/dev/null
done
rm -f "/tmp/$name.rtt"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
