#!/usr/bin/env bash
# celine's main job as it stands: grade the sample RL rollouts in data/samples/
# (math, multiple choice, short answers) and print rewards with GRPO advantages.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
bash scripts/build.sh build
./build/celine reward --input data/samples/rewards.jsonl --advantage grpo
