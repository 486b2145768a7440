#!/usr/bin/env bash
# scripts/soak.sh - the soak: a Release build of crouter under steady load
# (wrk when installed, else the C load client) for SOAK_MINUTES, its RSS
# sampled every 10 s; fails when RSS grows 1% or more after warm-up. Prints
# the series. Optionally also the full load test (10,000 keep-alive + 1,000
# slowloris connections, p99 within 2x).
#
# Usage: scripts/soak.sh [--with-load]
# Environment:
#   SOAK_MINUTES=10          length of the run
#   SOAK_WARMUP_SECONDS=60   samples before this are warm-up
#   SOAK_NO_WRK=1            use the C load client even when wrk is installed
#   CROUTER_NO_INSTALL=1     skip scripts/install-deps.sh
# Build directory: build-soak/ (Release).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BUILD_DIR=build-soak
export SOAK_MINUTES=${SOAK_MINUTES:-10}
[[ $SOAK_MINUTES =~ ^[0-9]+$ && $SOAK_MINUTES -ge 1 ]] || { echo "soak.sh: SOAK_MINUTES must be a whole number >= 1" >&2; exit 2; }
with_load=0
for a in "$@"; do
  case $a in
    --with-load) with_load=1 ;;
    *) echo "usage: scripts/soak.sh [--with-load]" >&2; exit 2 ;;
  esac
done

[[ ${CROUTER_NO_INSTALL:-0} == 1 ]] || scripts/install-deps.sh

cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DCROUTER_TESTS=ON >/dev/null
cmake --build "$BUILD_DIR" -j"$(nproc 2>/dev/null || echo 2)" --target soak_rss integration_load crouter fake_backend

rc=0
printf '\n=== soak: %s minute(s), Release build\n' "$SOAK_MINUTES"
"$BUILD_DIR/test/soak/soak_rss" || rc=1
if ((with_load)); then
  printf '\n=== load: 10,000 keep-alive + 1,000 slowloris connections\n'
  CROUTER_LOAD_CONNS=10000 CROUTER_LOAD_SLOWLORIS=1000 "$BUILD_DIR/test/integration/integration_load" || rc=1
fi
printf '\nsoak: %s\n' "$([[ $rc == 0 ]] && echo passed || echo FAILED)"
exit $rc
