#!/usr/bin/env bash
# End-to-end: `celine mind`, `celine rephrase` and `celine crossthink` against the fake
# OpenAI server (tests/e2e/gen_fake_openai.py) on 127.0.0.1: record structure and counts,
# determinism for a seed (also through injected 429/500/dropped connections), quality
# routing, CrossThink records graded by `celine reward`, user templates, and the failures
# (bad template with file:line, unreachable server -> exit 3).
set -euo pipefail
: "${CELINE:?path of the celine binary}" "${CELINE_SRC:?source tree}"
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# start_server NAME [fake server args...]: sets PORT_<NAME>
start_server() {
  local name="$1"; shift
  python3 "$CELINE_SRC/tests/e2e/gen_fake_openai.py" "$@" > "$work/$name.port" 2> "$work/$name.err" &
  pids+=($!)
  for _ in $(seq 100); do grep -q PORT "$work/$name.port" 2>/dev/null && break; sleep 0.05; done
  local port; port="$(awk '/PORT/{print $2}' "$work/$name.port")"
  [ -n "$port" ] || fail "fake server $name did not start"
  eval "PORT_$name=$port"
}

start_server ok --log "$work/ok.log"
start_server flaky --plan "drop,ok,429,ok,ok,500,ok,503,ok,drop,429ra,ok" --cycle
URL="http://127.0.0.1:$PORT_ok"
FLAKY="http://127.0.0.1:$PORT_flaky"

python3 - "$work/docs.jsonl" <<'EOF'
import json, sys
docs = [
  {"id": "calc", "quality": 17, "text": "The derivative of $f(x) = x^2$ is $f'(x) = 2x$. We compute it from the limit "
   "$\\lim_{h \\to 0} \\frac{(x+h)^2 - x^2}{h}$, which simplifies to $2x + h$ and tends to $2x$.\n\n"
   "At $x = 3$ the slope is therefore $6$. The tangent line is $y = 6x - 9$."},
  {"id": "sums", "quality": "low", "text": "The sum of the first $n$ odd numbers is $n^2$. For example "
   "$1 + 3 + 5 = 9 = 3^2$. A proof by induction: the claim holds for $n = 1$, and adding $2n + 1$ to $n^2$ "
   "gives $(n+1)^2$.\n\nThis identity appears in many textbooks and can also be seen geometrically."},
  {"id": 42, "text": "Prime numbers have exactly two divisors. The first primes are 2, 3, 5, 7 and 11. "
   "Every integer greater than one factors into primes in exactly one way, up to order, which is the "
   "fundamental theorem of arithmetic."},
]
with open(sys.argv[1], "w") as f:
    for d in docs:
        f.write(json.dumps(d) + "\n")
EOF

# ---------------------------------------------------------------- MIND
"$CELINE" mind --remote "$URL" --input "$work/docs.jsonl" --output "$work/m1.jsonl" --seed 5 \
  --rejects "$work/m1.rej" 2> "$work/m1.err" || fail "mind run failed: $(cat "$work/m1.err")"
python3 - "$work/m1.jsonl" "$work/m1.err" <<'EOF'
import json, sys, re
recs = [json.loads(l) for l in open(sys.argv[1])]
stats = json.loads(open(sys.argv[2]).read().strip().splitlines()[-1])
styles = {"two_students", "teacher_student", "two_professors", "debate", "problem_solving", "layman_knowall", "interview"}
assert len(recs) == 21, len(recs)                   # 3 documents, 1 chunk each, 7 styles
assert stats["stats"]["units"] == 21 and stats["stats"]["records"] == 21, stats
assert stats["stats"]["dropped_total"] == 0, stats
ids = [r["id"] for r in recs]
assert len(set(ids)) == len(ids)
assert [r["source_id"] for r in recs] == ["calc"] * 7 + ["sums"] * 7 + ["42"] * 7   # input order
seeds = set()
for r in recs:
    for k in ("id", "source_id", "chunk_index", "style", "text", "tokens", "model", "template", "sampling", "seed"):
        assert k in r, (k, r)
    assert r["style"] in styles and r["template"].startswith(r["style"] + "#")
    assert r["model"] == "default" and r["tokens"] > 20 and r["chunk_index"] == 0
    turns = [l.split(":")[0] for l in r["text"].split("\n\n")]
    assert len(turns) == 4 and turns[0] != turns[1] and turns[0] == turns[2], turns
    assert r["sampling"]["max_tokens"] == 1024
    seeds.add(r["seed"])
