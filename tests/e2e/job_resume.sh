#!/usr/bin/env bash
# End-to-end: `celine job run` over a corpus of .jsonl and .jsonl.zst shards (with an
# invalid line, a line without text, a truncated zstd shard) against the fake OpenAI
# server (tests/e2e/gen_fake_openai.py) on 127.0.0.1:
#  - an uninterrupted run: counts, input errors reported with file and line, verify;
#  - the same job killed with SIGKILL at random moments, again and again, then resumed:
#    every shard, the rejects and the input-error report byte-identical to the
#    uninterrupted run; a SIGTERM stops it cleanly (exit 4) and it continues;
#  - round-robin with a server that answers 429 / 500 / 503 and drops connections: identical;
#  - --shard I/N (by id and by line): the parts verify, merge, and their records are
#    exactly the whole run's; a missing part fails verification;
#  - a changed configuration is refused; --restart starts over.
set -euo pipefail
: "${CELINE:?path of the celine binary}" "${CELINE_SRC:?source tree}"
. "$CELINE_SRC/tests/e2e/lib/job.sh" # PY, seq_of, kill_and_resume
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
[ -n "${KEEP:-}" ] && trap - EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

start_server() { # NAME [fake server args...]: sets PORT_<NAME>
  local name="$1"; shift
  "$PY" "$CELINE_SRC/tests/e2e/gen_fake_openai.py" "$@" > "$work/$name.port" 2> "$work/$name.err" &
  pids+=($!)
  for _ in $(seq 100); do grep -q PORT "$work/$name.port" 2>/dev/null && break; sleep 0.05; done
  local port; port="$(awk '/PORT/{print $2}' "$work/$name.port")"
  [ -n "$port" ] || fail "fake server $name did not start"
  eval "PORT_$name=$port"
}
start_server ok
start_server flaky --plan "drop,ok,429,ok,ok,500,ok,503,ok,drop,429ra,ok" --cycle
URL="http://127.0.0.1:$PORT_ok"
FLAKY="http://127.0.0.1:$PORT_flaky"

mkdir -p "$work/in/more"
"$PY" - "$work/in" <<'EOF'
import json, random, sys
random.seed(11)
d = sys.argv[1]
words = ("the derivative of a function measures how its value changes as the input changes and we compute "
         "it from limits of difference quotients which converge for smooth functions").split()
def doc(i):
    n = random.randint(15, 300)
    text = " ".join(random.choice(words) for _ in range(n))
    return json.dumps({"id": "doc%04d" % i, "text": text}) + "\n"
with open(d + "/a.jsonl", "w") as f:
    for i in range(0, 40):
        f.write(doc(i))
        if i == 7: f.write('{"id": "broken", "text": \n\n')          # invalid JSON, then a blank line
with open(d + "/more/b.jsonl.part1", "w") as f:
    for i in range(40, 60): f.write(doc(i))
with open(d + "/more/b.jsonl.part2", "w") as f:
    for i in range(60, 80): f.write(doc(i))
with open(d + "/c.jsonl", "w") as f:
    for i in range(80, 120):
        f.write(doc(i))
        if i == 100: f.write('{"id": "notext", "body": "no text field"}\n')
for k in range(4):                                                     # d: 4 zstd frames of 5 documents
    with open(d + "/d.jsonl.part%d" % k, "w") as f:
        for i in range(120 + 5 * k, 125 + 5 * k): f.write(doc(i))
EOF
# b: two zstd frames; d: zstd cut short (a truncated shard)
zstd -q -c "$work/in/more/b.jsonl.part1" > "$work/in/more/b.jsonl.zst"
zstd -q -c "$work/in/more/b.jsonl.part2" >> "$work/in/more/b.jsonl.zst"
for k in 0 1 2 3; do zstd -q -c "$work/in/d.jsonl.part$k" >> "$work/d.zst"; done
head -c $(( $(stat -c %s "$work/d.zst") * 6 / 10 )) "$work/d.zst" > "$work/in/d.jsonl.zst"
rm "$work/in/more/"*.part* "$work/in/"d.jsonl.part* "$work/d.zst"

JOB=(job run --kind mind --input "$work/in" --seed 5 --chunk-tokens 90 --frame-records 12 --shard-records 150 --checkpoint-s 0
     --rejects --progress json --quiet)

# ---------------------------------------------------------------- uninterrupted
"$CELINE" "${JOB[@]}" --backend "$URL" --output "$work/ref" > "$work/ref.json" 2> "$work/ref.err" \
  || fail "reference run failed: $(tail -3 "$work/ref.err")"
