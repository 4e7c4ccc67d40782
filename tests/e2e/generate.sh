#!/usr/bin/env bash
# End-to-end: `celine generate` and `celine bench` on the committed tiny models
# (tests/data/models, random weights in the real layouts) with the CPU backend:
# JSON output shape, determinism per seed, sample i independent of n, stop
# strings, chat templates, argument and file errors.
# Needs $CELINE (the built binary) and $CELINE_SRC; python3 parses the JSON.
set -euo pipefail
: "${CELINE:?path of the celine binary}" "${CELINE_SRC:?source folder}"
M="$CELINE_SRC/tests/data/models"
PY=python3
fails=0; passed=0
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

check() { # NAME WANT GOT
  if [ "$2" = "$3" ]; then passed=$((passed + 1)); else echo "FAIL $1"; echo "  want: $2"; echo "  got:  $3"; fails=$((fails + 1)); fi
}
ok() { passed=$((passed + 1)); }
bad() { echo "FAIL $*"; fails=$((fails + 1)); }
gen() { "$CELINE" generate --threads 2 "$@"; }
field() { # FILE LINE FIELD: a field of the JSON object on a line (python repr for lists)
  "$PY" -c 'import json,sys; o=json.loads(open(sys.argv[1]).read().splitlines()[int(sys.argv[2])]); v=o[sys.argv[3]]; print(v if isinstance(v,str) else json.dumps(v))' "$@"
}

q="$M/qwen2-q8_0.gguf"
l="$M/llama-f32.gguf"

# --- output shape: one JSON object per sample, ids count = max tokens ---
gen --model "$q" --prompt "hello world" --max-tokens 12 --ignore-eos --json >"$tmp/a.json"
check "one line" 1 "$(wc -l <"$tmp/a.json")"
check "12 ids" 12 "$(field "$tmp/a.json" 0 ids | "$PY" -c 'import json,sys; print(len(json.load(sys.stdin)))')"
check "finish length" length "$(field "$tmp/a.json" 0 finish_reason)"
# the text is the detokenized ids
ids="$(field "$tmp/a.json" 0 ids)"
"$CELINE" tokenize --model "$q" --decode "$ids" >"$tmp/dec.json"
check "text = decode(ids)" "$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["text"])' "$tmp/dec.json")" \
  "$(field "$tmp/a.json" 0 text)"

# --- greedy is deterministic; sampling is deterministic per seed ---
gen --model "$q" --prompt "hello world" --max-tokens 12 --ignore-eos --json >"$tmp/b.json"
check "greedy twice" "$(cat "$tmp/a.json")" "$(cat "$tmp/b.json")"
gen --model "$l" --prompt "The cat" --max-tokens 16 --ignore-eos --temperature 0.9 --top-p 0.95 --seed 7 --json >"$tmp/s1.json"
gen --model "$l" --prompt "The cat" --max-tokens 16 --ignore-eos --temperature 0.9 --top-p 0.95 --seed 7 --json >"$tmp/s2.json"
gen --model "$l" --prompt "The cat" --max-tokens 16 --ignore-eos --temperature 0.9 --top-p 0.95 --seed 8 --json >"$tmp/s3.json"
check "same seed, same output" "$(cat "$tmp/s1.json")" "$(cat "$tmp/s2.json")"
[ "$(cat "$tmp/s1.json")" != "$(cat "$tmp/s3.json")" ] && ok || bad "another seed gives another output"

# --- every kernel table this CPU runs gives the same greedy tokens; a bad name is refused ---
for k in scalar avx2 avx512; do
  if CELINE_CPU_KERNELS=$k gen --model "$q" --prompt "hello world" --max-tokens 12 --ignore-eos --json >"$tmp/k.json" 2>"$tmp/k.err"; then
    check "greedy ids with $k kernels" "$(field "$tmp/a.json" 0 ids)" "$(field "$tmp/k.json" 0 ids)"
  else
    grep -q "not a kernel table this CPU runs" "$tmp/k.err" && [ "$k" != scalar ] && ok || bad "$k kernels: $(cat "$tmp/k.err")"
  fi
