#!/usr/bin/env bash
# scripts/fuzz.sh - builds the libFuzzer targets with clang and runs each one.
#
# Usage: scripts/fuzz.sh [--seconds N | --runs N] [--merge] [TARGET...]
#   --seconds N   run each target for N seconds (-max_total_time; default 20
#                 unless --runs is given)
#   --runs N      run each target for N inputs (-runs); with --seconds, stop
#                 at whichever comes first
#   --merge       afterwards, merge the inputs that add coverage back into
#                 test/fuzz/corpus/<target>/ (libFuzzer -merge=1)
#   TARGET        fuzz_config, fuzz_register_message, ... (default: every
#                 *_fuzzer target the build defines)
# Environment: CROUTER_FUZZ_BUILD_DIR (default build-fuzz), CROUTER_NO_INSTALL=1.
#
# Each target runs on a temporary copy of its seed corpus
# (test/fuzz/corpus/<target>/), so the checked-in corpus only changes with
# --merge. A crash, leak, timeout or sanitizer report fails the target; its
# reproducer is kept in <build dir>/artifacts/<target>/ (replay it with
# `<build dir>/test/fuzz/<target>_fuzzer FILE`, then add it to the corpus as
# a regression). Prints executions per target and a closing line
# "fuzz: N passed, M failed". Exits 1 when any target failed.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

BUILD_DIR=${CROUTER_FUZZ_BUILD_DIR:-build-fuzz}
SECONDS_PER_TARGET=""
RUNS=""
MERGE=0
TARGETS=()

usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; }
need_num() { [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || { printf 'fuzz.sh: %s needs a positive number\n' "$1" >&2; exit 2; }; }

while (($#)); do
  case $1 in
    --seconds) need_num "$1" "${2:-}"; SECONDS_PER_TARGET=$2; shift 2 ;;
    --runs) need_num "$1" "${2:-}"; RUNS=$2; shift 2 ;;
    --merge) MERGE=1; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) printf 'fuzz.sh: unknown option %s\n' "$1" >&2; usage >&2; exit 2 ;;
    *) TARGETS+=("${1%_fuzzer}"); shift ;;
  esac
done

[[ -z $RUNS && -z $SECONDS_PER_TARGET ]] && SECONDS_PER_TARGET=20
[[ ${CROUTER_NO_INSTALL:-0} == 1 ]] || scripts/install-deps.sh

jobs=$(nproc 2>/dev/null || echo 2)
cmake -S . -B "$BUILD_DIR" -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCROUTER_FUZZ=ON >/dev/null

if ((${#TARGETS[@]} == 0)); then
  mapfile -t TARGETS < <(cmake --build "$BUILD_DIR" --target help |
    grep -oE '\bfuzz_[A-Za-z0-9_]+_fuzzer\b' | sed 's/_fuzzer$//' | sort -u)
fi
if ((${#TARGETS[@]} == 0)); then
  printf 'fuzz.sh: no *_fuzzer targets defined in %s\n' "$BUILD_DIR" >&2
  exit 1
fi

passed=0
failed=0
failures=()
build_targets=()
for t in "${TARGETS[@]}"; do build_targets+=("${t}_fuzzer"); done
built_all=1
if ! cmake --build "$BUILD_DIR" -j"$jobs" --target "${build_targets[@]}"; then
  # Then build each target on its own below, so that one broken module does
  # not hide the other targets' results (and no stale binary is run).
  printf 'fuzz.sh: building the targets together failed; building them one by one\n' >&2
  built_all=0
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/crouter-fuzz.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

export ASAN_OPTIONS=${ASAN_OPTIONS:-halt_on_error=1:detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

for t in "${TARGETS[@]}"; do
  if ((!built_all)) && ! cmake --build "$BUILD_DIR" --target "${t}_fuzzer" >"$TMP/$t.build.log" 2>&1; then
    tail -n 30 "$TMP/$t.build.log" >&2
    printf 'fuzz %-26s FAILED (does not build)\n' "$t"
    failed=$((failed + 1)); failures+=("$t (build)")
    continue
  fi
  # The binary sits in the build tree where its CMakeLists.txt put it.
  bin=$(find "$BUILD_DIR" -path "$BUILD_DIR/artifacts" -prune -o -type f -name "${t}_fuzzer" -perm -u+x -print | head -n 1)
  if [[ -z $bin ]]; then
    printf 'fuzz %-26s FAILED (no %s_fuzzer binary in %s)\n' "$t" "$t" "$BUILD_DIR"
    failed=$((failed + 1)); failures+=("$t (build)")
    continue
  fi
  corpus="$TMP/corpus-$t"
  mkdir -p "$corpus"
  if [[ -d test/fuzz/corpus/$t ]]; then
    cp -R "test/fuzz/corpus/$t/." "$corpus/"
  fi
  artifacts="$BUILD_DIR/artifacts/$t"
  mkdir -p "$artifacts"
  args=(-timeout=25 -rss_limit_mb=2048 -print_final_stats=1 "-artifact_prefix=$artifacts/")
  [[ -n $RUNS ]] && args+=("-runs=$RUNS")
  [[ -n $SECONDS_PER_TARGET ]] && args+=("-max_total_time=$SECONDS_PER_TARGET")
  [[ -f test/fuzz/$t.dict ]] && args+=("-dict=test/fuzz/$t.dict")
  log="$TMP/$t.log"
  start=$(date +%s)
  if "$bin" "${args[@]}" "$corpus" >"$log" 2>&1; then rc=0; else rc=$?; fi
  elapsed=$(($(date +%s) - start))
  execs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -n 1)
  units=$(find "$corpus" -type f | wc -l)
  if ((rc == 0)); then
    printf 'fuzz %-26s ok      %12s execs in %4ss, corpus %s\n' "$t" "${execs:-?}" "$elapsed" "$units"
    passed=$((passed + 1))
    if ((MERGE)); then
      mkdir -p "test/fuzz/corpus/$t"
      "$bin" -merge=1 "test/fuzz/corpus/$t" "$corpus" >"$TMP/$t.merge.log" 2>&1 ||
        { tail -n 20 "$TMP/$t.merge.log" >&2; printf 'fuzz.sh: merge for %s failed\n' "$t" >&2; }
    fi
  else
    printf 'fuzz %-26s FAILED  %12s execs in %4ss (exit %s)\n' "$t" "${execs:-?}" "$elapsed" "$rc"
    # The sanitizer or libFuzzer report, from its first line on.
    first=$(grep -n -m1 -E '^==[0-9]+==|ERROR: libFuzzer|runtime error:' "$log" | cut -d: -f1 || true)
    if [[ -n $first ]]; then sed -n "${first},$((first + 60))p" "$log" >&2; else tail -n 40 "$log" >&2; fi
    printf 'fuzz.sh: reproducer(s) in %s/\n' "$artifacts" >&2
    failed=$((failed + 1)); failures+=("$t")
  fi
done

printf 'fuzz: %d passed, %d failed\n' "$passed" "$failed"
if ((failed)); then
  printf 'fuzz: failed: %s\n' "${failures[*]}"
  exit 1
fi
