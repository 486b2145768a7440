#!/usr/bin/env bash
# scripts/tsan.sh - ThreadSanitizer run of the multi-threaded parts: builds
# with -DCROUTER_SANITIZE=thread into build-tsan/ and runs the registry unit
# tests (RCU readers against NATS and pruner writers) and the integration
# tests (crouter's workers, NATS thread, pruner and status server together).
#
# Usage: scripts/tsan.sh [extra ctest arguments, e.g. -R nats]
# Environment: CROUTER_NO_INSTALL=1, CROUTER_TEST_JOBS=2, TSAN_OPTIONS (the
# default adds scripts/tsan.supp: OpenSSL, which is not instrumented).
# Ends with "N passed, M failed"; exits 1 when anything failed.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

BUILD_DIR=build-tsan
TEST_JOBS=${CROUTER_TEST_JOBS:-2}
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1:history_size=4:suppressions=$ROOT/scripts/tsan.supp}

[[ ${CROUTER_NO_INSTALL:-0} == 1 ]] || scripts/install-deps.sh

jobs=$(nproc 2>/dev/null || echo 2)
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCROUTER_SANITIZE=thread \
  -DCROUTER_TESTS=ON >/dev/null
cmake --build "$BUILD_DIR" -j"$jobs"

# TSan's shadow memory needs a fixed address layout; kernels with many bits
# of mmap randomisation make it abort ("unexpected memory mapping"), so run
# without address randomisation when setarch can turn it off.
norandom=()
if command -v setarch >/dev/null && setarch "$(uname -m)" -R true 2>/dev/null; then
  norandom=(setarch "$(uname -m)" -R)
fi

passed=0
failed=0
run_ctest() { # DIR LABEL
  local log
  log=$(mktemp "${TMPDIR:-/tmp}/crouter-tsan.XXXXXX")
  printf '\n=== ctest %s -L %s (TSan)\n' "$1" "$2"
  "${norandom[@]}" ctest --test-dir "$1" --output-on-failure -j"$TEST_JOBS" -L "$2" \
    "${EXTRA[@]}" 2>&1 | tee "$log" || true
  local s
  s=$(grep -E '^[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -n 1 || true)
  if [[ -n $s ]]; then
    local f t
    f=$(sed -E 's/.* ([0-9]+) tests? failed out of.*/\1/' <<<"$s")
    t=$(sed -E 's/.* out of ([0-9]+).*/\1/' <<<"$s")
    passed=$((passed + t - f)); failed=$((failed + f))
  else
    printf 'tsan.sh: no %s tests found under %s\n' "$2" "$1" >&2
    failed=$((failed + 1))
  fi
  rm -f "$log"
}

EXTRA=("$@")
# ctest run from a subdirectory of the build tree runs only the tests
# defined there: test/unit/registry/ holds the registry's unit tests.
run_ctest "$BUILD_DIR/test/unit/registry" unit
run_ctest "$BUILD_DIR" integration

printf '\ntsan: %d passed, %d failed\n' "$passed" "$failed"
exit $((failed > 0))
