#!/usr/bin/env bash
# scripts/test.sh - the test command: installs what is missing, builds with
# ASan+UBSan and runs every test, then runs each libFuzzer target briefly.
#
# Usage: scripts/test.sh
# Environment:
#   CROUTER_NO_INSTALL=1       skip scripts/install-deps.sh
#   CROUTER_FUZZ_SECONDS=20    seconds per fuzz target (0 skips fuzzing)
#   CROUTER_TEST_JOBS=2        ctest -j
#   ASAN_OPTIONS, UBSAN_OPTIONS  override the defaults set below
#
# Steps:
#   1. build-asan/: RelWithDebInfo, -DCROUTER_SANITIZE=address,undefined;
#      ctest -LE 'bench|soak': unit, integration and fuzz-corpus replay tests;
#   2. build-fuzz/ (clang, -DCROUTER_FUZZ=ON): every *_fuzzer target for
#      CROUTER_FUZZ_SECONDS on a copy of its seed corpus (scripts/fuzz.sh).
# Ends with "N passed, M failed" (ctest tests and fuzz targets; a failed
# build counts as a failure) and exits 1 when anything failed.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

FUZZ_SECONDS=${CROUTER_FUZZ_SECONDS:-20}
TEST_JOBS=${CROUTER_TEST_JOBS:-2}
BUILD_DIR=build-asan
[[ $FUZZ_SECONDS =~ ^[0-9]+$ ]] || { echo "test.sh: CROUTER_FUZZ_SECONDS must be a number" >&2; exit 2; }

export ASAN_OPTIONS=${ASAN_OPTIONS:-halt_on_error=1:abort_on_error=0:detect_leaks=1:print_stacktrace=1:strict_string_checks=1:detect_stack_use_after_return=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

passed=0
failed=0
failures=()
started=$(date +%s)

step() { printf '\n=== %s\n' "$*"; }
fail() { failed=$((failed + 1)); failures+=("$1"); }

[[ ${CROUTER_NO_INSTALL:-0} == 1 ]] || scripts/install-deps.sh
export CROUTER_NO_INSTALL=1   # fuzz.sh below: already done

# --- 1. ASan + UBSan build and ctest ------------------------------------
step "build ($BUILD_DIR, ASan+UBSan)"
jobs=$(nproc 2>/dev/null || echo 2)
if ! cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
     -DCROUTER_SANITIZE=address,undefined -DCROUTER_TESTS=ON >/dev/null; then
  printf 'test.sh: cmake configure failed for %s; no tests can run there\n' "$BUILD_DIR" >&2
  fail "configure ($BUILD_DIR)"
else
  # Keep going past a broken target, so the tests that do build still run.
  keep_going=()
  case $(sed -n 's/^CMAKE_GENERATOR:INTERNAL=//p' "$BUILD_DIR/CMakeCache.txt") in
    Ninja*) keep_going=(-- -k 0) ;;
    *Makefiles*) keep_going=(-- -k) ;;
  esac
  if ! cmake --build "$BUILD_DIR" -j"$jobs" "${keep_going[@]}"; then
    printf 'test.sh: the build failed; running the tests that were built\n' >&2
    fail "build ($BUILD_DIR)"
  fi

  step "ctest (unit, integration, fuzz corpus replay; ASan+UBSan)"
  ctest_log="$BUILD_DIR/ctest.log"
  ctest --test-dir "$BUILD_DIR" --output-on-failure -j"$TEST_JOBS" -LE 'bench|soak' 2>&1 | tee "$ctest_log" || true
  # "87% tests passed, 3 tests failed out of 23"
  summary=$(grep -E '^[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$ctest_log" | tail -n 1 || true)
  if [[ -n $summary ]]; then
    t_failed=$(sed -E 's/.* ([0-9]+) tests? failed out of.*/\1/' <<<"$summary")
    t_total=$(sed -E 's/.* out of ([0-9]+).*/\1/' <<<"$summary")
    passed=$((passed + t_total - t_failed))
    failed=$((failed + t_failed))
    # "The following tests FAILED:" then lines "   7 - test_x (Failed)".
    while IFS= read -r name; do failures+=("$name"); done < <(
      awk '/^The following tests FAILED:/ { on = 1; next }
           on && $2 == "-" { print $3 " " $4; next }
           on { on = 0 }' "$ctest_log")
  elif grep -q 'No tests were found' "$ctest_log"; then
    printf 'test.sh: ctest found no tests\n' >&2
    fail "ctest (no tests)"
  else
    fail "ctest (did not run)"
  fi
fi

# --- 2. libFuzzer targets -----------------------------------------------
if ((FUZZ_SECONDS > 0)); then
  step "fuzz targets (clang, build-fuzz, ${FUZZ_SECONDS}s each)"
  fuzz_log=$(mktemp "${TMPDIR:-/tmp}/crouter-fuzz-log.XXXXXX")
  scripts/fuzz.sh --seconds "$FUZZ_SECONDS" 2>&1 | tee "$fuzz_log" || true
  line=$(grep -E '^fuzz: [0-9]+ passed, [0-9]+ failed' "$fuzz_log" | tail -n 1 || true)
  if [[ -n $line ]]; then
    passed=$((passed + $(sed -E 's/^fuzz: ([0-9]+) passed.*/\1/' <<<"$line")))
    failed=$((failed + $(sed -E 's/.* ([0-9]+) failed.*/\1/' <<<"$line")))
    while IFS= read -r name; do failures+=("$name"); done < <(
      sed -n 's/^fuzz \(fuzz_[A-Za-z0-9_]*\) *FAILED.*/\1 (fuzzing)/p' "$fuzz_log")
  else
    fail "fuzz build"
  fi
  rm -f "$fuzz_log"
fi

# --- summary --------------------------------------------------------------
elapsed=$(($(date +%s) - started))
printf '\n'
if ((${#failures[@]})); then
  printf 'failed: %s\n' "${failures[@]}"
fi
printf '%d passed, %d failed (%dm%02ds)\n' "$passed" "$failed" $((elapsed / 60)) $((elapsed % 60))
exit $((failed > 0))
