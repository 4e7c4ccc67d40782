#!/usr/bin/env bash
# Load figures for `celine serve` with wrk (Debian's), on loopback:
#   1. GET /health and single-item POST /v1/reward at full speed, 64 connections;
#   2. both again paced at half the measured rate (wrk's Lua delay()), for p99;
#   3. resident memory while serving a million requests of each kind;
#   4. every fuzz seed (fuzz/corpus/http) replayed over a socket, then /health.
# Usage: bench/server_load.sh [CELINE_BINARY] [SECONDS]   (defaults: build/celine, 10)
# MEM_REQUESTS=N sets how many requests of each kind the memory stage serves (1000000).
# Prints a summary; the numbers in bench/README.md come from it.
set -euo pipefail
cd "$(dirname "$0")/.."
CELINE="${1:-${CELINE:-build/celine}}"
SECS="${2:-10}"
CONNS=64
command -v wrk >/dev/null || { echo "server_load: wrk is missing (apt-get install wrk)" >&2; exit 1; }
[ -x "$CELINE" ] || { echo "server_load: no celine binary at $CELINE" >&2; exit 1; }

work="$(mktemp -d)"
srv_pid=""
cleanup() {
  [ -n "$srv_pid" ] && kill -TERM "$srv_pid" 2>/dev/null && wait "$srv_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

"$CELINE" serve --port 0 --log-level warn >"$work/out" 2>"$work/err" &
srv_pid=$!
port=""
for _ in $(seq 1 100); do
  port="$(sed -n 's/^celine: listening on http:\/\/127\.0\.0\.1:\([0-9]*\)$/\1/p' "$work/out")"
  [ -n "$port" ] && break
  sleep 0.05
done
[ -n "$port" ] || { echo "server_load: the server did not start" >&2; cat "$work/err" >&2; exit 1; }
url="http://127.0.0.1:$port"

cat >"$work/reward.lua" <<'EOF'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"items":[{"id":"r1","task":"math","response":"Adding them gives 12, so the answer is \\boxed{12}.","reference":"12"}]}'
EOF
# pacing: each connection waits `d` ms between requests (wrk calls delay() per request)
paced() { # $1 = base script or "", $2 = delay ms
  { [ -n "$1" ] && cat "$1"; echo "function delay() return $2 end"; } >"$work/paced.lua"
  echo "$work/paced.lua"
}

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$srv_pid/status"; }
# the server's CPU time (user + system, all threads) in clock ticks
cpu_ticks() { awk '{print $14 + $15}' "/proc/$srv_pid/stat"; }
HZ="$(getconf CLK_TCK)"
rps_of() { awk '/^Requests\/sec/ {printf "%.0f", $2}' "$1"; }
p99_of() { awk '$1 == "99%" {print $2}' "$1"; }
p50_of() { awk '$1 == "50%" {print $2}' "$1"; }
non2xx_of() { awk '/Non-2xx/ {print $NF}' "$1"; }

run_wrk() { # name, path, script or "", duration
  local name="$1" path="$2" script="$3" dur="$4"
  local args=(-t2 -c"$CONNS" -d"${dur}s" --latency)
  [ -n "$script" ] && args+=(-s "$script")
  local t0; t0="$(cpu_ticks)"
  wrk "${args[@]}" "$url$path" >"$work/$name.txt"
  echo $(( $(cpu_ticks) - t0 )) >"$work/$name.cpu"
  local bad; bad="$(non2xx_of "$work/$name.txt")"
  [ -z "$bad" ] || { echo "server_load: $name had $bad non-2xx answers" >&2; cat "$work/$name.txt" >&2; exit 1; }
}

echo "celine serve load test: $(nproc) cores, wrk -t2 -c$CONNS, ${SECS}s runs, $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"
wrk -t2 -c"$CONNS" -d2s "$url/health" >/dev/null # warm-up
rss0="$(rss_kb)"

run_wrk health /health "" "$SECS"
run_wrk reward /v1/reward "$work/reward.lua" "$SECS"
h_rps="$(rps_of "$work/health.txt")"; r_rps="$(rps_of "$work/reward.txt")"
# CPU the server spent per request: a figure that other load on the machine does not skew
us_per_req() { awk -v t="$(cat "$work/$1.cpu")" -v hz="$HZ" -v r="$2" -v s="$SECS" 'BEGIN {printf "%.1f", t / hz * 1e6 / (r * s)}'; }
printf '%-34s %10s req/s   p50 %-9s p99 %-9s server CPU %s us/req\n' "GET /health (full speed)" "$h_rps" \
  "$(p50_of "$work/health.txt")" "$(p99_of "$work/health.txt")" "$(us_per_req health "$h_rps")"
printf '%-34s %10s req/s   p50 %-9s p99 %-9s server CPU %s us/req\n' "POST /v1/reward 1 item (full speed)" "$r_rps" \
  "$(p50_of "$work/reward.txt")" "$(p99_of "$work/reward.txt")" "$(us_per_req reward "$r_rps")"

# half load: with c connections and a target of R/2 req/s, each waits about 2c/R s
# (wrk's delay() counts whole milliseconds: round down, so the load is at least half)
h_delay=$(( 2 * CONNS * 1000 / h_rps )); [ "$h_delay" -ge 1 ] || h_delay=1
r_delay=$(( 2 * CONNS * 1000 / r_rps )); [ "$r_delay" -ge 1 ] || r_delay=1
run_wrk health_half /health "$(paced "" "$h_delay")" "$SECS"
run_wrk reward_half /v1/reward "$(paced "$work/reward.lua" "$r_delay")" "$SECS"
printf '%-34s %10s req/s   p50 %-9s p99 %s\n' "GET /health (paced ~half)" "$(rps_of "$work/health_half.txt")" \
  "$(p50_of "$work/health_half.txt")" "$(p99_of "$work/health_half.txt")"
printf '%-34s %10s req/s   p50 %-9s p99 %s\n' "POST /v1/reward (paced ~half)" "$(rps_of "$work/reward_half.txt")" \
  "$(p50_of "$work/reward_half.txt")" "$(p99_of "$work/reward_half.txt")"

# memory: keep going until each kind has served a million requests; sample RSS on the way
total() { curl -s "$url/metrics" | awk -v r="$1" '$1 ~ "^celine_http_requests_total\\{route=\""r"\",status=\"200\"\\}$" {print $2}'; }
echo "resident memory (KiB): after warm-up $rss0"
for path in /health /v1/reward; do
  script=""; [ "$path" = /v1/reward ] && script="$work/reward.lua"
  n="$(total "$path")"; n="${n:-0}"
  while [ "${n%.*}" -lt "${MEM_REQUESTS:-1000000}" ]; do
    run_wrk mem "$path" "$script" 5
    n="$(total "$path")"; n="${n:-0}"
    echo "  $path: ${n%.*} requests served, RSS $(rss_kb)"
  done
done

# the fuzz seeds over a real socket, then a health check
python3 - "$port" fuzz/corpus/http <<'EOF'
import os, socket, sys
port, folder = int(sys.argv[1]), sys.argv[2]
n = 0
for name in sorted(os.listdir(folder)):
    data = open(os.path.join(folder, name), "rb").read()[1:]  # byte 0 is the fuzzer's fragment size
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    try:
        while s.recv(65536):
            pass
    except OSError:
        pass
    s.close()
    n += 1
print("fuzz seeds replayed over sockets: %d" % n)
EOF
curl -sf "$url/health" >/dev/null && echo "server healthy after the seeds"
kill -TERM "$srv_pid"
wait "$srv_pid"
echo "server exit status: $?"
srv_pid=""