done
CELINE_CPU_KERNELS=sse9 gen --model "$q" --prompt "hi" --max-tokens 2 >/dev/null 2>"$tmp/k.err" && bad "CELINE_CPU_KERNELS=sse9 accepted" \
  || { grep -q "CELINE_CPU_KERNELS=sse9" "$tmp/k.err" && ok || bad "CELINE_CPU_KERNELS=sse9: $(cat "$tmp/k.err")"; }

# --- n samples: sample i does not depend on n (per-sample RNG streams), samples differ ---
gen --model "$l" --prompt "The cat" --max-tokens 10 --ignore-eos --temperature 1 --seed 3 --n 3 --json >"$tmp/n3.json"
gen --model "$l" --prompt "The cat" --max-tokens 10 --ignore-eos --temperature 1 --seed 3 --n 2 --json >"$tmp/n2.json"
check "3 lines for --n 3" 3 "$(wc -l <"$tmp/n3.json")"
check "sample 1 of n=3 = sample 1 of n=2" "$(field "$tmp/n2.json" 1 ids)" "$(field "$tmp/n3.json" 1 ids)"
check "sample 0 of n=3 = the n=1 run" "$(gen --model "$l" --prompt "The cat" --max-tokens 10 --ignore-eos --temperature 1 --seed 3 --json | "$PY" -c 'import json,sys; print(json.dumps(json.loads(sys.stdin.read())["ids"]))')" \
  "$(field "$tmp/n3.json" 0 ids)"
[ "$(field "$tmp/n3.json" 0 ids)" != "$(field "$tmp/n3.json" 2 ids)" ] && ok || bad "samples of one prompt differ"

