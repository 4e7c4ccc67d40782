#!/usr/bin/env bash
# e2e: `celine info` on the committed test models (GGUF and Hugging Face
# folders), its --json and --tensors output, and its failures (exit 1 with a
# message naming the file / tensor).
set -euo pipefail
: "${CELINE:?path of the celine binary}" "${CELINE_SRC:?source folder}"
M="$CELINE_SRC/tests/data/models"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
has() { grep -qF -- "$2" "$1" || { cat "$1" >&2; fail "'$2' not in output"; }; }

"$CELINE" info "$M/qwen2-q4_k_m.gguf" >"$tmp/out"
has "$tmp/out" "architecture:   qwen2"
has "$tmp/out" "parameters:     2."
has "$tmp/out" "Q4_K: 25"
has "$tmp/out" "Q6_K: 4"
has "$tmp/out" "context length: 4096"
has "$tmp/out" "tokenizer:      byte-level-bpe, vocab 320, pre-tokenizer qwen2"
has "$tmp/out" "eos 319 <|im_end|>"
has "$tmp/out" "chat template:  chatml: {% for message in messages %}"

"$CELINE" info "$M/llama31-hf" >"$tmp/out"
has "$tmp/out" "format:         safetensors"
has "$tmp/out" "architecture:   llama"
has "$tmp/out" "scaling llama3 (factor 8, low 1, high 4, original context 256)"
has "$tmp/out" "bos 315 <|begin_of_text|>"
has "$tmp/out" "chat template:  llama3:"

"$CELINE" info "$M/mistral-q8_0.gguf" --tensors >"$tmp/out"
has "$tmp/out" "tokenizer:      sentencepiece-bpe"
has "$tmp/out" "blk.1.ffn_down.weight"
grep -Eq "token_embd.weight +Q8_0 +\[64, 320\]" "$tmp/out" || fail "tensor line for token_embd.weight"

"$CELINE" info "$M/qwen3-hf" --json >"$tmp/j"
python3 - "$tmp/j" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
assert d["architecture"] == "qwen3" and d["head_dim"] == 32 and d["n_head_kv"] == 2, d
assert d["dtypes"] == {"F16": 24}, d["dtypes"]
assert d["tokenizer"]["vocab"] == 320 and d["chat_template_family"] == "chatml", d
assert len(d["tensors"]) == 24 and d["parameters"] == sum(
    __import__("math").prod(t["ne"]) for t in d["tensors"]), d["parameters"]
PY

# failures: exit 1, a message naming the file and what is wrong
if "$CELINE" info "$tmp/none.gguf" 2>"$tmp/err"; then fail "missing file accepted"; fi
has "$tmp/err" "none.gguf"
head -c 5000 "$M/llama-f32.gguf" >"$tmp/cut.gguf"
set +e; "$CELINE" info "$tmp/cut.gguf" 2>"$tmp/err"; rc=$?; set -e
[ "$rc" = 1 ] || fail "truncated file: exit $rc"
has "$tmp/err" "cut.gguf"
mkdir "$tmp/hf" && cp "$M/qwen2-hf/"* "$tmp/hf/"
sed -i 's/"hidden_size": 64/"hidden_size": 96/' "$tmp/hf/config.json"
if "$CELINE" info "$tmp/hf" 2>"$tmp/err"; then fail "bad config accepted"; fi
has "$tmp/err" "model.embed_tokens.weight"
if "$CELINE" info 2>"$tmp/err"; then fail "no argument accepted"; fi
"$CELINE" info --help | grep -q "Usage: celine info MODEL" || fail "--help"
echo "info: ok"
