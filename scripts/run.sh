#!/usr/bin/env bash
# scripts/run.sh - installs what is missing, builds crouter (Release, build/)
# and runs it with config/crouter.yml.
#
# Usage: scripts/run.sh [extra crouter arguments...]
# Environment:
#   CROUTER_CONFIG=FILE     config file (default config/crouter.yml)
#   CROUTER_NO_INSTALL=1    skip scripts/install-deps.sh
#   CROUTER_BUILD_DIR=DIR   build directory (default build)
#
# When nothing listens on 127.0.0.1:4222, a local nats-server is started
# there for crouter (log in <build dir>/nats-server.log) and stopped, by its
# PID, when crouter exits. SIGINT, SIGTERM, SIGHUP and SIGUSR1 sent to this
# script are passed on to crouter (SIGINT as SIGTERM: a graceful stop).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

CONFIG=${CROUTER_CONFIG:-config/crouter.yml}
BUILD_DIR=${CROUTER_BUILD_DIR:-build}
NATS_HOST=127.0.0.1
NATS_PORT=4222

say() { printf 'run.sh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

[[ ${CROUTER_NO_INSTALL:-0} == 1 ]] || scripts/install-deps.sh
[[ -f $CONFIG ]] || die "config file $CONFIG not found (set CROUTER_CONFIG=FILE)"

jobs=$(nproc 2>/dev/null || echo 2)
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD_DIR" -j"$jobs" --target crouter crouterctl
CROUTER_BIN="$BUILD_DIR/crouter"
[[ -x $CROUTER_BIN ]] || die "$CROUTER_BIN was not built"

"$CROUTER_BIN" --check-config -c "$CONFIG" || die "$CONFIG does not validate"

# True when something accepts TCP connections on host:port.
listening() {
  # shellcheck disable=SC2016 # $1 and $2 expand in the inner bash
  timeout 1 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

if listening "$NATS_HOST" "$NATS_PORT"; then
  say "using the NATS server already listening on $NATS_HOST:$NATS_PORT"
  exec "$CROUTER_BIN" -c "$CONFIG" "$@"
fi

command -v nats-server >/dev/null || die "nats-server not installed (apt-get install nats-server)"

NATS_PID=""
CROUTER_PID=""
# shellcheck disable=SC2317 # called from the EXIT trap
cleanup() {
  if [[ -n $CROUTER_PID ]] && kill -0 "$CROUTER_PID" 2>/dev/null; then
    kill -TERM "$CROUTER_PID" 2>/dev/null || true
    wait "$CROUTER_PID" 2>/dev/null || true
  fi
  if [[ -n $NATS_PID ]]; then
    kill -TERM "$NATS_PID" 2>/dev/null || true
    wait "$NATS_PID" 2>/dev/null || true
    say "stopped nats-server (pid $NATS_PID)"
  fi
}
trap cleanup EXIT

# setsid: the children get their own process group, so a Ctrl-C in the
# terminal reaches only this script, which then stops crouter gracefully
# (crouter finishes in-flight requests) before stopping nats-server.
setsid nats-server -a "$NATS_HOST" -p "$NATS_PORT" -l "$BUILD_DIR/nats-server.log" </dev/null &
NATS_PID=$!
for _ in $(seq 50); do
  listening "$NATS_HOST" "$NATS_PORT" && break
  kill -0 "$NATS_PID" 2>/dev/null || die "nats-server exited; see $BUILD_DIR/nats-server.log"
  sleep 0.1
done
listening "$NATS_HOST" "$NATS_PORT" || die "nats-server did not listen on $NATS_HOST:$NATS_PORT within 5 s"
say "started nats-server on $NATS_HOST:$NATS_PORT (pid $NATS_PID, log $BUILD_DIR/nats-server.log)"

# shellcheck disable=SC2317 # called from signal traps
forward() {
  if [[ -n $CROUTER_PID ]]; then kill -"$1" "$CROUTER_PID" 2>/dev/null || true; fi
}
trap 'forward TERM' INT TERM
trap 'forward HUP' HUP
trap 'forward USR1' USR1

setsid "$CROUTER_BIN" -c "$CONFIG" "$@" </dev/null &
CROUTER_PID=$!
say "crouter running (pid $CROUTER_PID, config $CONFIG); Ctrl-C stops it"

# wait returns early (status > 128) whenever a trapped signal arrives; keep
# waiting until crouter itself has exited.
status=0
while :; do
  if wait "$CROUTER_PID"; then status=0; else status=$?; fi
  kill -0 "$CROUTER_PID" 2>/dev/null || break
done
CROUTER_PID=""
exit "$status"
