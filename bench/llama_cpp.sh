#!/usr/bin/env bash
# bench/llama_cpp.sh - celine's CPU engine side by side with llama.cpp on the
# same GGUF files (a Qwen2.5-0.5B-shaped random-weight model in Q8_0 and F16,
# made by tools/mkmodel.py), same thread count, several repetitions, medians.
#
#   bash bench/llama_cpp.sh [--build-only] [--threads N] [--reps R] [--quick] [--dtypes "q8_0 f16"]
#                           [--llama-poll P]
#
# Cases (each repetition runs llama.cpp then celine, alternating, so a busy
# machine slows both alike; medians over the repetitions):
#   single stream  llama-bench -p 512 -n 128  vs  celine bench --batch 1
#                  (prefill of 512 tokens; decode of 128 from an empty context)
#   parallel       llama-batched-bench -npp 128 -ntg 32 -npl 16,64 (its default
#                  per-sequence KV streams; -kvu, one unified KV cache, makes every
#                  sequence attend over all 64 sequences' cells: 3x slower decode)  vs
#                  celine bench --batch 16|64 --prompt-tokens 128 --gen-tokens 33
#                  (aggregate prefill and decode tokens/s over the batch)
#   shared prefix  celine bench --samples 16 --prompt-tokens 1000: time to the
#                  first token of 16 samples of one prompt / of one sample
# --quick shrinks every size (a smoke run of the script itself). --llama-poll
# passes --poll P to llama.cpp (its threads spin-wait by default (50), which
# collapses when other processes share the cores; 0 = no polling).
#
# llama.cpp is built from the tree bundled in node-llama-cpp@3.21.1 (npm pack,
# sha256-checked; git clone of package/llama/gitRelease.bundle), CPU only,
# -DGGML_NATIVE=ON, targets llama-bench and llama-batched-bench only. The build
# (~12 min on 2 cores) is cached in .fixtures/llama.cpp/ and reused.
# celine is built into build-bench/ (Release, no CUDA) unless $CELINE is set.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
FIX="$ROOT/.fixtures/llama.cpp"
PKG_VER=3.21.1
PKG_SHA256=7a231d6bafa14142a1cbed9893d4ec5bc6041b2a5f5939a623accaab4203c11f
BUILD_ONLY=0
QUICK=0
THREADS="$(nproc)"
REPS=3
DTYPES="q8_0 f16"
POLL=()
while [ $# -gt 0 ]; do
  case "$1" in
    --build-only) BUILD_ONLY=1 ;;
    --quick) QUICK=1 ;;
    --threads) THREADS="$2"; shift ;;
    --reps) REPS="$2"; shift ;;
    --dtypes) DTYPES="$2"; shift ;;
    --llama-poll) POLL=(--poll "$2"); shift ;;
    -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
    *) echo "llama_cpp.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
  shift
done
log() { echo "[llama_cpp.sh] $*" >&2; }

# ---- 1. llama.cpp tools (cached) ----
build_llama() {
  local bin="$FIX/build/bin"
  if [ -x "$bin/llama-bench" ] && [ -x "$bin/llama-batched-bench" ]; then return 0; fi
  mkdir -p "$FIX"
  local tgz="$FIX/node-llama-cpp-$PKG_VER.tgz"
  if [ ! -f "$tgz" ] || ! echo "$PKG_SHA256  $tgz" | sha256sum -c --quiet - 2>/dev/null; then
    log "fetching node-llama-cpp@$PKG_VER"
    (cd "$FIX" && rm -f "$tgz" && npm pack --silent "node-llama-cpp@$PKG_VER" >/dev/null)
    echo "$PKG_SHA256  $tgz" | sha256sum -c --quiet - || { log "sha256 mismatch for $tgz"; exit 1; }
  fi
  if [ ! -f "$FIX/src/CMakeLists.txt" ]; then
    rm -rf "$FIX/src" "$FIX/pkg"
    mkdir -p "$FIX/pkg"
    tar -xzf "$tgz" -C "$FIX/pkg" package/llama/gitRelease.bundle
    git -c advice.detachedHead=false clone -q "$FIX/pkg/package/llama/gitRelease.bundle" "$FIX/src"
    rm -rf "$FIX/pkg"
  fi
  log "building llama-bench and llama-batched-bench (CPU, GGML_NATIVE=ON; ~12 min on 2 cores)"
  cmake -S "$FIX/src" -B "$FIX/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DGGML_CUDA=OFF \
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=OFF -DBUILD_SHARED_LIBS=OFF >/dev/null
  cmake --build "$FIX/build" -j "$(nproc)" --target llama-bench llama-batched-bench >/dev/null
}
build_llama
[ "$BUILD_ONLY" = 1 ] && { log "llama.cpp tools ready in $FIX/build/bin"; exit 0; }

LB="$FIX/build/bin"
PY=/usr/bin/python3 # Debian's, with numpy (tools/mkmodel.py)

# ---- 2. celine (Release, CPU only) ----
if [ -z "${CELINE:-}" ]; then
  log "building celine into build-bench/"
  cmake -S "$ROOT" -B "$ROOT/build-bench" -DCMAKE_BUILD_TYPE=Release -DCELINE_CUDA=OFF -DCELINE_TESTS=OFF >/dev/null
  cmake --build "$ROOT/build-bench" -j "$(nproc)" --target celine >/dev/null
  CELINE="$ROOT/build-bench/celine"
fi

