#!/usr/bin/env bash
# End-to-end: corpus jobs with celine's own engine and server (the committed
# random-weight model tests/data/models/qwen2-q8_0.gguf; a random model writes no valid
# conversation, so every unit ends as a drop whose detail is the generated text, which
# makes rejects.jsonl a byte-exact record of what was generated):
#  - `celine job run --backend URL` against `celine serve` on 127.0.0.1 and
#    `--backend local --model` in-process generate the same text;
#  - a remote job killed with SIGKILL several times and resumed ends byte-identical;
#  - POST /v1/generate/mind answers records / drops / stats, deterministically;
#  - the jobs API: POST /v1/jobs runs a job inside --data-dir (same output as the CLI),
#    DELETE stops it keeping what is done, POSTing it again continues it, paths outside
#    the data folder and bad specs are refused; SIGTERM stops the server and its job,
#    and `celine job run` continues that job.
set -euo pipefail
: "${CELINE:?path of the celine binary}" "${CELINE_SRC:?source tree}"
. "$CELINE_SRC/tests/e2e/lib/job.sh" # PY, seq_of, kill_and_resume
model="$CELINE_SRC/tests/data/models/qwen2-q8_0.gguf"
tok="$CELINE_SRC/tests/data/models/qwen2-hf/tokenizer.json"
[ -f "$model" ] && [ -f "$tok" ] || { echo "job_serve: test model missing, skipped"; exit 0; }
work="$(mktemp -d)"
spid=""
cleanup() { [ -n "$spid" ] && kill -9 "$spid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
[ -n "${KEEP:-}" ] && trap - EXIT
fail() { echo "FAIL: $*" >&2; [ -f "$work/serve.err" ] && tail -5 "$work/serve.err" >&2; exit 1; }

mkdir -p "$work/data/in"
"$PY" - "$work/data/in/docs.jsonl" <<'EOF'
import json, random, sys
random.seed(3)
words = "the sum of the first n odd numbers is n squared and a proof by induction adds two n plus one".split()
with open(sys.argv[1], "w") as f:
    for i in range(60):
        f.write(json.dumps({"id": "d%02d" % i, "text": " ".join(random.choice(words) for _ in range(random.randint(8, 60)))}) + "\n")
EOF

start_serve() {
  "$CELINE" serve --model "$model" --port 0 --data-dir "$work/data" --engine-threads 1 --threads 2 \
    > "$work/serve.out" 2> "$work/serve.err" &
  spid=$!
  for _ in $(seq 200); do grep -q listening "$work/serve.out" 2>/dev/null && break; sleep 0.05; done
  URL="$(awk '/listening/{print $4}' "$work/serve.out")"
  [ -n "$URL" ] || fail "celine serve did not start"
  for _ in $(seq 200); do curl -sf "$URL/health" > /dev/null && return 0; sleep 0.05; done
  fail "the model did not load"
}
start_serve

GEN=(--kind mind --styles teacher_student,debate,interview --max-tokens 10 --temperature 2 --top-p 1 --seed 4 --rejects
     --checkpoint-s 0 --frame-records 4 --quiet --progress none)

# ------------------------------------------------ remote, killed and resumed
# (first, while the server's prefix cache is cold; each kill lands right after a checkpoint
# moved, a few milliseconds into the next stretch of work; after 12 kills it may finish)
kill_and_resume "$work/killed" 12 6 "$work/k.json" /dev/null \
  "$CELINE" job run "${GEN[@]}" --input "$work/data/in" --output "$work/killed" --backend "$URL" --tokenizer "$tok" \
  --concurrency 2 || fail "a resumed remote job failed"
grep -q '"state":"done"' "$work/k.json" || fail "the killed job never finished"
[ "$KILLS" -ge 3 ] || fail "only $KILLS kills landed"
echo "remote job killed $KILLS times"

# ------------------------------------------------ remote (celine serve) vs in-process
"$CELINE" job run "${GEN[@]}" --input "$work/data/in" --output "$work/remote" --backend "$URL" --tokenizer "$tok" \
  > "$work/remote.json" || fail "remote job failed"
"$CELINE" job run "${GEN[@]}" --input "$work/data/in" --output "$work/local" --backend local --model "$model" \
  --threads 1 > "$work/local.json" || fail "local job failed"
# The same units, reasons and generated text. A random model emits stray bytes (NUL, broken
# UTF-8): the server's JSON shows them as U+FFFD while a local drop detail ends at a NUL
# (cel_gen_sink.drop takes a C string), so a local detail may be a prefix there.
"$PY" - "$work/remote/rejects.jsonl" "$work/local/rejects.jsonl" <<'EOF' || fail "remote and in-process generation differ"
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
assert [(x["id"], x["reason"]) for x in a] == [(x["id"], x["reason"]) for x in b]
exact = 0
for x, y in zip(a, b):
    dx, dy = x.get("detail", ""), y.get("detail", "")
    if "\ufffd" in dx or "\ufffd" in dy:
        assert dx.startswith(dy.split("\ufffd")[0]), (x, y)
    else:
        assert dx == dy, (x, y)
        exact += 1
assert exact > len(a) // 2, (exact, len(a))
EOF
"$PY" - "$work/remote.json" "$work/remote/rejects.jsonl" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
c = s["counts"]
rej = [json.loads(l) for l in open(sys.argv[2])]
assert c["docs"] == 60 and c["records"] + c["dropped_total"] == s["units"] == len(rej) + c["records"], s
assert all(r.get("detail") is not None for r in rej if r["reason"] == "truncated")
EOF
cmp "$work/remote/rejects.jsonl" "$work/killed/rejects.jsonl" || fail "the killed + resumed remote job differs"

# ------------------------------------------------ one-shot generation
body='{"documents":[{"id":"x","text":"The sum of the first n odd numbers is n squared."},{"id":7,"text":"A proof by induction."}],
       "styles":["interview"],"max_tokens":8,"temperature":2,"top_p":1,"seed":9}'
