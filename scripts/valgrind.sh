#!/usr/bin/env bash
# scripts/valgrind.sh - a short real scenario with crouter under valgrind:
# nats-server, fake backends, a few hundred requests (keep-alive, uploads,
# downloads, 404, 502, 400, a client leaving mid-upload, sticky sessions,
# WebSocket upgrades, registration churn, status API), then SIGTERM. Fails
# on any valgrind error or definite leak (valgrind --error-exitcode=1
# --errors-for-leak-kinds=definite makes crouter exit 1) or a failed step.
#
# Usage: scripts/valgrind.sh
# Environment: CROUTER_NO_INSTALL=1 skips install-deps.sh; VALGRIND_ARGS
# adds valgrind options. Build directory: build-valgrind/ (no sanitizers).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BUILD_DIR=build-valgrind

[[ ${CROUTER_NO_INSTALL:-0} == 1 ]] || scripts/install-deps.sh
if ! command -v valgrind >/dev/null; then
  echo "valgrind.sh: valgrind is not installed (apt-get install valgrind)" >&2
  exit 2
fi

cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCROUTER_TESTS=ON >/dev/null
cmake --build "$BUILD_DIR" -j"$(nproc 2>/dev/null || echo 2)" --target valgrind_scenario crouter fake_backend

# The scenario spawns $CROUTER_BIN; this wrapper puts valgrind in front.
wrapper="$ROOT/$BUILD_DIR/crouter-under-valgrind"
cat >"$wrapper" <<WRAP
#!/bin/sh
exec valgrind --leak-check=full --show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite \\
  --error-exitcode=1 --num-callers=30 --trace-children=no ${VALGRIND_ARGS:-} \\
  "$ROOT/$BUILD_DIR/crouter" "\$@"
WRAP
chmod +x "$wrapper"

if CROUTER_BIN="$wrapper" "$BUILD_DIR/test/soak/valgrind_scenario"; then
  printf '\nvalgrind: passed (no errors, no definite leaks)\n'
else
  printf '\nvalgrind: FAILED\n'
  exit 1
fi