assert len(seeds) == 21                             # one seed per unit
EOF
# the same job again, and through a server that fails often: identical bytes
"$CELINE" mind --remote "$URL" --input "$work/docs.jsonl" --seed 5 --quiet > "$work/m2.jsonl"
cmp "$work/m1.jsonl" "$work/m2.jsonl" || fail "mind is not deterministic for a seed"
"$CELINE" mind --remote "$FLAKY" --input "$work/docs.jsonl" --seed 5 --window 1 --concurrency 3 \
  --retries 8 --backoff-base 0.05 --backoff-max 0.5 --quiet > "$work/m3.jsonl" || fail "mind through the flaky server failed"
cmp "$work/m1.jsonl" "$work/m3.jsonl" || fail "retries changed the output"
# another seed changes the texts; one random style per chunk; a list of styles
"$CELINE" mind --remote "$URL" --input "$work/docs.jsonl" --seed 6 --quiet > "$work/m4.jsonl"
cmp -s "$work/m1.jsonl" "$work/m4.jsonl" && fail "seed did not change the output"
"$CELINE" mind --remote "$URL" --input "$work/docs.jsonl" --seed 5 --random-style --quiet > "$work/m5.jsonl"
[ "$(wc -l < "$work/m5.jsonl")" = 3 ] || fail "random style: expected 3 records"
"$CELINE" mind --remote "$URL" --input "$work/docs.jsonl" --styles teacher_student,interview --quiet \
  --with-chunk field > "$work/m6.jsonl"
python3 - "$work/m6.jsonl" <<'EOF'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
assert [r["style"] for r in recs] == ["teacher_student", "interview"] * 3
assert all(r["chunk"] and "$" in r["chunk"] for r in recs[:4])
assert recs[0]["text"].startswith("Student: ")      # the student speaks first in teacher_student
EOF
# one-shot: --text and stdin
"$CELINE" mind --remote "$URL" --text 'Two plus two is four, so $2+2=4$ holds.' --styles debate --quiet \
  | python3 -c 'import json,sys; r=[json.loads(l) for l in sys.stdin]; assert len(r)==1 and r[0]["id"]=="text/0/debate", r'
echo "A short text about \$a^2+b^2=c^2\$ and right triangles." | "$CELINE" mind --remote "$URL" --styles interview --quiet \
  | python3 -c 'import json,sys; r=[json.loads(l) for l in sys.stdin]; assert len(r)==1 and r[0]["source_id"]=="text", r'
# exact token counts with a tokenizer.json (the record's tokens = the tokenizer's count of its text)
tok="$CELINE_SRC/tests/data/models/qwen2-hf/tokenizer.json"
if [ -f "$tok" ]; then
  "$CELINE" mind --remote "$URL" --tokenizer "$tok" --text "Three is odd." --styles debate --quiet > "$work/tk.jsonl"
  python3 -c 'import json,sys; r=json.loads(open(sys.argv[1]).readline()); open(sys.argv[2],"w").write(r["text"]); print(r["tokens"])' \
    "$work/tk.jsonl" "$work/tk.txt" > "$work/tk.n"
  "$CELINE" tokenize --tokenizer "$tok" --file "$work/tk.txt" --no-add-special \
    | python3 -c 'import json,sys; c=json.load(sys.stdin)["count"]; n=int(open(sys.argv[1]).read()); assert c==n,(c,n)' "$work/tk.n" \
    || fail "--tokenizer counts differ from celine tokenize"