curl -sf -X POST "$URL/v1/generate/mind" -d "$body" > "$work/g1.json" || fail "POST /v1/generate/mind failed"
curl -sf -X POST "$URL/v1/generate/mind" -d "$body" > "$work/g2.json" || fail "second POST failed"
cmp "$work/g1.json" "$work/g2.json" || fail "one-shot generation is not deterministic"
"$PY" - "$work/g1.json" <<'EOF'
import json, sys
g = json.load(open(sys.argv[1]))
s = g["stats"]
assert g["kind"] == "mind" and g["model"] == "qwen2-q8_0", g
assert s["docs"] == 2 and s["units"] == 2 and len(g["records"]) + len(g["dropped"]) == 2, g
assert {d["id"].split("/")[0] for d in g["dropped"]} <= {"x", "7"}, g
EOF
# remote backends: a request may make the server call only the URLs its operator allowed
code=$(curl -s -o "$work/e.json" -w '%{http_code}' -X POST "$URL/v1/generate/mind" -d "{\"text\":\"a\",\"backend\":\"$URL\"}")
[ "$code" = 403 ] && grep -q -- "--allow-backends" "$work/e.json" || fail "a remote backend without --allow-backends gave $code: $(cat "$work/e.json")"
code=$(curl -s -o "$work/e.json" -w '%{http_code}' -X POST "$URL/v1/generate/mind" -d "{\"text\":\"a\",\"backend\":[\"local\",\"$URL\"]}")
[ "$code" = 403 ] || fail "local plus a remote backend gave $code: $(cat "$work/e.json")"
code=$(curl -s -o "$work/e.json" -w '%{http_code}' -X POST "$URL/v1/jobs" -d "{\"kind\":\"mind\",\"input\":\"in\",\"output\":\"api0\",\"backend\":\"$URL\"}")
[ "$code" = 403 ] && [ ! -e "$work/data/api0" ] || fail "a job with a remote backend without --allow-backends gave $code: $(cat "$work/e.json")"
# a second server, no model, allowed to call the first: the same generation through it
"$CELINE" serve --port 0 --threads 1 --allow-backends "http://127.0.0.1:1, $URL" > "$work/proxy.out" 2> "$work/proxy.err" &
ppid_=$!
for _ in $(seq 200); do grep -q listening "$work/proxy.out" 2>/dev/null && break; sleep 0.05; done
PURL="$(awk '/listening/{print $4}' "$work/proxy.out")"
[ -n "$PURL" ] || { kill -9 "$ppid_"; fail "the second server did not start"; }
pbody="${body%\}}, \"backend\": \"$URL\", \"remote_model\": \"qwen2-q8_0\"}"
code=$(curl -s -o "$work/g3.json" -w '%{http_code}' -X POST "$PURL/v1/generate/mind" -d "$pbody")
code2=$(curl -s -o "$work/e.json" -w '%{http_code}' -X POST "$PURL/v1/generate/mind" \
  -d "{\"text\":\"a\",\"backend\":\"${URL}0\"}")
