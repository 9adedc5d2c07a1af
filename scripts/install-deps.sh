#!/usr/bin/env bash
# Installs the Debian packages shoal needs to build, test and benchmark. Idempotent; skips apt when
# everything is present. Run as root (or with sudo available).
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config   # toolchain
  libasio-dev                                    # networking (standalone Asio)
  libspdlog-dev libfmt-dev                       # logging and formatting
  libcli11-dev                                   # command-line flags of the tools
  libxxhash-dev                                  # content hashes (shared state, tests)
  libssl-dev                                     # HMAC and TLS (hardening)
  libgtest-dev libgmock-dev libbenchmark-dev     # tests and micro-benchmarks
  # Fuzzing (scripts/fuzz.sh): libFuzzer comes with clang only. Debian's clang is 14, and its
  # libFuzzer and sanitizer runtimes are in libclang-rt-14-dev, which clang-14 only recommends.
  clang libclang-rt-14-dev
  iproute2 procps                                # network namespaces and process tools in tests
)
# Optional: the established libraries that shoal-bench measures side by side (shared/peers).
if [[ ${SHOAL_WITH_PEERS:-0} == 1 ]]; then
  PACKAGES+=(libgloo-dev libopenmpi-dev openmpi-bin)
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  exit 0
fi
SUDO=""
if [[ $(id -u) != 0 ]]; then
  command -v sudo >/dev/null || { echo "need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  SUDO=sudo
fi
echo "installing: ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