# ---- 3. the models: Qwen2.5-0.5B shape, random weights, the real Qwen tokenizer when fetched ----
MD="$ROOT/.fixtures/bench"
mkdir -p "$MD"
TOKARG=()
[ -f "$ROOT/.fixtures/tok/qwen3/tokenizer.json" ] && TOKARG=(--tokenizer "$ROOT/.fixtures/tok/qwen3/tokenizer.json")
for d in $DTYPES; do
  f="$MD/qwen2.5-0.5b-$d.gguf"
  if [ ! -s "$f" ]; then
    log "making $f (tools/mkmodel.py --preset qwen2.5-0.5b --dtype $d)"
    "$PY" "$ROOT/tools/mkmodel.py" --preset qwen2.5-0.5b --dtype "$d" "${TOKARG[@]}" --seed 1 --out "$f.tmp" >/dev/null
    mv "$f.tmp" "$f"
  fi
done

# ---- 4. the runs ----
if [ "$QUICK" = 1 ]; then
  PP=64 TG=16 NPP=32 NTG=8 NPL="4 16" SP=128 NS=4
else
  PP=512 TG=128 NPP=128 NTG=32 NPL="16 64" SP=1000 NS=16
fi
OUT="$ROOT/.fixtures/bench/results-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
log "threads $THREADS, $REPS repetitions, llama.cpp ${POLL[*]:-default polling}, results in $OUT"
uptime >"$OUT/load.txt"
for d in $DTYPES; do
  m="$MD/qwen2.5-0.5b-$d.gguf"
  for r in $(seq 1 "$REPS"); do
    log "$d rep $r: single stream"
    "$LB/llama-bench" -m "$m" -t "$THREADS" "${POLL[@]}" -p "$PP" -n "$TG" -r 1 -o json 2>/dev/null >"$OUT/llama-bench-$d-$r.json"
    "$CELINE" bench --model "$m" --threads "$THREADS" --batch 1 --prompt-tokens "$PP" --decode-prompt-tokens 1 \
      --gen-tokens $((TG + 1)) --reps 1 --no-shared --json >"$OUT/celine-1-$d-$r.json"
    for pl in $NPL; do
      log "$d rep $r: $pl parallel sequences"
      "$LB/llama-batched-bench" -m "$m" -t "$THREADS" "${POLL[@]}" -c $(((NPP + NTG) * pl + 64)) -b 2048 -ub 512 \
        -npp "$NPP" -ntg "$NTG" -npl "$pl" --output-format jsonl 2>/dev/null | grep '^{' >"$OUT/llama-batched-$d-$pl-$r.json"
      "$CELINE" bench --model "$m" --threads "$THREADS" --batch "$pl" --prompt-tokens "$NPP" \
        --gen-tokens $((NTG + 1)) --reps 1 --no-shared --json >"$OUT/celine-$pl-$d-$r.json"
    done
  done
  log "$d: shared prefix ($NS samples of a $SP-token prompt)"
  "$CELINE" bench --model "$m" --threads "$THREADS" --batch 1 --prompt-tokens "$SP" --decode-prompt-tokens 1 --gen-tokens 2 \
    --samples "$NS" --reps "$REPS" --json >"$OUT/celine-shared-$d.json"
done

# ---- 5. the table (medians, ratio = celine / llama.cpp) ----
"$PY" - "$OUT" "$DTYPES" "$NPL" "$PP" "$TG" "$NPP" "$NTG" "$THREADS" "$REPS" <<'PYEOF' | tee "$OUT/summary.md"
import json, os, statistics, sys
out, dtypes, npl = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
pp, tg, npp, ntg, threads, reps = (int(x) for x in sys.argv[4:10])
def load(name):
    with open(os.path.join(out, name)) as f:
        return json.loads(f.read())
def med(xs):
    return statistics.median(xs) if xs else float("nan")
print(f"| model | case | llama.cpp t/s | celine t/s | celine / llama.cpp |")
print(f"|---|---|---:|---:|---:|")
for d in dtypes:
    lpp, ltg, cpp, ctg = [], [], [], []
    for r in range(1, reps + 1):
        for t in load(f"llama-bench-{d}-{r}.json"):
            (lpp if t["n_gen"] == 0 else ltg).append(t["avg_ts"])
        c = load(f"celine-1-{d}-{r}.json")
        cpp.append(c["prefill_tok_s"]); ctg.append(c["decode_tok_s"])
    rows = [(f"prefill pp{pp}, 1 sequence", med(lpp), med(cpp)), (f"decode tg{tg}, 1 sequence", med(ltg), med(ctg))]
    for pl in npl:
        lp, lt, cp, ct = [], [], [], []
        for r in range(1, reps + 1):
            with open(os.path.join(out, f"llama-batched-{d}-{pl}-{r}.json")) as f:
                j = json.loads(f.read().strip().splitlines()[-1])
            lp.append(j["speed_pp"]); lt.append(j["speed_tg"])
            c = load(f"celine-{pl}-{d}-{r}.json")
            cp.append(c["prefill_tok_s"]); ct.append(c["decode_tok_s"])
        rows.append((f"prefill {pl} x {npp}, aggregate", med(lp), med(cp)))
        rows.append((f"decode {pl} x {ntg}, aggregate", med(lt), med(ct)))
    for name, l, c in rows:
        print(f"| qwen2.5-0.5b {d} | {name} | {l:.2f} | {c:.2f} | {c / l:.2f}x |")
    s = load(f"celine-shared-{d}.json")["shared_prefix"]
    print(f"| qwen2.5-0.5b {d} | {s['samples']} samples of one prompt vs 1 sample (time to every first token) | | "
          f"{s['all_samples_s']:.2f} s vs {s['one_sample_s']:.2f} s | {s['ratio']:.2f}x |")
load = open(os.path.join(out, "load.txt")).read().strip()
print(f"\n{threads} threads, medians of {reps} repetitions; at the start: {load}; results in {out}")
PYEOF
