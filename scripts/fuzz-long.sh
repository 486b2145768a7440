#!/usr/bin/env bash
# scripts/fuzz-long.sh - the long fuzz run: every libFuzzer target for a long
# time or a fixed number of inputs, printing each target's execution count.
#
# Usage: scripts/fuzz-long.sh [--seconds N] [--runs N] [--merge] [TARGET...]
#   default: --runs 10000000 per target, capped at 1 hour per target
#   --merge  keep the new inputs that add coverage in test/fuzz/corpus/<target>/
#            (review and commit them with the module that owns the target)
# Example: scripts/fuzz-long.sh --seconds 600 fuzz_http_request fuzz_chunked
#
# A thin wrapper around scripts/fuzz.sh (same build dir, build-fuzz/, same
# artifacts dir for reproducers).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

args=()
have_limit=0
for a in "$@"; do
  case $a in
    --seconds|--runs) have_limit=1 ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  esac
  args+=("$a")
done
((have_limit)) || args=(--runs 10000000 --seconds 3600 "${args[@]}")

exec scripts/fuzz.sh "${args[@]}"
