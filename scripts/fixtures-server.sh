#!/usr/bin/env bash
# Fetches the pinned `openai` npm package (the official OpenAI client for Node;
# it has no dependencies) into .fixtures/node_modules/openai, checked by sha256.
# tests/e2e/server_openai_client.sh streams from `celine serve` with it.
# Idempotent: does nothing when the pinned version is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
ver=5.23.2
sha=a2aa74ff8be1a80a215af201a3d2228e999464d166c1eaec2c9ca313395fbef1
dest=.fixtures/node_modules/openai
stamp="$dest/.celine-fixture-$ver"
[ -f "$stamp" ] && exit 0
command -v npm >/dev/null || { echo "fixtures-server: npm is missing (scripts/deps.sh --test installs it)" >&2; exit 1; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "openai@$ver" >/dev/null)
echo "$sha  $tmp/openai-$ver.tgz" | sha256sum -c --quiet
rm -rf "$dest"
mkdir -p "$dest"
tar -xzf "$tmp/openai-$ver.tgz" -C "$dest" --strip-components=1
touch "$stamp"
echo "fixtures-server: openai@$ver in $dest"
