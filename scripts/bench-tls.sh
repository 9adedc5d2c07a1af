#!/usr/bin/env bash
# The cost of TLS on 127.0.0.1: shoal-bench in local mode, the same all-reduce with and without
# --tls, alternating (plain, tls, plain, tls, ...) so that a change of machine load hits both
# alike. Prints every run's busbw, the median of each and the ratio tls/plain.
#
#   scripts/bench-tls.sh [--build DIR] [--n N] [--size BYTES] [--streams K] [--rounds R]
# The defaults are the figure of the TLS note: 64 MiB of f32, N = 4, the coordinator's default K.
set -euo pipefail

build=build
n=4
size=64M
streams=2  # shoal-coord's default --streams-per-link
rounds=3
while (($#)); do
  case $1 in
    --build) build=$2; shift 2 ;;
    --n) n=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --streams) streams=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 64 ;;
  esac
done
bench=$build/tools/bench/shoal-bench
[[ -x $bench ]] || { echo "build $build first (needs shoal-bench, shoal-coord)" >&2; exit 1; }

field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p"; }
declare -a plain tls
echo "# $(date -u +%FT%TZ) $(uptime)"
for ((r = 0; r < rounds; r++)); do
  for mode in plain tls; do
    flag=(); [[ $mode == tls ]] && flag=(--tls)
    line=$("$bench" --mode local --n "$n" --sizes "$size" --streams "$streams" --check last \
             "${flag[@]}" 2>/dev/null | grep '^lib=shoal' | head -1)
    [[ $line == *status=FAILED* || -z $line ]] && { echo "run failed ($mode): $line" >&2; exit 1; }
    busbw=$(field busbw_GBps <<<"$line")
    mean=$(field mean_s <<<"$line")
    echo "$mode round=$r busbw_GBps=$busbw mean_s=$mean"
    if [[ $mode == tls ]]; then tls+=("$busbw"); else plain+=("$busbw"); fi
  done
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
mp=$(median "${plain[@]}")
mt=$(median "${tls[@]}")
echo "n=$n size=$size K=$streams rounds=$rounds"
echo "busbw_GBps plain(median)=$mp tls(median)=$mt ratio_tls_over_plain=$(awk -v a="$mt" -v b="$mp" 'BEGIN{printf "%.3f", a/b}')"
echo "# $(uptime)"