"$PY" - "$work/ref.json" "$work/ref" <<'EOF'
import json, sys, os
s = json.load(open(sys.argv[1]))
c = s["counts"]
assert s["state"] == "done" and not s["resumed"], s
assert c["input_errors"] == {"invalid_line": 2, "corrupt_shard": 1}, c
assert 125 <= c["docs"] < 140 and c["lines"] == c["docs"] + 3, c   # d.jsonl.zst: whole frames before its cut
assert c["records"] == s["units"] and c["records"] % 7 == 0 and c["records"] > 7 * c["docs"], c
assert c["shards"] >= 5, c
errs = [json.loads(l) for l in open(os.path.join(sys.argv[2], "input_errors.jsonl"))]
kinds = {(os.path.basename(e["file"]), e["line"], e["kind"]) for e in errs}
assert ("a.jsonl", 9, "invalid_line") in kinds, kinds
assert ("c.jsonl", 22, "invalid_line") in kinds, kinds
assert any(k[0] == "d.jsonl.zst" and k[2] == "corrupt_shard" for k in kinds), kinds
m = json.load(open(os.path.join(sys.argv[2], "manifest.json")))
assert m["counts"] == c and m["seed"] == 5 and m["kind"] == "mind" and m["model"] == "default", m
assert sum(x["records"] for x in m["shards"]) == c["records"]
EOF
"$CELINE" job verify --deep "$work/ref" > "$work/verify.json" || fail "verify of the reference failed"
grep -q '"ok":true' "$work/verify.json" || fail "verify did not say ok"

same_as_ref() { # DIR: shards, rejects and input errors byte-identical to ref
  local d="$1" n=0
  for f in "$work/ref"/shard-*.jsonl.zst "$work/ref/rejects.jsonl" "$work/ref/input_errors.jsonl"; do
    [ -e "$f" ] || continue
    cmp "$f" "$d/$(basename "$f")" || fail "$d/$(basename "$f") differs from the uninterrupted run"
    n=$((n + 1))
  done
  [ "$(ls "$d"/shard-*.jsonl.zst | wc -l)" = "$(ls "$work/ref"/shard-*.jsonl.zst | wc -l)" ] || fail "$d: shard count differs"
  [ -z "$(ls -A "$d" | grep '^\.pending')" ] || fail "$d: pending files left over"
  echo "  $d: $n files identical"
}

# ---------------------------------------------------------------- kill -9, resume
# Each kill lands a random 0-0.5 s after the checkpoint moved (so every session makes
# progress, and kills hit reading, generating, writing frames and checkpointing alike);
# after 15 kills the job may finish. A smaller window than the reference run's: the
# output must not depend on it either.
kill_and_resume "$work/killed" 15 60 "$work/k.json" "$work/k.err" \
  "$CELINE" "${JOB[@]}" --backend "$URL" --window 6 --output "$work/killed" \
  || fail "a resumed run failed: $(tail -3 "$work/k.err")"
grep -q '"state":"done"' "$work/k.json" || fail "the killed job never finished"
[ "$KILLS" -ge 3 ] || fail "only $KILLS kills landed before the job finished: the test did not test resuming"
echo "killed $KILLS times"
same_as_ref "$work/killed"
"$CELINE" job verify --deep "$work/killed" > /dev/null || fail "verify after kills failed"
# running a finished job again does nothing
"$CELINE" "${JOB[@]}" --backend "$URL" --output "$work/killed" > "$work/again.json" || fail "rerun of a done job failed"
grep -q '"already_done":true' "$work/again.json" || fail "a finished job ran again"

# ---------------------------------------------------------------- SIGTERM: clean stop, exit 4
"$CELINE" "${JOB[@]}" --backend "$URL" --output "$work/term" > "$work/t.json" 2> "$work/t.err" &
pid=$!
sleep 1.5
kill -TERM "$pid"
set +e; wait "$pid"; rc=$?; set -e
if [ "$rc" = 4 ]; then
  grep -q '"state":"stopped"' "$work/t.json" || fail "SIGTERM: no stopped summary"
elif [ "$rc" != 0 ]; then
  fail "SIGTERM: exit $rc: $(tail -3 "$work/t.err")"
fi
"$CELINE" "${JOB[@]}" --backend "$URL" --output "$work/term" > "$work/t2.json" 2>&1 || fail "continuing after SIGTERM failed"
same_as_ref "$work/term"

# ---------------------------------------------------------------- faults on the wire
# round-robin over a good server and one that fails often: same records
"$CELINE" "${JOB[@]}" --backend "$URL,$FLAKY" --retries 10 --backoff-base 0.02 --backoff-max 0.2 \
  --output "$work/rr" > "$work/f.json" 2> "$work/f.err" || fail "round-robin run failed: $(tail -3 "$work/f.err")"
same_as_ref "$work/rr"
"$PY" -c "import json,sys,urllib.request as u; s=json.load(u.urlopen('$FLAKY/stats')); assert s['requests'] > 100, s"