kill -TERM "$ppid_"; wait "$ppid_" || true
[ "$code" = 200 ] || fail "generation through an allowed backend gave $code: $(cat "$work/g3.json")"
"$PY" - "$work/g1.json" "$work/g3.json" <<'EOF'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
assert b["stats"]["units"] == a["stats"]["units"] == 2, b
assert len(b["records"]) + len(b["dropped"]) == 2, b
EOF
[ "$code2" = 403 ] && grep -q "not among" "$work/e.json" || fail "a URL that only shares a prefix with an allowed one gave $code2: $(cat "$work/e.json")"
code=$(curl -s -o "$work/e.json" -w '%{http_code}' -X POST "$URL/v1/generate/mind" -d '{"text":"a","chunk_tokenz":3}')
[ "$code" = 400 ] && grep -q chunk_tokenz "$work/e.json" || fail "an unknown key gave $code: $(cat "$work/e.json")"
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$URL/v1/generate/poem" -d '{"text":"a"}')
[ "$code" = 404 ] || fail "an unknown kind gave $code"
# a client that goes away cancels its generation: the slot is free again soon (on 2 CPUs
# one one-shot generation runs at a time; this one would take a minute)
"$PY" - "$work/big.json" <<'EOF'
import json, sys
docs = [{"id": i, "text": "The sum of the first n odd numbers is n squared. " * 20} for i in range(300)]
json.dump({"documents": docs, "max_tokens": 64, "temperature": 2, "top_p": 1}, open(sys.argv[1], "w"))
EOF
curl -s -o /dev/null --max-time 0.5 -X POST "$URL/v1/generate/mind" --data-binary @"$work/big.json" || true
ok=""
# up to ~30 s: sanitizer builds on a loaded machine notice the disconnect late, while the
# abandoned generation itself would hold the slot for minutes there
for _ in $(seq 300); do
  code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$URL/v1/generate/mind" -d "$body")
  [ "$code" = 200 ] && { ok=1; break; }
  [ "$code" = 429 ] || fail "one-shot after a cancelled one gave $code"
  sleep 0.1
done
[ -n "$ok" ] || fail "the abandoned generation was not cancelled"

