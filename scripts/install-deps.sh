#!/usr/bin/env bash
# scripts/install-deps.sh - installs the Debian packages crouter needs, and only
# those that are missing.
#
# Usage: scripts/install-deps.sh [--bench]
#   --bench   also the benchmark's reference proxies and load generator
#             (haproxy, nginx-light, wrk, openssl), liburing-dev for
#             bench/floor_forward.c and valgrind for bench/profile
#
# Checks each package with dpkg-query; when something is missing it runs
# `apt-get update` once and installs the missing ones. Quiet and idempotent
# when everything is present. Runs as root (CI, containers) or through sudo.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config
  clang libclang-rt-14-dev llvm           # libFuzzer targets and sanitizers
  libnats-dev libmicrohttpd-dev libjansson-dev libcurl4-openssl-dev
  libyaml-dev liburcu-dev libssl-dev uuid-dev
  libcmocka-dev                           # unit tests
  nats-server curl procps                 # run.sh, integration tests
)
BENCH_PACKAGES=(haproxy nginx-light wrk openssl liburing-dev valgrind)

usage() {
  sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
}

want=("${PACKAGES[@]}")
for arg in "$@"; do
  case $arg in
    --bench) want+=("${BENCH_PACKAGES[@]}") ;;
    -h|--help) usage; exit 0 ;;
    *) printf 'install-deps.sh: unknown argument %s\n' "$arg" >&2; usage >&2; exit 2 ;;
  esac
done

is_installed() {
  [[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null) == installed ]]
}

missing=()
for p in "${want[@]}"; do
  is_installed "$p" || missing+=("$p")
done
((${#missing[@]} == 0)) && exit 0

if [[ $(id -u) == 0 ]]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo)
else
  printf 'install-deps.sh: missing packages: %s\n' "${missing[*]}" >&2
  printf 'install-deps.sh: not root and no sudo; install them as root and run again\n' >&2
  exit 1
fi

printf 'install-deps.sh: installing %s\n' "${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
