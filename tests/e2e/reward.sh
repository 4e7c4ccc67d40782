#!/usr/bin/env bash
# End-to-end: `celine reward` on the sample rollouts and on hand-made input:
# order, fields, advantages, error records and exit codes, stdin/stdout,
# --format, --threads, --advantage modes.
set -euo pipefail
: "${CELINE:?path of the built celine binary}"
: "${CELINE_SRC:?source tree}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
py() { python3 - "$@"; }

# 1. the sample rollouts: every line graded, in order, with advantages per group
"$CELINE" reward --input "$CELINE_SRC/data/samples/rewards.jsonl" --advantage grpo >"$tmp/out.jsonl" \
  || fail "sample run exited $?"
py "$CELINE_SRC/data/samples/rewards.jsonl" "$tmp/out.jsonl" <<'EOF'
import json, sys, math, collections
inp = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
out = [json.loads(l) for l in open(sys.argv[2])]
assert len(inp) == len(out), (len(inp), len(out))
for a, b in zip(inp, out):
    assert a["id"] == b["id"], (a["id"], b["id"])
    for k in ("reward", "correct", "format_ok", "extracted", "reason"):
        assert k in b, (k, b)
    assert isinstance(b["reward"], (int, float)) and isinstance(b["correct"], bool)
    assert ("advantage" in b) == ("group" in a), b
    assert b["reward"] == (1.0 if b["correct"] else 0.0)
by = {b["id"]: b for b in out}
# spot checks of tricky items
assert by["math-017-s0"]["correct"] and not by["math-017-s3"]["correct"]
assert by["math-042-s0"]["correct"] and not by["math-042-s2"]["correct"]
assert by["math-108-s0"]["correct"] and not by["math-108-s1"]["correct"]
assert by["mmlu-bio-07-s2"]["reason"] == "hedged"
assert by["mmlu-bio-07-s3"]["correct"] and by["mmlu-bio-07-s3"]["source"] == "mcq_text"
assert by["gpqa-phys-3-s3"]["reason"] == "invalid_option"
assert by["xthink-open-12-s1"]["f1"] == 0.0
# GRPO: per group mean 0 (groups with spread), group of 1 none
groups = collections.defaultdict(list)
for a, b in zip(inp, out):
    if "group" in a: groups[a["group"]].append(b)
for g, rows in groups.items():
    s = sum(r["advantage"] for r in rows)
    assert abs(s) < 1e-6, (g, s)
    rs = [r["reward"] for r in rows]
    if len(set(rs)) > 1:
        m = sum(rs) / len(rs)
        sd = math.sqrt(sum((x - m) ** 2 for x in rs) / (len(rs) - 1))
        for r in rows:
            assert abs(r["advantage"] - (r["reward"] - m) / (sd + 1e-6)) < 1e-6
print("sample ok:", len(out), "lines")
EOF

# 2. bad lines: error records in place, processing goes on, exit status 1
cat >"$tmp/bad.jsonl" <<'EOF'
{"id": 1, "task": "math", "response": "\\boxed{4}", "reference": "4", "group": "g"}
this is not json
{"id": 3, "task": "physics", "response": "x", "reference": "y"}

{"id": 4, "task": "mcq", "response": "The answer is B", "reference": "Q", "choices": ["a", "b"]}
{"id": 5, "response": "Answer: 12", "reference": 12, "group": "g"}
{"id": 6, "task": "open", "reference": "x"}
[1, 2]
EOF
set +e
"$CELINE" reward --input "$tmp/bad.jsonl" --advantage rloo >"$tmp/bad.out" 2>"$tmp/bad.err"
rc=$?
set -e
[ "$rc" = 1 ] || fail "bad input: exit $rc, want 1"
py "$tmp/bad.out" <<'EOF'
import json, sys
out = [json.loads(l) for l in open(sys.argv[1])]
assert len(out) == 7, len(out)   # the blank line is skipped
assert out[0]["id"] == 1 and out[0]["correct"] is True and out[0]["advantage"] == 0.0  # RLOO: both in g have 1
assert out[1]["id"] is None and out[1]["line"] == 2 and "invalid JSON" in out[1]["error"]
assert out[2]["id"] == 3 and "task" in out[2]["error"]
assert out[3]["id"] == 4 and out[3]["reason"] == "error" and "not a letter" in out[3]["error"]
assert out[4]["id"] == 5 and out[4]["correct"] is True and out[4]["advantage"] == 0.0  # RLOO: both 1
assert out[5]["id"] == 6 and "response" in out[5]["error"]
assert out[6]["line"] == 8 and "object" in out[6]["error"]
for o in out:
    assert o["reward"] in (0.0, 1.0)
