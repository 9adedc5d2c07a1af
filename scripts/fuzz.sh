#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz (clang, ASan+UBSan, docs/hardening.md) and runs each
# for a while, one after the other, on one core each.
#
#   scripts/fuzz.sh                  the long run: 300 s per target (30 minutes for the six)
#   scripts/fuzz.sh --seconds N      N seconds per target
#   scripts/fuzz.sh --short          the suite's run: 15 s per target with -seed=1 from the seed
#                                    corpus alone, then every input under tests/fuzz/regressions
#   scripts/fuzz.sh --targets "a b"  only these targets (names without _fuzz are fine)
#   scripts/fuzz.sh --build-dir DIR  where the build goes (default build/fuzz)
#
# For each target it prints the executions, executions per second, coverage (cov: edges, ft:
# features, as libFuzzer counts them) and crashes. It exits non-zero on any crash, leak, timeout
# or out-of-memory, and keeps the input that caused it under DIR/crashes/<target>/. The long run
# keeps its corpus in DIR/corpus/<target>, so each long run starts where the last one ended.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds=""
short=0
build=build/fuzz
targets=""
while (($#)); do
  case "$1" in
    --short) short=1 ;;
    --seconds) seconds=$2; shift ;;
    --build-dir) build=$2; shift ;;
    --targets) targets=$2; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "unknown argument '$1' (see --help)" >&2; exit 64 ;;
  esac
  shift
done
if [[ -z $seconds ]]; then
  if ((short)); then seconds=15; else seconds=300; fi
fi

if ! command -v clang++ >/dev/null; then
  echo "clang++ not found: run scripts/install-deps.sh" >&2
  exit 1
fi
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DSHOAL_FUZZ=ON -DSHOAL_BUILD_TESTS=OFF -DSHOAL_BUILD_TOOLS=OFF >/dev/null
cmake --build "$build" -j "$(nproc)" --target shoal_fuzz
bin=$build/tests/fuzz

if [[ -z $targets ]]; then
  targets=$(cd tests/fuzz && ls ./*_fuzz.cc | sed 's|^\./||; s|\.cc$||')
fi
rm -rf "$bin/seeds"
"$bin/shoal_fuzz_seeds" "$bin/seeds" >/dev/null

failed=0
report=()
for t in $targets; do
  [[ $t == *_fuzz ]] || t=${t}_fuzz
  [[ -x $bin/$t ]] || { echo "no fuzz target $t" >&2; exit 64; }
  crashes=$build/crashes/$t
  mkdir -p "$crashes"
  if ((short)); then
    corpus=$build/short-corpus/$t  # a fresh corpus: the same seeds, the same start every time
    rm -rf "$corpus"
    seed=(-seed=1)
  else
    corpus=$build/corpus/$t
    seed=()
  fi
  mkdir -p "$corpus"
  log=$build/logs/$t.log
  mkdir -p "$(dirname "$log")"
  before=$(ls "$crashes" | wc -l)
  echo "=== $t: $seconds s"
  status=0
  "$bin/$t" "${seed[@]}" -max_total_time="$seconds" -timeout=10 -print_final_stats=1 \
    -artifact_prefix="$crashes/" "$corpus" "$bin/seeds/$t" >"$log" 2>&1 || status=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]* ft: [0-9]*' "$log" | tail -1 | sed 's/cov: //; s/ ft://')
  found=$(( $(ls "$crashes" | wc -l) - before ))
  if ((status != 0)); then
    failed=1
    ((found > 0)) || found=1
    echo "!!! $t failed (exit $status); the last lines of $log:"
    grep -E 'ERROR|fuzz property|SHOAL_CHECK|runtime error|Test unit written' "$log" |
      tail -5 || true
  fi
  report+=("$(printf '%-20s %8s %12s %10s %8s %8s %8s' "$t" "$seconds" "${execs:-0}" \
    "${rate:-0}" "${cov% *}" "${cov#* }" "$found")")
done

if ((short)); then
  for dir in tests/fuzz/regressions/*/; do
    [[ -d $dir ]] || continue
    t=$(basename "$dir")
    inputs=("$dir"*)
    [[ -e ${inputs[0]} ]] || continue
    echo "=== $t: ${#inputs[@]} regression inputs"
    if ! "$bin/$t" -runs=1 "${inputs[@]}" >"$build/logs/$t.regressions.log" 2>&1; then
      failed=1
      echo "!!! $t fails on a regression input:"
      grep -E 'Running:|fuzz property|SHOAL_CHECK|runtime error|ERROR' \
        "$build/logs/$t.regressions.log" | tail -4 || true
    fi
  done
fi

echo
printf '%-20s %8s %12s %10s %8s %8s %8s\n' target seconds execs exec/s cov ft crashes
printf '%s\n' "${report[@]}"
if ((failed)); then
  echo "fuzzing found crashes; inputs under $build/crashes/ (docs/hardening.md: replay one with" >&2
  echo "$bin/<target> FILE, shrink it, keep it in tests/fuzz/regressions/<target>/)" >&2
  exit 1
fi
