#!/usr/bin/env bash
# celine's main job: the service. Installs what is missing, builds, then runs
# `celine serve` on 127.0.0.1:${PORT:-8080} until Ctrl-C / SIGTERM.
#   ./scripts/run.sh                      reward endpoints only (/v1/reward, /get_reward, /health, /metrics)
#   ./scripts/run.sh MODEL [serve opts]   also OpenAI-compatible generation with MODEL (.gguf or HF folder)
# Before serving it grades the sample rollouts in data/samples/ once, as a smoke test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
bash scripts/build.sh build
./build/celine reward --input data/samples/rewards.jsonl --advantage grpo --output /dev/null
echo "celine: sample rollouts graded (data/samples/rewards.jsonl)" >&2
args=(--port "${PORT:-8080}")
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
  args+=(--model "$1")
  shift
fi
exec ./build/celine serve "${args[@]}" "$@"
