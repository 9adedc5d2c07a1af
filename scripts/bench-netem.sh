#!/usr/bin/env bash
# All-reduce over an emulated internet (shoal-netem, docs/netem.md): shoal with K = 1 and with the
# coordinator's default K streams per link, next to Gloo and Open MPI, every process in its own
# emulated host, over the same links in the same shoal-bench invocation, one invocation per rate.
# Each invocation prints busbw tables, busbw as % of the per-host cap, and shoal/peer ratios. These
# are the figures of docs/benchmarks.md, "All-reduce over the emulated internet" (issue 11): 4 hosts,
# 50 ms one-way (100 ms round trip), 200 Mbit/s and 1 Gbit/s per host, 256 MiB f32.
# Needs root and /dev/net/tun (exit 77 without them).
#
#   scripts/bench-netem.sh [--build DIR] [--rates "200mbit 1gbit"] [--delay 50ms] [--n 4]
#       [--sizes 256M] [--streams "1 DEFAULT"] [--peers "gloo mpi"]
#       [--gloo-algos "new_ring ring_chunked"] [--sysctl "KEY=VALUE ..."] [--iters 2] [--warmup 1]
#       [--batch 0] [--wait-idle 10] [--no-offload] [--out FILE] [-- more shoal-bench flags]
#
# The emulator runs with TUN offloads (shoal-netem up --offload, docs/netem.md), which it needs to
# forward 4 hosts x 1 Gbit/s on a 2-core machine; --no-offload: per-packet forwarding.
# --streams: DEFAULT stands for the coordinator's default K (read from `shoal-coord --help`).
# --sysctl sets per-namespace sysctls in every host for every library alike (shoal-bench
# --netem-sysctl), e.g. "net.ipv4.tcp_wmem=4096,16384,33554432" (commas for the spaces of a
# vector value). Result lines go to stdout and to --out (default: bench-netem-<date>.lines).
# --build defaults to $SHOAL_BUILD_DIR, else ./build. Time: at 200 Mbit/s one 256 MiB op over 4
# hosts takes 16 s at best, so a run (warm-up + iters ops) takes about a minute with the defaults
# (MPI two); 2026-12-07 on the idle 2-core machine with offloads: 6.9 min at 200 Mbit/s (streams
# "1 2"), 4.3 min at 1 Gbit/s (streams "1 2 4").
set -euo pipefail

build=${SHOAL_BUILD_DIR:-build}
rates="200mbit 1gbit"
delay=50ms
n=4
sizes=256M
streams="1 DEFAULT"
peers="gloo mpi"
gloo_algos="new_ring ring_chunked"
sysctl=""
iters=2
warmup=1
batch=0
wait_idle=10
out=""
offload=(--netem-offload)
extra=()
while (($#)); do
  case $1 in
    --build) build=$2; shift 2 ;;
    --rates) rates=$2; shift 2 ;;
    --delay) delay=$2; shift 2 ;;
    --n) n=$2; shift 2 ;;
    --sizes) sizes=$2; shift 2 ;;
    --streams) streams=$2; shift 2 ;;
    --peers) peers=$2; shift 2 ;;
    --gloo-algos) gloo_algos=$2; shift 2 ;;
    --sysctl) sysctl=$2; shift 2 ;;
    --iters) iters=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    --wait-idle) wait_idle=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --no-offload) offload=(); shift ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 64 ;;
  esac
done
bench=$build/tools/bench/shoal-bench
netem=$build/tools/netem/shoal-netem
coord=$build/tools/coord/shoal-coord
for b in "$bench" "$netem" "$coord"; do
  [[ -x $b ]] || { echo "build $build first (needs shoal-bench, shoal-netem, shoal-coord): no $b" >&2; exit 1; }
done
[[ $(id -u) == 0 && -w /dev/net/tun ]] || { echo "needs root and /dev/net/tun" >&2; exit 77; }

# The coordinator's default K, as its --help prints it: "--streams-per-link UINT:UINT in [1 - 64]=2".
default_k=$("$coord" --help | sed -n 's/.*--streams-per-link.*=\([0-9][0-9]*\)[[:space:]]*$/\1/p' | head -n1)
[[ -n $default_k ]] || { echo "cannot read the default K from $coord --help" >&2; exit 1; }
streams=${streams//DEFAULT/$default_k}
# Each K once, in order (K = 1 and a default of 1 would otherwise run twice).
streams=$(tr ' ' '\n' <<<"$streams" | awk 'NF && !seen[$0]++' | tr '\n' ' ')

out=${out:-bench-netem-$(date -u +%Y%m%dT%H%M%SZ).lines}
log() { printf '# %s\n' "$*" >&2; }

# shoal-bench stops its emulator and every process in it on SIGINT/SIGTERM; the script just ends.
trap 'exit 130' INT
trap 'exit 143' TERM

log "$(date -u +%FT%TZ) $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); default K=$default_k; lines to $out"
rc=0
for rate in $rates; do
  args=(--netem-delay "$delay" --netem-rate "$rate" --n "$n" --sizes "$sizes" --streams "$streams"
        --iters "$iters" --warmup "$warmup" --batch "$batch" --timeout-s 3600
        --op-timeout-ms 600000 --wait-idle "$wait_idle" --out "$out")
  [[ -n $peers ]] && args+=(--peers "$peers" --gloo-algos "$gloo_algos")
  [[ -n $sysctl ]] && args+=(--netem-sysctl "$sysctl")
  ((${#offload[@]})) && args+=("${offload[@]}")
  log "$(date -u +%FT%TZ) rate $rate, load $(cut -d' ' -f1-3 /proc/loadavg): $bench ${args[*]} ${extra[*]}"
  "$bench" "${args[@]}" "${extra[@]}" || rc=$?
  log "$(date -u +%FT%TZ) rate $rate done (exit $rc), load $(cut -d' ' -f1-3 /proc/loadavg)"
done
exit "$rc"
