#!/usr/bin/env bash
# Shared-state sync figures on 127.0.0.1: a coordinator, H holders of a state of S bytes in T tensors
# and one joiner that starts from zeros, all shoal_sync_peer processes (tests/mp/sync_peer.cc).
#   step 0: the joiner receives the whole state from the holders (throughput from its transfer time)
#   steps 1..: nobody differs: the time of a no-change sync, hashing included, and the hash rate
#
#   scripts/bench-sync.sh [--build DIR] [--state BYTES] [--tensors T] [--holders H] [--steps N]
# BYTES takes K/M/G suffixes. The defaults are the issue's figure: 1 GiB in 200 tensors, 1 holder.
set -euo pipefail

build=build
state=1G
tensors=200
holders=1
steps=4
while (($#)); do
  case $1 in
    --build) build=$2; shift 2 ;;
    --state) state=$2; shift 2 ;;
    --tensors) tensors=$2; shift 2 ;;
    --holders) holders=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 64 ;;
  esac
done
coord_bin=$build/tools/coord/shoal-coord
peer_bin=$build/tests/mp/shoal_sync_peer
[[ -x $coord_bin && -x $peer_bin ]] || { echo "build $build first (needs shoal-coord, shoal_sync_peer)" >&2; exit 1; }

bytes=$(numfmt --from=iec "$state")
count=$((bytes / 4 / tensors))  # f32 elements per tensor
((count > 0)) || { echo "state too small for $tensors tensors" >&2; exit 64; }
layout=$(printf "f32:$count%.0s," $(seq "$tensors")); layout=${layout%,}
total=$((count * 4 * tensors))

dir=$(mktemp -d /tmp/shoal-bench-sync.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT INT TERM

"$coord_bin" --host 127.0.0.1 --port 0 --port-file "$dir/port" --log-level warn >"$dir/coord.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [[ -s $dir/port ]] && break; sleep 0.05; done
port=$(cat "$dir/port")
common=(--coord-port "$port" --expect $((holders + 1)) --layout "$layout" --steps "$steps" --no-check
        --timeout-ms 120000)
for h in $(seq "$holders"); do
  "$peer_bin" "${common[@]}" --revision 1 >"$dir/holder$h.out" 2>&1 &
  pids+=($!)
done
"$peer_bin" "${common[@]}" --zeros >"$dir/joiner.out" 2>&1 &
joiner=$!
pids+=($joiner)
if ! wait "$joiner"; then
  echo "the joiner failed:" >&2; cat "$dir/joiner.out" >&2; exit 1
fi
for p in "${pids[@]:1}"; do wait "$p" || { echo "a holder failed" >&2; cat "$dir"/holder*.out >&2; exit 1; }; done

field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p"; }
j0=$(grep '^SYNC step=0 ' "$dir/joiner.out")
[[ $(echo "$j0" | field status) == 0 ]] || { echo "joiner's first sync failed: $j0" >&2; exit 1; }
rx=$(echo "$j0" | field rx)
xfer_ms=$(echo "$j0" | field xfer_ms)
call_ms=$(echo "$j0" | field ms)
[[ $rx == "$total" ]] || { echo "the joiner received $rx bytes, not $total" >&2; exit 1; }
senders=$(echo "$j0" | field senders | tr ',' '\n' | wc -l)

echo "shared-state sync on 127.0.0.1: $(numfmt --to=iec "$total")B in $tensors tensors, $holders holder(s) + 1 joiner"
awk -v rx="$rx" -v ms="$xfer_ms" -v call="$call_ms" -v s="$senders" 'BEGIN {
  printf "joiner: received %d bytes from %d sender(s) in %.1f ms (transfer and hash check): %.2f GB/s (%.2f GiB/s); whole call %.1f ms\n",
         rx, s, ms, rx / ms / 1e6, rx / ms / 1.073741824e6, call }'
for f in "$dir/joiner.out" "$dir/holder1.out"; do
  who=$(basename "$f" .out)
  grep '^SYNC step=[1-9]' "$f" | while read -r line; do
    step=$(echo "$line" | field step); ms=$(echo "$line" | field ms); hash=$(echo "$line" | field hash_ms)
    rxs=$(echo "$line" | field rx); txs=$(echo "$line" | field tx)
    awk -v w="$who" -v st="$step" -v ms="$ms" -v h="$hash" -v b="$total" -v rx="$rxs" -v tx="$txs" 'BEGIN {
      printf "%s step %d (no change): sync %.1f ms, of which hashing %.1f ms (%.2f GB/s); moved rx=%d tx=%d\n",
             w, st, ms, h, b / h / 1e6, rx, tx }'
  done
done
