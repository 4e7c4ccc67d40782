# tests/e2e/lib/job.sh - sourced by the job e2e tests (job_resume.sh, job_serve.sh);
# kept out of tests/e2e/*.sh so that it is not itself registered as a test.

# PY: the python3 that runs the tests' helper scripts (the system one when there is one).
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3

# seq_of DIR: the checkpoint sequence number in DIR/state.json ("none" before the first).
seq_of() { grep -o '"seq": [0-9]*' "$1/state.json" 2>/dev/null | grep -o '[0-9]*$' || echo none; }

# kill_and_resume DIR MAX_KILLS MAX_DELAY_CS OUT ERR CMD...
# Runs CMD (a `celine job run` writing DIR) in the background again and again; each time,
# once its checkpoint in DIR has moved (so every session makes progress), waits a random
# 0..MAX_DELAY_CS-1 hundredths of a second and kills it with SIGKILL, so that kills land in
# reading, generating, writing frames and checkpointing alike. After MAX_KILLS kills (or
# when a run finished before the kill landed) the run is left to finish. CMD's stdout goes
# to OUT and its stderr to ERR, each run overwriting them. Sets KILLS to the kills that
# landed; returns CMD's failure status when the last run fails, 1 after 60 rounds.
kill_and_resume() {
  local dir="$1" max_kills="$2" max_delay="$3" out="$4" err="$5"
  shift 5
  KILLS=0
  local round pid s0 s1
  for round in $(seq 1 60); do
    "$@" > "$out" 2> "$err" &
    pid=$!
    s0="$(seq_of "$dir")"
    for _ in $(seq 1000); do
      kill -0 "$pid" 2>/dev/null || break
      s1="$(seq_of "$dir")"
      [ "$s1" != none ] && [ "$s1" != "$s0" ] && break
      sleep 0.01
    done
    sleep "$(printf '0.%02d' $((RANDOM % max_delay)))"
    if [ "$KILLS" -lt "$max_kills" ] && kill -9 "$pid" 2>/dev/null; then
      wait "$pid" 2>/dev/null || true
      KILLS=$((KILLS + 1))
    else
      wait "$pid" || return
      return 0
    fi
  done
  return 1
}