print("bad lines ok")
EOF
grep -q "failed" "$tmp/bad.err" || fail "no failure summary on stderr"

# 3. stdin -> stdout, --format, partial credit, --advantage none (no advantage field)
printf '%s\n' '{"id":"a","task":"math","response":"The answer is 4","reference":"4","group":"g"}' \
              '{"id":"b","task":"math","response":"\\boxed{4}","reference":"4","group":"g"}' \
  | "$CELINE" reward --format boxed --reward-correct-bad-format 0.5 --advantage none >"$tmp/fmt.out"
py "$tmp/fmt.out" <<'EOF'
import json, sys
a, b = [json.loads(l) for l in open(sys.argv[1])]
assert a["correct"] and not a["format_ok"] and a["reward"] == 0.5 and a["reason"] == "bad_format", a
assert b["correct"] and b["format_ok"] and b["reward"] == 1.0, b
assert "advantage" not in a and "advantage" not in b
print("format ok")
EOF

# 4. threads give the same output as one thread, on a larger generated input
py "$tmp/many.jsonl" <<'EOF'
import json, sys
with open(sys.argv[1], "w") as f:
    for i in range(3000):
        k = i % 3
        if k == 0:
            d = {"task": "math", "response": "so \\boxed{\\frac{%d}{2}}" % (i % 7), "reference": "%g" % ((i % 5) / 2)}
        elif k == 1:
            d = {"task": "mcq", "response": "The answer is (%s)." % "ABCD"[i % 4], "reference": "B"}
        else:
            d = {"task": "open", "response": "Answer: %s" % ["Paris", "Rome"][i % 2], "reference": "Paris"}
        d["id"] = i
        d["group"] = "p%d" % (i // 8)
        f.write(json.dumps(d) + "\n")
EOF
"$CELINE" reward --input "$tmp/many.jsonl" --threads 1 --output "$tmp/t1.out"
"$CELINE" reward --input "$tmp/many.jsonl" --threads 4 --output "$tmp/t4.out"
cmp -s "$tmp/t1.out" "$tmp/t4.out" || fail "--threads 4 output differs from --threads 1"
[ "$(wc -l <"$tmp/t1.out")" = 3000 ] || fail "expected 3000 output lines"
"$CELINE" reward --input "$tmp/many.jsonl" --advantage dr_grpo --whiten >"$tmp/w.out"
py "$tmp/w.out" <<'EOF'
import json, sys, statistics
adv = [json.loads(l)["advantage"] for l in open(sys.argv[1])]
assert abs(statistics.mean(adv)) < 1e-6 and abs(statistics.stdev(adv) - 1) < 1e-3
print("whiten ok")
EOF

# 5. usage errors exit 2; a missing file exits 1 with its name
set +e
"$CELINE" reward --advantage ppo </dev/null >/dev/null 2>&1; [ $? = 2 ] || fail "--advantage ppo should exit 2"
"$CELINE" reward --format fancy </dev/null >/dev/null 2>&1; [ $? = 2 ] || fail "--format fancy should exit 2"
"$CELINE" reward --input "$tmp/nope.jsonl" >/dev/null 2>"$tmp/err"; [ $? = 1 ] || fail "missing input should exit 1"
set -e
grep -q "nope.jsonl" "$tmp/err" || fail "error message does not name the file"
"$CELINE" reward --help | grep -q "advantage" || fail "--help"
echo "reward e2e: all ok"