fi
# /v1/completions works too
"$CELINE" mind --remote "$URL" --completions --text "Ten is even." --styles debate --quiet | grep -q '"style":"debate"' \
  || fail "--completions"
grep -q '"path": "/v1/completions"' "$work/ok.log" || fail "no /v1/completions request logged"

# ------------------------------------------------------- user templates
mkdir -p "$work/tpl"
cat > "$work/tpl/coach.tmpl" <<'EOF'
@kind mind
@speakers Coach | Athlete
@user
Rewrite the context as a conversation. Stay strictly faithful to the context.
Every turn starts with the speaker's name and a colon ("{{speaker1}}:" or "{{speaker2}}:").
Context:
{{text}}
EOF
"$CELINE" mind --templates "$work/tpl" --list-templates --remote "$URL" | grep -q '^coach ' || fail "coach not listed"
"$CELINE" mind --remote "$URL" --templates "$work/tpl" --styles coach --text "One is odd." --quiet \
  | grep -q '"text":"Coach: ' || fail "user style not used"
printf '@kind mind\n@speakers A | B\n@user\n{{text}} {{colour}}\n' > "$work/tpl/bad.tmpl"
if "$CELINE" mind --remote "$URL" --templates "$work/tpl" --text x 2> "$work/bad.err"; then fail "bad template accepted"; fi
grep -q "bad.tmpl:4: unknown placeholder {{colour}}" "$work/bad.err" || fail "bad template message: $(cat "$work/bad.err")"
rm "$work/tpl/bad.tmpl"

# ------------------------------------------------------------ rephrase
"$CELINE" rephrase --remote "$URL" --input "$work/docs.jsonl" --seed 1 --output "$work/r1.jsonl" 2> "$work/r1.err"
python3 - "$work/r1.jsonl" "$work/r1.err" <<'EOF'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
stats = json.loads(open(sys.argv[2]).read().strip().splitlines()[-1])["stats"]
by = {}
for r in recs:
    by.setdefault(r["source_id"], []).append(r["prompt"])
# calc (17: high) -> the four high prompts; sums (low) -> wikipedia; 42 (no quality) -> all five
assert sorted(by["calc"]) == ["distill", "diverse_qa", "extract_knowledge", "knowledge_list"], by
assert by["sums"] == ["wikipedia"], by
assert sorted(by["42"]) == ["distill", "diverse_qa", "extract_knowledge", "knowledge_list", "wikipedia"], by
for r in recs:
    for k in ("id", "source_id", "chunk_index", "prompt", "text", "tokens", "model", "template", "sampling", "seed"):
        assert k in r, (k, r)
    assert r["sampling"]["temperature"] == 0.5 and r["sampling"]["top_p"] == 0.9
    assert not r["text"].startswith("Here is"), r["text"][:40]           # lead-ins removed
    if r["prompt"] == "diverse_qa":
        assert r["text"].startswith("The derivative") or r["text"].startswith("Prime numbers")
        assert "\n\nQuestion: " in r["text"] and "\nAnswer: " in r["text"]
    if r["prompt"] == "knowledge_list":
        assert all(not l.startswith("- ") for l in r["text"].split("\n"))
assert stats["records"] == len(recs) == 10
assert stats["dropped"].get("qa_unused", 0) > 0, stats   # 6 pairs offered, ~1 per 150 tokens kept
EOF

# ---------------------------------------------------------- crossthink
"$CELINE" crossthink --remote "$URL" --input "$work/docs.jsonl" --seed 2 --questions 3 \
  --output "$work/c1.jsonl" 2> "$work/c1.err"