# ------------------------------------------------ the jobs API
spec() { # OUTPUT [extra JSON members]
  echo "{\"kind\":\"mind\",\"input\":\"in\",\"output\":\"$1\",\"styles\":[\"teacher_student\",\"debate\",\"interview\"],\"max_tokens\":10,
         \"temperature\":2,\"top_p\":1,\"seed\":4,\"rejects\":true,\"checkpoint_s\":0,\"frame_records\":4${2:-}}"
}
wait_job() { # ID: waits until it is no longer running; prints the final JSON
  for _ in $(seq 600); do
    curl -sf "$URL/v1/jobs/$1" > "$work/job.json" || fail "GET /v1/jobs/$1 failed"
    grep -q '"state":"running"\|"state":"stopping"' "$work/job.json" || { cat "$work/job.json"; return 0; }
    sleep 0.1
  done
  fail "job $1 did not finish"
}
curl -sf -X POST "$URL/v1/jobs" -d "$(spec api1)" > "$work/p.json" || fail "POST /v1/jobs failed"
id=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['id'])" "$work/p.json")
wait_job "$id" | grep -q '"state":"done"' || fail "API job did not finish: $(cat "$work/job.json")"
cmp "$work/local/rejects.jsonl" "$work/data/api1/rejects.jsonl" || fail "the API job differs from the CLI job"
curl -sf "$URL/v1/jobs" | grep -q "\"$id\"" || fail "GET /v1/jobs does not list $id"

# DELETE stops a job keeping what is done; POSTing it again continues
curl -sf -X POST "$URL/v1/jobs" -d "$(spec api2)" > "$work/p.json" || fail "POST api2 failed"
id=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['id'])" "$work/p.json")
sleep 0.05
code=$(curl -s -o /dev/null -w '%{http_code}' -X DELETE "$URL/v1/jobs/$id")
[ "$code" = 202 ] || fail "DELETE gave $code"
state=$(wait_job "$id" | "$PY" -c "import json,sys; print(json.load(sys.stdin)['state'])")
[ "$state" = stopped ] || [ "$state" = done ] || fail "a cancelled job ended $state"
echo "cancelled job: $state"
curl -sf -X POST "$URL/v1/jobs" -d "$(spec api2)" > "$work/p.json" || fail "re-POST api2 failed"
id=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['id'])" "$work/p.json")
wait_job "$id" | grep -q '"resumed":true' || fail "the re-POSTed job did not resume: $(cat "$work/job.json")"
cmp "$work/local/rejects.jsonl" "$work/data/api2/rejects.jsonl" || fail "the cancelled + continued job differs"

# refusals
for bad in '{"kind":"mind","input":"../x","output":"o"}' '{"kind":"mind","input":"/etc/passwd","output":"o"}' \
           '{"kind":"mind","input":"in","output":"../o"}' '{"kind":"mind","input":"in","output":"o","model":"m"}' \
           '{"kind":"mind","input":"in"}' '{"kind":"mind","input":"in","output":"o","nokey":1}' \
           '{"kind":"mind","input":"in","output":"o","prompts":"a"}'; do
  code=$(curl -s -o "$work/e.json" -w '%{http_code}' -X POST "$URL/v1/jobs" -d "$bad")
  [ "$code" = 400 ] || fail "POST $bad gave $code: $(cat "$work/e.json")"
done
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$URL/v1/jobs" -d '{"kind":"mind","input":"missing","output":"o"}')
[ "$code" = 404 ] || fail "a missing input gave $code"
code=$(curl -s -o /dev/null -w '%{http_code}' "$URL/v1/jobs/job-999999")
[ "$code" = 404 ] || fail "an unknown job gave $code"

# SIGTERM while a job runs: the server stops, the job keeps a checkpoint, the CLI continues it
curl -sf -X POST "$URL/v1/jobs" -d "$(spec api3)" > /dev/null || fail "POST api3 failed"
sleep 0.4
kill -TERM "$spid"
wait "$spid" || fail "the server did not exit cleanly after SIGTERM"
spid=""
[ -f "$work/data/api3/state.json" ] || fail "no checkpoint after SIGTERM"
"$CELINE" job run "${GEN[@]}" --input "$work/data/in" --output "$work/data/api3" --backend local --model "$model" \
  --threads 1 > "$work/c.json" || fail "the CLI could not continue the server's job"
cmp "$work/local/rejects.jsonl" "$work/data/api3/rejects.jsonl" || fail "the job continued by the CLI differs"
echo "job_serve: ok"