# --- stop strings: output ends right before the first occurrence ---
gen --model "$l" --prompt "Once" --max-tokens 40 --ignore-eos --temperature 1 --seed 11 --json >"$tmp/full.json"
full="$(field "$tmp/full.json" 0 text)"
"$PY" - "$tmp/full.json" >"$tmp/stop.txt" <<'EOF'
import json, sys
t = json.loads(open(sys.argv[1]).read())["text"]
# a 3-character stop string from the middle of the text (no newline: it goes on the command line)
for i in range(len(t) // 2, len(t) - 3):
    s = t[i:i + 3]
    if "\n" not in s and s.strip():
        print(s, end="")
        break
EOF
stop="$(cat "$tmp/stop.txt")"
if [ -n "$stop" ]; then
  gen --model "$l" --prompt "Once" --max-tokens 40 --ignore-eos --temperature 1 --seed 11 --stop "$stop" --json >"$tmp/cut.json"
  want="$("$PY" -c 'import json,sys; t=json.loads(open(sys.argv[1]).read())["text"]; print(t[:t.index(sys.argv[2])])' "$tmp/full.json" "$stop")"
  check "stop string cuts the text" "$want" "$(field "$tmp/cut.json" 0 text)"
  check "stop finish reason" stop "$(field "$tmp/cut.json" 0 finish_reason)"
else
  bad "no stop string candidate in: $full"
fi

# --- chat templates: detected family renders; an override works; a bad name fails ---
gen --model "$q" --chat "Hi there" --max-tokens 4 --ignore-eos --json >"$tmp/c1.json" && ok || bad "chat (chatml)"
gen --model "$l" --chat "Hi there" --system "Be brief." --max-tokens 4 --ignore-eos --json >"$tmp/c2.json" && ok || bad "chat with a system message"
gen --model "$q" --chat "Hi" --chat-template raw --max-tokens 4 --ignore-eos --json >"$tmp/c3.json" && ok || bad "--chat-template raw"
# the rendered template adds its markup tokens around the message
gen --model "$q" --chat "Hi" --max-tokens 1 --stats 2>"$tmp/st1" >/dev/null
gen --model "$q" --chat "Hi" --chat-template raw --max-tokens 1 --stats 2>"$tmp/st2" >/dev/null
n1="$(sed -n 's/^prompt \([0-9]*\) tokens.*/\1/p' "$tmp/st1")"; n2="$(sed -n 's/^prompt \([0-9]*\) tokens.*/\1/p' "$tmp/st2")"
[ -n "$n1" ] && [ -n "$n2" ] && [ "$n1" -gt "$((n2 + 3))" ] && ok || bad "chatml prompt ($n1 tokens) longer than raw ($n2)"
set +e
gen --model "$q" --chat "Hi" --chat-template nosuch >/dev/null 2>"$tmp/err"; rc=$?
set -e
check "bad template: exit 1" 1 "$rc"
grep -q "nosuch" "$tmp/err" && ok || bad "message names the template: $(cat "$tmp/err")"

# --- streaming text output (no --json) and --stats ---
out="$(gen --model "$q" --prompt "abc" --max-tokens 5 --ignore-eos --stats 2>"$tmp/stats")"
grep -q "generated 5 tokens" "$tmp/stats" && ok || bad "--stats: $(cat "$tmp/stats")"
check "streamed text = JSON text" "$(gen --model "$q" --prompt "abc" --max-tokens 5 --ignore-eos --json | "$PY" -c 'import json,sys; print(json.loads(sys.stdin.read())["text"])')" "$out"

# --- logprobs ---
gen --model "$q" --prompt "abc" --max-tokens 3 --ignore-eos --logprobs 2 --json >"$tmp/lp.json"
"$PY" - "$tmp/lp.json" <<'EOF' && ok || bad "logprobs shape"
import json, sys
o = json.loads(open(sys.argv[1]).read())
lp = o["logprobs"]
assert len(lp) == 3 and [x["token"] for x in lp] == o["ids"]
for x in lp:
    assert x["logprob"] <= 0 and len(x["top"]) == 2 and x["top"][0]["logprob"] >= x["top"][1]["logprob"]
    assert x["top"][0]["logprob"] >= x["logprob"]
EOF

# --- errors ---
set +e
gen --prompt hi >/dev/null 2>"$tmp/err"; rc=$?
check "no --model: exit 2" 2 "$rc"
gen --model "$q" --prompt hi --chat hi >/dev/null 2>"$tmp/err"; rc=$?
check "--prompt and --chat: exit 2" 2 "$rc"
gen --model "$tmp/missing.gguf" --prompt hi >/dev/null 2>"$tmp/err"; rc=$?
check "missing model: exit 1" 1 "$rc"
grep -q "missing.gguf" "$tmp/err" && ok || bad "message names the file: $(cat "$tmp/err")"
gen --model "$q" --prompt hi --top-p 0 >/dev/null 2>"$tmp/err"; rc=$?
check "top-p 0: exit 1" 1 "$rc"
grep -q "top_p" "$tmp/err" && ok || bad "message names top_p: $(cat "$tmp/err")"
gen --model "$q" --prompt hi --n 0 >/dev/null 2>"$tmp/err"; rc=$?
check "--n 0: exit 2" 2 "$rc"
gen --model "$q" --prompt "$(printf 'word %.0s' $(seq 1 300))" --ctx 64 >/dev/null 2>"$tmp/err"; rc=$?
check "prompt longer than --ctx: exit 1" 1 "$rc"
grep -q "context" "$tmp/err" && ok || bad "message says context: $(cat "$tmp/err")"
set -e

# --- bench: numbers come out, shared prefix computes the prompt once ---
"$CELINE" bench --model "$q" --batch 2 --prompt-tokens 40 --gen-tokens 6 --samples 4 --reps 1 --threads 2 --json >"$tmp/bench.json"
"$PY" - "$tmp/bench.json" <<'EOF' && ok || bad "bench JSON: $(cat "$tmp/bench.json")"
import json, sys
o = json.loads(open(sys.argv[1]).read())
assert o["prefill_tok_s"] > 0 and o["decode_tok_s"] > 0 and o["peak_rss_bytes"] > 0
sp = o["shared_prefix"]
assert sp["samples"] == 4 and sp["prompt_tokens_computed"] == 40 and sp["ratio"] > 0
EOF
"$CELINE" bench --model "$q" --batch 1 --prompt-tokens 16 --gen-tokens 4 --reps 1 --no-shared | grep -q "decode" && ok || bad "bench text output"

echo "generate e2e: $passed passed, $fails failed"
[ "$fails" -eq 0 ]