# ---------------------------------------------------------------- --shard I/N
for split in id line; do
  n=3; [ "$split" = line ] && n=2
  for i in $(seq 0 $((n - 1))); do
    "$CELINE" "${JOB[@]}" --backend "$URL" --output "$work/parts-$split" --shard "$i/$n" --split "$split" \
      > "$work/p$i.json" 2> "$work/p$i.err" || fail "part $i/$n failed: $(tail -3 "$work/p$i.err")"
  done
  "$CELINE" job verify --deep "$work/parts-$split" > /dev/null || fail "verify of the $split parts failed"
  "$CELINE" job merge "$work/parts-$split" > /dev/null || fail "merge of the $split parts failed"
  "$PY" - "$work/ref" "$work/parts-$split" "$n" <<'EOF'
import json, subprocess, sys, glob, os
def records(files):
    out = []
    for f in files:
        out += subprocess.run(["zstd", "-dc", f], check=True, capture_output=True, text=True).stdout.splitlines()
    return out
ref = records(sorted(glob.glob(sys.argv[1] + "/shard-*.jsonl.zst")))
parts = records(sorted(glob.glob(sys.argv[2] + "/part-*/shard-*.jsonl.zst")))
assert sorted(ref) == sorted(parts), (len(ref), len(parts))
m = json.load(open(os.path.join(sys.argv[2], "manifest.json")))
assert m["parts"] == int(sys.argv[3]) and m["counts"]["records"] == len(ref), m["counts"]
assert m["counts"]["input_errors"] == {"invalid_line": 2, "corrupt_shard": 1}, m["counts"]
for s in m["shards"]:
    assert os.path.exists(os.path.join(sys.argv[2], s["path"])), s
sizes = [json.load(open(p))["counts"]["docs"] for p in glob.glob(sys.argv[2] + "/part-*/manifest.json")]
assert len(sizes) == int(sys.argv[3]) and min(sizes) > 0, sizes
EOF
done
rm -rf "$work/parts-id/part-00001-of-00003"
if "$CELINE" job verify "$work/parts-id" > /dev/null 2> "$work/v.err"; then fail "verify passed with a part missing"; fi
grep -q "part 1 of 3 is missing" "$work/v.err" || fail "verify did not name the missing part: $(cat "$work/v.err")"

# ---------------------------------------------------------------- fields, size rotation, key, bar
# custom field names; the job's records are exactly `celine mind`'s for the same input
"$PY" - "$work/clean.jsonl" <<'EOF'
import json, sys
with open(sys.argv[1], "w") as f:
    for i in range(12):
        f.write(json.dumps({"doc_id": "c%d" % i, "content": "Limits define derivatives. " * (5 + 3 * i)}) + "\n")
EOF
"$CELINE" job run --kind mind --input "$work/clean.jsonl" --id-field doc_id --text-field content --seed 3 \
  --shard-bytes 1500 --frame-records 5 --backend "$URL" --api-key sekrit-key --progress bar --output "$work/clean" \
  > "$work/cl.json" 2> "$work/cl.err" || fail "clean job failed: $(tail -3 "$work/cl.err")"
grep -q "ETA" "$work/cl.err" || fail "no progress bar"
"$PY" -c "import json,sys,urllib.request as u; s=json.load(u.urlopen('$URL/stats')); assert 'Bearer sekrit-key' in s['auth'], s['auth']" \
  || fail "the API key was not sent"
"$CELINE" mind --input "$work/clean.jsonl" --id-field doc_id --text-field content --seed 3 --remote "$URL" --quiet \
  > "$work/clean_mind.jsonl" || fail "celine mind failed"
for f in "$work/clean"/shard-*.jsonl.zst; do zstd -dc "$f"; done | cmp - "$work/clean_mind.jsonl" \
  || fail "the job's records differ from celine mind's"
[ "$(ls "$work/clean"/shard-*.jsonl.zst | wc -l)" -ge 3 ] || fail "--shard-bytes did not rotate shards"
grep -q sekrit "$work/clean/state.json" "$work/clean/manifest.json" && fail "the API key was recorded"
"$CELINE" job verify --deep "$work/clean" > /dev/null || fail "verify of the rotated job failed"

# ---------------------------------------------------------------- config changes
set +e
"$CELINE" "${JOB[@]}" --backend "$URL" --output "$work/killed" --min-turns 3 > /dev/null 2> "$work/c.err"
rc=$?
set -e
[ "$rc" = 1 ] || fail "a changed configuration was not refused (exit $rc)"
grep -q "another configuration" "$work/c.err" || fail "no clear message: $(cat "$work/c.err")"
"$CELINE" "${JOB[@]}" --backend "$URL" --output "$work/killed" --min-turns 3 --restart > "$work/r.json" 2>/dev/null \
  || fail "--restart failed"
grep -q '"resumed":false' "$work/r.json" || fail "--restart resumed"
"$CELINE" job status "$work/killed" | grep -q '"state": "done"' || fail "status does not say done"
echo "job_resume: ok"
