#!/usr/bin/env bash
# End-to-end: `celine tokenize` on the real tokenizer files (scripts/fixtures-tok.sh)
# and on tools/mkmodel.py's models (tokenizer.json and GGUF of the same tokenizer
# must give the same ids). Needs $CELINE (the built binary) and $CELINE_SRC.
set -euo pipefail
: "${CELINE:?path of the celine binary}" "${CELINE_SRC:?source folder}"
fx="$CELINE_SRC/.fixtures/tok"
fails=0; passed=0
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

check() { # NAME WANT GOT
  if [ "$2" = "$3" ]; then passed=$((passed + 1)); else echo "FAIL $1"; echo "  want: $2"; echo "  got:  $3"; fails=$((fails + 1)); fi
}

# --- argument errors (no fixtures needed) ---
set +e
"$CELINE" tokenize --text hi >/dev/null 2>"$tmp/err"; rc=$?
set -e
check "no tokenizer: exit 2" 2 "$rc"
grep -q -- "--model or --tokenizer" "$tmp/err" && passed=$((passed + 1)) || { echo "FAIL message: $(cat "$tmp/err")"; fails=$((fails + 1)); }
set +e
"$CELINE" tokenize --tokenizer "$tmp/missing.json" --text hi >/dev/null 2>"$tmp/err"; rc=$?
set -e
check "missing file: exit 1" 1 "$rc"
grep -q "missing.json" "$tmp/err" && passed=$((passed + 1)) || { echo "FAIL message names the file: $(cat "$tmp/err")"; fails=$((fails + 1)); }
"$CELINE" tokenize --help | grep -q -- "--no-add-special" && passed=$((passed + 1)) || { echo "FAIL --help"; fails=$((fails + 1)); }

if [ -f "$fx/qwen3/tokenizer.json" ]; then
  q="$fx/qwen3/tokenizer.json"
  check "qwen3 plain" '{"ids":[9707,1879],"count":2}' "$("$CELINE" tokenize --tokenizer "$q" --text "Hello world")"
  check "qwen3 --special" '{"ids":[151644,872,198,13048,151645],"count":5}' \
    "$("$CELINE" tokenize --tokenizer "$q" --special --text $'<|im_start|>user\nHi<|im_end|>')"
  got="$("$CELINE" tokenize --tokenizer "$q" --text '<|im_start|>')"
  case "$got" in *151644*) check "qwen3 specials stay text without --special" "no 151644" "$got";; *) passed=$((passed + 1));; esac
  check "qwen3 pieces" '{"ids":[9707,1879],"count":2,"pieces":["Hello"," world"]}' \
    "$("$CELINE" tokenize --tokenizer "$q" --text "Hello world" --pieces)"
  check "qwen3 decode" '{"text":"Hello world"}' "$("$CELINE" tokenize --tokenizer "$q" --decode "[9707, 1879]")"
  printf 'caf\xc3\xa9 \xf0\x9f\xa6\x99' >"$tmp/in.txt"
  check "qwen3 --file and stdin agree" "$("$CELINE" tokenize --tokenizer "$q" --file "$tmp/in.txt")" \
    "$("$CELINE" tokenize --tokenizer "$q" --file - <"$tmp/in.txt")"
else
  echo "SKIP: qwen3 fixture missing (run scripts/fixtures-tok.sh)"
fi

if [ -f "$fx/mistral/tokenizer.json" ]; then
  m="$fx/mistral/tokenizer.json"
  check "mistral adds BOS" '{"ids":[1,22557,1526],"count":3}' "$("$CELINE" tokenize --tokenizer "$m" --text "Hello world")"
  check "mistral --no-add-special" '{"ids":[22557,1526],"count":2}' \
    "$("$CELINE" tokenize --tokenizer "$m" --text "Hello world" --no-add-special)"
  check "mistral decode skips specials" '{"text":"Hello world"}' "$("$CELINE" tokenize --tokenizer "$m" --decode 1,22557,1526)"
fi

if [ -f "$fx/gpt2/encoder.json" ]; then
  check "gpt2 encoder.json" '{"ids":[15496,995],"count":2}' "$("$CELINE" tokenize --tokenizer "$fx/gpt2/encoder.json" --text "Hello world")"
fi

if [ -f "$fx/llama-vocab/ggml-vocab-llama-bpe.gguf" ]; then
  check "gguf llama-bpe" '{"ids":[9906,1917],"count":2}' \
    "$("$CELINE" tokenize --tokenizer "$fx/llama-vocab/ggml-vocab-llama-bpe.gguf" --text "Hello world" --no-add-special)"
  check "gguf llama-bpe adds BOS" '{"ids":[128000,9906,1917],"count":3}' \
    "$("$CELINE" tokenize --tokenizer "$fx/llama-vocab/ggml-vocab-llama-bpe.gguf" --text "Hello world")"
  check "gguf llama-spm" '{"ids":[1,15043,3186],"count":3}' \
    "$("$CELINE" tokenize --tokenizer "$fx/llama-vocab/ggml-vocab-llama-spm.gguf" --text "Hello world")"
fi

# --- the same tiny tokenizer through tokenizer.json and GGUF metadata (and --model) ---
py=""
for c in python3 /usr/bin/python3; do
  if command -v "$c" >/dev/null && "$c" -c "import numpy" 2>/dev/null; then py="$c"; break; fi
done
if [ -n "$py" ] && [ -f "$CELINE_SRC/tools/mkmodel.py" ]; then
  texts=("Hello world" "The quick brown fox, 1234 times!" "  spaces   and	tabs" "é ü 中文 🦙" "<|im_start|>user")
  for arch in qwen2 llama mistral; do
    "$py" "$CELINE_SRC/tools/mkmodel.py" --arch "$arch" --format hf --out "$tmp/$arch-hf" >/dev/null
    "$py" "$CELINE_SRC/tools/mkmodel.py" --arch "$arch" --format gguf --out "$tmp/$arch.gguf" >/dev/null
    for t in "${texts[@]}"; do
      a="$("$CELINE" tokenize --tokenizer "$tmp/$arch-hf/tokenizer.json" --text "$t" --special)"
      b="$("$CELINE" tokenize --tokenizer "$tmp/$arch.gguf" --text "$t" --special)"
      check "$arch json vs gguf: $t" "$a" "$b"
    done
    if "$CELINE" tokenize --model "$tmp/$arch.gguf" --text "Hello world" >"$tmp/model.out" 2>"$tmp/model.err"; then
      check "$arch --model" "$("$CELINE" tokenize --tokenizer "$tmp/$arch.gguf" --text "Hello world")" "$(cat "$tmp/model.out")"
    else
      echo "FAIL $arch --model: $(cat "$tmp/model.err")"; fails=$((fails + 1))
    fi
  done
else
  echo "SKIP: python3 + numpy needed for tools/mkmodel.py models"
fi

echo "tokenize e2e: $passed passed, $fails failed"
[ "$fails" -eq 0 ]
