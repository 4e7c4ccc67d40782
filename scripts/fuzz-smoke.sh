#!/usr/bin/env bash
# Runs every built fuzz target for a few seconds over its seed corpus:
# fuzz-smoke.sh BUILD_DIR SECONDS
set -euo pipefail
cd "$(dirname "$0")/.."
dir="$1"; secs="${2:-20}"
n=0
for t in "$dir"/fuzz/fuzz_*; do
  [ -x "$t" ] || continue
  name="$(basename "$t")"; name="${name#fuzz_}"
  corpus="fuzz/corpus/$name"
  work="$(mktemp -d)"
  [ -d "$corpus" ] && cp -r "$corpus"/. "$work"/ 2>/dev/null || true
  echo "fuzz $name: ${secs}s"
  "$t" -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=0 "$work" 2>&1 | tail -n 2
  rm -rf "$work"
  n=$((n + 1))
done
echo "fuzz smoke: $n targets ran without a crash"