python3 - "$work/c1.jsonl" "$work/c1.err" "$work/reward_in.jsonl" <<'EOF'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
stats = json.loads(open(sys.argv[2]).read().strip().splitlines()[-1])["stats"]
assert stats["dropped"]["gold_not_in_options"] == 3, stats   # one broken MCQ per document
assert stats["dropped"]["answer_too_long"] == 3, stats       # one 14-word open answer per document
tasks = [r["task"] for r in recs]
assert tasks.count("mcq") == 9 and tasks.count("open") == 9, tasks
with open(sys.argv[3], "w") as f:
    for r in recs:
        for k in ("id", "prompt", "reference", "task", "question", "source_id", "template", "rl_template", "seed"):
            assert k in r, (k, r)
        assert "\\boxed{}" in r["prompt"] and r["question"] in r["prompt"]
        if r["task"] == "mcq":
            assert len(r["choices"]) == 4 and r["reference"] in "ABCD"
            assert "A) " in r["prompt"]
        else:
            assert "choices" not in r and len(r["reference"].split()) <= 10
        # a perfect and a wrong answer for each item, for `celine reward`
        gold = r["reference"]
        wrong = "D" if gold != "D" else "A"
        f.write(json.dumps({"id": r["id"] + "+", "task": r["task"], "reference": gold, "choices": r.get("choices"),
                            "response": "Reasoning. \\boxed{%s}" % gold}) + "\n")
        f.write(json.dumps({"id": r["id"] + "-", "task": r["task"], "reference": gold, "choices": r.get("choices"),
                            "response": "Reasoning. \\boxed{%s}" % (wrong if r["task"] == "mcq" else "-1")}) + "\n")
EOF
"$CELINE" reward --input "$work/reward_in.jsonl" --advantage none > "$work/rewards.jsonl"
python3 - "$work/rewards.jsonl" <<'EOF'
import json, sys
res = [json.loads(l) for l in open(sys.argv[1])]
assert len(res) == 36
for r in res:
    assert r["reward"] == (1 if r["id"].endswith("+") else 0), r
EOF
# MCQ -> open conversion, deterministic across windows
"$CELINE" crossthink --remote "$URL" --input "$work/docs.jsonl" --seed 2 --questions 3 --formats mcq --mcq-to-open --quiet > "$work/c2.jsonl"
"$CELINE" crossthink --remote "$URL" --input "$work/docs.jsonl" --seed 2 --questions 3 --formats mcq --mcq-to-open --quiet --window 1 > "$work/c3.jsonl"
cmp "$work/c2.jsonl" "$work/c3.jsonl" || fail "crossthink not deterministic"
python3 -c '
import json,sys
r=[json.loads(l) for l in open(sys.argv[1])]
assert len(r)==9 and all(x["task"]=="open" and "choices" not in x and x["reference"].isdigit() for x in r), r[:2]
' "$work/c2.jsonl"

# ------------------------------------------------------------ failures
# nothing listening: every request fails after its retries -> exit 3, counted as gen_error
set +e
"$CELINE" mind --remote "http://127.0.0.1:1" --retries 1 --backoff-base 0.05 --timeout 2 --input "$work/docs.jsonl" --styles debate \
  --output "$work/dead.jsonl" 2> "$work/dead.err"
rc=$?
set -e
[ "$rc" = 3 ] || fail "unreachable server: exit $rc, expected 3"
grep -q '"gen_error":3' "$work/dead.err" || fail "gen_error not counted: $(tail -1 "$work/dead.err")"
[ ! -s "$work/dead.jsonl" ] || fail "records from a dead server"
# usage errors
set +e
"$CELINE" mind --text x > /dev/null 2>&1; [ $? = 2 ] || fail "no backend: expected exit 2"
"$CELINE" mind --remote "$URL" --text x --styles nosuchstyle > /dev/null 2> "$work/ns.err"; [ $? = 1 ] || fail "unknown style"
set -e
grep -q "nosuchstyle" "$work/ns.err" || fail "unknown style message"
echo "gen_remote: ok"
