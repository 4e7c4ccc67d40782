#!/usr/bin/env bash
# tests/gpu/run.sh OUT_DIR - the one GPU check of the CUDA backend, for a machine
# with an NVIDIA GPU, nvcc and CMake (and python3 + torch + transformers for
# the baseline; CELINE_GPU_TORCH=0 skips it). Builds celine's engine with CUDA
# (CELINE_ENGINE_ONLY: no libuv/curl/zstd/http-parser needed; only the CUDA
# tests and bench_gpu), runs the CUDA tests, the GPU benchmark (decode paths
# v2 = default, v1 and v3 side by side) and the PyTorch + transformers
# baseline (batch 64, in the same run), and writes into OUT_DIR:
#   build.log      environment, configure and build output
#   tests.log      test_cuda_ops, test_cuda_backend, compute-sanitizer memcheck
#   bench.log      bench_gpu (and gpu_torch.py) output
#   bench_gpu.json celine's figures        torch.json  the baseline's
#   summary.json   pass/fail of each step, the figures, and the issue's targets
# Each step has its own timeout, cut to what is left of the run's budget
# (CELINE_GPU_BUDGET_S, default 420 s: the run finishes within the issue's 8
# minutes on one H100; the last full run took about a minute and a half); a step with under 10 s left is skipped ("skipped(time)").
#
# Missing dev packages: when pkg-config (or libpcre2-8 / jansson / cmocka) is
# not on the machine, .gpudeps/ at the repo root may hold Debian packages
# extracted with dpkg -x (libpcre2-dev libpcre2-8-0 libjansson-dev libjansson4
# libcmocka-dev libcmocka0 pkgconf-bin libpkgconf3); their .pc files are
# rewritten to point there.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
OUT="${1:?usage: tests/gpu/run.sh OUT_DIR}"
mkdir -p "$OUT" && OUT="$(cd "$OUT" && pwd)"
BUILD="${CELINE_GPU_BUILD:-$ROOT/build-gpu}"
DEPS="$ROOT/.gpudeps"
JOBS="$(nproc 2>/dev/null || echo 4)"
T0=$(date +%s)
BUDGET="${CELINE_GPU_BUDGET_S:-420}"
declare -A STATUS
# Dry run on a machine without a GPU: CELINE_GPU_DRYRUN=DIR, a CUDA-on build
# of the whole project (scripts/build.sh with nvcc found; `cmake --build DIR
# --target bench_gpu_emu` once) whose *_emu programs run the kernels in the
# CPU emulation. The script skips configure and build, runs those programs
# (bench_gpu_emu on a 2-layer tiny model at the real batch sizes, prompts of
# 8 tokens, 2 steps, prefills of 4), and every step gets SLOW times its
# limit, so its flow - groups, isolation reruns, merge, summary,
# recommendations - is checked before GPU minutes are spent on it.
SUF="" SLOW=1 BENCH_ARGS=()
if [ -n "${CELINE_GPU_DRYRUN:-}" ]; then
  BUILD="$(cd "$CELINE_GPU_DRYRUN" && pwd)" SUF=_emu SLOW=30
  BENCH_ARGS=(--tiny --layers 2 --prompt 8 --steps 2 --prefill-prompt 4)
  BUDGET="${CELINE_GPU_BUDGET_S:-7200}"
fi

# seconds a step may take: its own limit, or what is left of the budget
step_to() {
  local want=$(($1 * SLOW)) left=$((BUDGET - ($(date +%s) - T0)))
  [ "$want" -lt "$left" ] && echo "$want" || echo "$left"
}

log() { echo "[gpu $(($(date +%s) - T0))s] $*" | tee -a "$OUT/build.log"; }
: >"$OUT/build.log"
: >"$OUT/tests.log"
: >"$OUT/bench.log"

# ---- environment
{
  echo "== environment"
  uname -a
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.memory --format=csv 2>&1 || echo "nvidia-smi: not available"
  (command -v nvcc >/dev/null && nvcc --version) || /usr/local/cuda/bin/nvcc --version 2>&1 || echo "nvcc: not found"
  cmake --version 2>&1 | head -1
  (cc --version 2>&1 | head -1) || true
  python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)' 2>&1 | tail -1
} >>"$OUT/build.log" 2>&1

# ---- dependencies: pkg-config, PCRE2, jansson, cmocka
PKGCONF="$(command -v pkg-config || command -v pkgconf || true)"
if [ -z "$PKGCONF" ] && [ -x "$DEPS/usr/bin/pkgconf" ]; then
  PKGCONF="$DEPS/usr/bin/pkgconf"
  export LD_LIBRARY_PATH="$DEPS/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  log "pkg-config: using $PKGCONF"
fi
if [ -z "$PKGCONF" ]; then
  log "FATAL: no pkg-config on this machine and none in $DEPS (add pkgconf-bin + libpkgconf3 there)"
  echo '{"build": "fail", "reason": "no pkg-config"}' >"$OUT/summary.json"
  exit 1
fi
missing=()
for m in libpcre2-8 jansson cmocka; do "$PKGCONF" --exists "$m" || missing+=("$m"); done
if [ ${#missing[@]} -gt 0 ]; then
  log "not found by pkg-config: ${missing[*]}"
  if [ -d "$DEPS/usr/lib/x86_64-linux-gnu/pkgconfig" ]; then
    PCDIR="$(mktemp -d)"
    for pc in "$DEPS"/usr/lib/x86_64-linux-gnu/pkgconfig/*.pc "$DEPS"/usr/share/pkgconfig/*.pc; do
      # prefix=/usr style and literal -L/usr -I/usr paths (cmocka.pc) both point into $DEPS
      [ -e "$pc" ] && sed -e "s|=/usr|=$DEPS/usr|g" -e "s|-L/usr|-L$DEPS/usr|g" -e "s|-I/usr|-I$DEPS/usr|g" "$pc" >"$PCDIR/$(basename "$pc")"
    done
    export PKG_CONFIG_PATH="$PCDIR${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
    export LD_LIBRARY_PATH="$DEPS/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export LIBRARY_PATH="$DEPS/usr/lib/x86_64-linux-gnu${LIBRARY_PATH:+:$LIBRARY_PATH}"
    log "using $DEPS (PKG_CONFIG_PATH=$PCDIR)"
    still=()
    for m in "${missing[@]}"; do "$PKGCONF" --exists "$m" || still+=("$m"); done
    [ ${#still[@]} -gt 0 ] && log "still missing after $DEPS: ${still[*]}"
  else
    log "no $DEPS folder to fall back on"
  fi
fi
"$PKGCONF" --exists cmocka || log "WARNING: cmocka missing: the CUDA tests will not be built (bench only)"

# ---- configure + build
GEN="Unix Makefiles"
command -v ninja >/dev/null && GEN=Ninja
if [ -n "$SUF" ]; then
  STATUS[configure]="skipped(dry-run)"
  STATUS[build]=pass
else
  if [ -f "$BUILD/CMakeCache.txt" ] && ! grep -q "^CMAKE_GENERATOR:INTERNAL=$GEN\$" "$BUILD/CMakeCache.txt"; then rm -rf "$BUILD"; fi
  log "configure ($BUILD)"
  if timeout "$(step_to 60)" cmake -S "$ROOT" -B "$BUILD" -G "$GEN" -DCMAKE_BUILD_TYPE=Release -DCELINE_ENGINE_ONLY=ON \
    -DCELINE_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DCELINE_TESTS=ON -DPKG_CONFIG_EXECUTABLE="$PKGCONF" \
    >>"$OUT/build.log" 2>&1; then
    STATUS[configure]=pass
  else
    STATUS[configure]=fail
  fi
  if [ "${STATUS[configure]}" = pass ]; then
    log "build (-j$JOBS)"
    targets=(bench_gpu)
    "$PKGCONF" --exists cmocka && targets+=(test_cuda_ops test_cuda_backend test_cuda_prefill)
    if timeout "$(step_to 150)" cmake --build "$BUILD" -j "$JOBS" --target "${targets[@]}" >>"$OUT/build.log" 2>&1; then
      STATUS[build]=pass
    else
      STATUS[build]=fail
    fi
  else
    STATUS[build]=skipped
  fi
fi
log "configure ${STATUS[configure]}, build ${STATUS[build]}"

# ---- tests
run_test() { # name timeout cmd...
  local name="$1" to
  to="$(step_to "$2")"
  shift 2
  if [ ! -x "$1" ] && ! command -v "$1" >/dev/null; then
    STATUS[$name]=missing
    echo "== $name: not built" >>"$OUT/tests.log"
    return
  fi
  if [ "$to" -lt 10 ]; then
    STATUS[$name]="skipped(time)"
    echo "== $name: skipped, the run's time budget is spent" >>"$OUT/tests.log"
    return
  fi
  echo "== $name" >>"$OUT/tests.log"
  local t=$(date +%s) tmp="$OUT/.test.out"
  if CMOCKA_MESSAGE_OUTPUT=stdout timeout "$to" "$@" >"$tmp" 2>&1; then STATUS[$name]=pass; else STATUS[$name]="fail(rc=$?)"; fi
  if grep -q "^SKIP: no CUDA device" "$tmp" && [ "${STATUS[$name]}" = pass ]; then STATUS[$name]=skipped; fi
  cat "$tmp" >>"$OUT/tests.log"
  rm -f "$tmp"
  log "$name: ${STATUS[$name]} ($(($(date +%s) - t))s)"
}
if [ "${STATUS[build]}" = pass ]; then
  run_test test_cuda_ops 45 "$BUILD/test_cuda_ops$SUF"
  run_test test_cuda_backend 45 "$BUILD/test_cuda_backend$SUF"
  run_test test_cuda_prefill 45 "$BUILD/test_cuda_prefill$SUF"
fi

# ---- benchmarks: one process per group (bench_gpu --only), the engine's
# defaults first, so a fault or a hang in an opt-in path costs that group's figures
# only; the parts are merged into bench_gpu.json
BENCH_GROUPS=(default:90 v2:110 v3:90 v3-pdl:70 prefill:45 v3-split1:40 v1:40)
if [ -x "$BUILD/bench_gpu$SUF" ]; then
  echo "== bench_gpu" >>"$OUT/bench.log"
  for gt in "${BENCH_GROUPS[@]}"; do
    g="${gt%%:*}" to="$(step_to "${gt##*:}")" k="bench_${gt%%:*}"
    rm -f "$OUT/bench_gpu.$g.json" # no figures from an earlier run into this one's merge
    if [ "$to" -lt 10 ]; then STATUS[$k]="skipped(time)"; continue; fi
    log "bench_gpu --only $g"
    echo "== bench_gpu --only $g" >>"$OUT/bench.log"
    t=$(date +%s)
    if timeout "$to" "$BUILD/bench_gpu$SUF" ${BENCH_ARGS[@]+"${BENCH_ARGS[@]}"} --only "$g" --out "$OUT/bench_gpu.$g.json" >>"$OUT/bench.log" 2>&1; then
      STATUS[$k]=pass
    else
      STATUS[$k]="fail(rc=$?)"
    fi
    log "bench_gpu --only $g: ${STATUS[$k]} ($(($(date +%s) - t))s)"
  done
  python3 - "$OUT" "${BENCH_GROUPS[@]%%:*}" <<'PY' >>"$OUT/bench.log" 2>&1
import json, os, sys
out, merged = sys.argv[1], {}
for g in sys.argv[2:]:  # later parts add their keys; lists of profiles and runs concatenate
    try:
        part = json.load(open(os.path.join(out, "bench_gpu.%s.json" % g)))
    except Exception as e:
        print("bench_gpu.%s.json: %s" % (g, e))
        continue
    for k, v in part.items():
        if isinstance(v, list):
            merged[k] = merged.get(k, []) + v
        elif k not in merged:
            merged[k] = v
json.dump(merged, open(os.path.join(out, "bench_gpu.json"), "w"), indent=1)
PY
  # the parts are in bench_gpu.json now; the device tool brings back 8 files at most
  [ -s "$OUT/bench_gpu.json" ] && for gt in "${BENCH_GROUPS[@]}"; do rm -f "$OUT/bench_gpu.${gt%%:*}.json"; done
  bad=()
  for gt in "${BENCH_GROUPS[@]}"; do [ "${STATUS[bench_${gt%%:*}]}" = pass ] || bad+=("${gt%%:*}"); done
  if [ ${#bad[@]} -eq 0 ]; then STATUS[bench_gpu]=pass; else STATUS[bench_gpu]="fail(${bad[*]})"; fi
else
  STATUS[bench_gpu]=missing
fi

# ---- a failed test program again, one test per process, and
# test_cuda_backend's models one decode path per process: a CUDA fault is
# sticky for its process, so the first failure would hide how the rest fare
isolate() { # program source
  local prog="$1" src="$2" name path
  case "${STATUS[$prog]:-missing}" in fail*) ;; *) return ;; esac
  # the names in the source, less the one of the build without CUDA
  for name in $(grep -o 'cmocka_unit_test([a-z0-9_]*)' "$src" | sed 's/.*(\(.*\))/\1/' | grep -v '^test_no_cuda$'); do
    CEL_TEST_FILTER="$name" run_test "$prog:$name" 30 "$BUILD/$prog$SUF"
  done
  if [ "$prog" = test_cuda_backend ]; then
    for path in default v2 v3 v3-pdl-nc v3-split4-c16 tiled v3-tiled v3-ra; do
      CEL_TEST_FILTER='test_model_*' CEL_TEST_CUDA_PATHS="$path" run_test "$prog:path:$path" 30 "$BUILD/$prog$SUF"
    done
  fi
}
isolate test_cuda_ops "$ROOT/tests/unit/test_cuda_ops.c"
isolate test_cuda_backend "$ROOT/tests/unit/test_cuda_backend.c"
isolate test_cuda_prefill "$ROOT/tests/unit/test_cuda_prefill.c"

# ---- memcheck last: it is the slowest step and the first to give way to the budget
SAN="$(command -v compute-sanitizer || true)"
[ -z "$SAN" ] && [ -x /usr/local/cuda/bin/compute-sanitizer ] && SAN=/usr/local/cuda/bin/compute-sanitizer
[ -n "$SUF" ] && SAN="" # the emulation has no device memory to check
if [ "${STATUS[build]}" = pass ] && [ -n "$SAN" ]; then
  run_test memcheck_cuda_ops 90 "$SAN" --tool memcheck --error-exitcode 9 "$BUILD/test_cuda_ops$SUF"
else
  STATUS[memcheck_cuda_ops]=missing
fi

# the baseline (about a minute; CELINE_GPU_TORCH=0 skips it when only celine's figures are wanted)
if [ "${CELINE_GPU_TORCH:-1}" = 0 ]; then
  STATUS[torch]="skipped(CELINE_GPU_TORCH=0)"
elif python3 -c 'import torch, transformers' >/dev/null 2>&1; then
  log "gpu_torch.py (PyTorch + transformers generate, batch 64)"
  echo "== gpu_torch.py" >>"$OUT/bench.log"
  if PYTHONUNBUFFERED=1 timeout "$(step_to 240)" python3 "$ROOT/bench/gpu_torch.py" --out "$OUT/torch.json" >>"$OUT/bench.log" 2>&1; then
    STATUS[torch]=pass
  else
    STATUS[torch]="fail(rc=$?)"
  fi
  log "gpu_torch.py: ${STATUS[torch]}"
else
  STATUS[torch]=missing
fi

# ---- per-kernel GPU times under Nsight Compute (last: the figures above
# come first): one decode step of the engine's defaults at batch 1 and at
# batch 64, and at batch 1 with the norms in the producers ("1p"), every
# kernel timed alone (gpu__time_duration: no overlap, no launch gaps; DRAM
# bytes read). ncu.csv has one row per launch in launch order; bench.log
# the sums by kernel and grid. CELINE_GPU_NCU=0 skips it.
NCU="$(command -v ncu || true)"
[ -z "$NCU" ] && [ -x /usr/local/cuda/bin/ncu ] && NCU=/usr/local/cuda/bin/ncu
[ -n "$SUF" ] && NCU="" # the emulation has no counters
if [ "${CELINE_GPU_NCU:-1}" = 0 ]; then
  STATUS[ncu]="skipped(CELINE_GPU_NCU=0)"
elif [ -z "$NCU" ] || [ ! -x "$BUILD/bench_gpu" ]; then
  STATUS[ncu]=missing
else
  : >"$OUT/.ncu.raw"
  STATUS[ncu]=pass
  for tag in 1 64 1p; do
    to="$(step_to 60)" bs="${tag%p}" norm=
    [ "$tag" = 1p ] && norm=producer
    if [ "$to" -lt 20 ]; then STATUS[ncu]="skipped(time)"; break; fi
    log "ncu: bench_gpu --only default --batches $bs --steps 1${norm:+ (CELINE_CUDA_NORM=$norm)}"
    # bench_gpu brackets one decode step with the profiler API (CELINE_BENCH_NCU)
    if ! CELINE_CUDA_NORM=$norm CELINE_BENCH_NCU=1 timeout "$to" "$NCU" --profile-from-start off --clock-control none --cache-control none \
      --csv --page raw --print-units base --metrics gpu__time_duration.sum,dram__bytes_read.sum \
      "$BUILD/bench_gpu" --only default --batches "$bs" --steps 1 >"$OUT/.ncu.$tag" 2>>"$OUT/bench.log"; then
      STATUS[ncu]="fail($tag)"
    fi
    sed "s/^/$tag,/" "$OUT/.ncu.$tag" >>"$OUT/.ncu.raw"
    rm -f "$OUT/.ncu.$tag"
  done
  python3 - "$OUT" <<'PY' >>"$OUT/bench.log" 2>&1 || STATUS[ncu]="fail(parse)"
import csv, io, os, re, sys
out = sys.argv[1]
rows, head, launches = {}, None, []
for line in open(os.path.join(out, ".ncu.raw")):
    bs, _, rest = line.partition(",")
    if not rest.startswith('"'):
        continue
    rec = next(csv.reader(io.StringIO(rest)))
    if rec and rec[0] == "ID":
        head = rec
        continue
    if not head or len(rec) != len(head) or not rec[0].isdigit():
        continue
    r = dict(zip(head, rec))
    name = re.sub(r"^void |\(.*", "", r.get("Kernel Name", "?"))[:60].replace('"', "'")
    grid = r.get("Grid Size", "")
    try:
        ns = float(r["gpu__time_duration.sum"].replace(",", ""))
        by = float(r["dram__bytes_read.sum"].replace(",", ""))
    except (KeyError, ValueError):
        continue
    k = (bs, name, grid)
    n, t, b = rows.get(k, (0, 0.0, 0.0))
    rows[k] = (n + 1, t + ns, b + by)
    launches.append((bs, name, grid, ns, by))
with open(os.path.join(out, "ncu.csv"), "w") as f:
    f.write("run,launch,kernel,grid,us,dram_mb,dram_gbs\n")
    seq = {}
    for bs, name, grid, ns, by in launches:
        seq[bs] = seq.get(bs, -1) + 1
        f.write('%s,%d,"%s","%s",%.2f,%.2f,%.0f\n' % (bs, seq[bs], name, grid, ns / 1e3, by / 1e6, by / ns if ns else 0))
print("== ncu: sums by kernel and grid (run: batch, 1p = batch 1 with the norms in the producers)")
print("run,kernel,grid,launches,mean_us,total_us,dram_gbs")
for (bs, name, grid), (n, t, b) in sorted(rows.items(), key=lambda kv: (kv[0][0], -kv[1][1])):
    print('%s,"%s","%s",%d,%.2f,%.1f,%.0f' % (bs, name, grid, n, t / n / 1e3, t / 1e3, b / t if t else 0))
for bs in sorted(set(l[0] for l in launches)):
    print("%s: %d launches, %.1f us of kernel time" % (bs, sum(1 for l in launches if l[0] == bs),
                                                     sum(l[3] for l in launches if l[0] == bs) / 1e3))
if not rows:
    sys.exit(1)
PY
  rm -f "$OUT/.ncu.raw"
  log "ncu: ${STATUS[ncu]}"
fi

# ---- summary
{
  for k in "${!STATUS[@]}"; do echo "$k=${STATUS[$k]}"; done
} >"$OUT/.status"
python3 - "$OUT" <<'PY' 2>&1 | tee -a "$OUT/build.log"
import json, os, sys
out = sys.argv[1]
st = dict(l.strip().split("=", 1) for l in open(os.path.join(out, ".status")) if "=" in l)
def load(n):
    try:
        return json.load(open(os.path.join(out, n)))
    except Exception as e:
        return {"error": str(e)}
b, t = load("bench_gpu.json"), load("torch.json")
runs = {r["batch"]: r for r in b.get("runs", [])}
s = {"status": st, "celine": b, "torch": t, "targets": {}}
tg = s["targets"]
if 1 in runs:
    tg["batch1_roofline_pct_logits"] = runs[1]["roofline_pct_logits"]
    tg["batch1_roofline_pct_argmax"] = runs[1]["roofline_pct_argmax"]
    tg["batch1_roofline_ok(>=70)"] = max(runs[1]["roofline_pct_logits"], runs[1]["roofline_pct_argmax"]) >= 70
dr = {r["batch"]: r for r in b.get("default_runs", [])}
for bs, r in sorted(dr.items()):  # the engine's defaults (cu_defaults), what a user gets
    if bs == 1:
        tg["batch1_default_roofline_pct_logits"] = r["roofline_pct_logits"]
        tg["batch1_default_roofline_pct_argmax"] = r["roofline_pct_argmax"]
        tg["batch1_default_roofline_ok(>=70)"] = max(r["roofline_pct_logits"], r["roofline_pct_argmax"]) >= 70
    tg["batch%d_default_tok_s_logits" % bs] = r["decode_tok_s_logits"]
    tg["batch%d_default_tok_s_argmax" % bs] = r["decode_tok_s_argmax"]
v1 = b.get("v1_batch1")
if v1:  # the first decode path (CELINE_CUDA_DECODE=v1), measured in the same run for comparison
    tg["batch1_v1_roofline_pct_logits"] = v1["roofline_pct_logits"]
    tg["batch1_v1_roofline_pct_argmax"] = v1["roofline_pct_argmax"]
v3 = b.get("v3_batch1")
if v3:  # the v3 path (CELINE_CUDA_DECODE=v3: split attention, parallel q/k/v post-process)
    tg["batch1_v3_roofline_pct_logits"] = v3["roofline_pct_logits"]
    tg["batch1_v3_roofline_pct_argmax"] = v3["roofline_pct_argmax"]
    tg["batch1_v3_roofline_ok(>=70)"] = max(v3["roofline_pct_logits"], v3["roofline_pct_argmax"]) >= 70
PDL_KEYS = ("pf0", "pf8k", "nofuse", "pf0_nofuse", "pf0_c16", "pf0_c32", "pf0_c16_nofuse", "pf0_c16_nofuse_nc",
            "pf0_c16_nofuse_nc_ra", "pf0_p1024", "pf0_c16_p1024")
for key, name in [("v3_pdl_batch1", "v3pdl")] + [("v3_pdl_%s_batch1" % k, "v3pdl_" + k) for k in PDL_KEYS]:
    r = b.get(key)
    if r:  # v3 with programmatic dependent launch (CELINE_CUDA_PDL=1), the GEMVs' L2 prefetch at 2 KiB / 0 / 8 KiB,
           # with the q/k/v post-process as its own kernel (CELINE_CUDA_FUSE_QKV=0), attention chunks of 16 / 32
           # (CELINE_CUDA_ATTN_CHUNK; 64 otherwise), and at a 1024-token prompt (p1024)
        tg["batch1_%s_roofline_pct_logits" % name] = r["roofline_pct_logits"]
        tg["batch1_%s_roofline_pct_argmax" % name] = r["roofline_pct_argmax"]
best = [(max(r["roofline_pct_logits"], r["roofline_pct_argmax"]), k) for k, r in
        [("v2", runs.get(1)), ("default", dr.get(1))] + [(k, b.get(k)) for k in ["v3_batch1", "v3_split1_batch1", "v3_pdl_batch1"] +
                                 ["v3_pdl_%s_batch1" % k for k in PDL_KEYS if "p1024" not in k]] if r]
if best:  # the fastest batch-1 path measured, and whether it meets the issue's 70%
    tg["batch1_best_roofline_pct"], tg["batch1_best_path"] = max(best)
    tg["batch1_best_path"] = tg["batch1_best_path"].replace("_batch1", "")
    tg["batch1_best_roofline_ok(>=70)"] = max(best)[0] >= 70
s1 = b.get("v3_split1_batch1")
if s1:  # v3 with its GEMVs at one warp per row (CELINE_CUDA_GEMV_SPLIT=1): what the split-K GEMV adds
    tg["batch1_v3split1_roofline_pct_argmax"] = s1["roofline_pct_argmax"]
for r in b.get("v3_runs", []):
    if r["batch"] != 1 and r["batch"] in runs:  # v3 / v2 decode speed at the larger batches (> 1: v3 faster)
        tg["batch%d_v3_over_v2_argmax" % r["batch"]] = r["decode_tok_s_argmax"] / max(runs[r["batch"]]["decode_tok_s_argmax"], 1e-9)
pl = b.get("prefill_long")
if pl and pl.get("per_token_tok_s"):  # 8 x 1024-token prefill: tiled kernel (CELINE_CUDA_PREFILL=tiled) / per-token
    tg["prefill_1024_per_token_tok_s"] = pl["per_token_tok_s"]
    tg["prefill_1024_tiled_tok_s"] = pl["tiled_tok_s"]
    tg["prefill_1024_tiled_over_per_token"] = pl["tiled_tok_s"] / pl["per_token_tok_s"]
for p in b.get("profile_batch1", []):  # where one batch-1 decode step's GPU time goes (details in bench.log)
    tg["batch1_%s_kernel_ms" % p["decode"]] = p["kernel_ms"]
    tg["batch1_%s_graph_ms" % p["decode"]] = p["graph_ms"]
    for k in p.get("kinds", []):
        short = {"attention": "attention", "qkv rope+kv": "rope", "rmsnorm": "norm"}.get(k["kind"])
        if short:
            tg["batch1_%s_%s_ms" % (p["decode"], short)] = k["ms"]
        if k["kind"].startswith("gemv ") and k.get("gbs", 0) > 0:  # each GEMV's GB/s per path (v2 vs v3)
            tg["batch1_%s_%s_gbs" % (p["decode"], k["kind"][5:].replace("/", "_"))] = k["gbs"]
for bs in (1, 64, 256):  # GPU sampling (T 1, top-p 0.95; T 1 unfiltered) vs logits copied to the host
    if bs in runs and "decode_tok_s_sample" in runs[bs]:
        r = runs[bs]
        tg["batch%d_tok_s_sample_topp" % bs] = r["decode_tok_s_sample"]
        tg["batch%d_tok_s_sample_plain" % bs] = r["decode_tok_s_sample_plain"]
        tg["batch%d_sample_topp_given_back" % bs] = r["sample_given_back"]
        tg["batch%d_sample_topp_over_logits" % bs] = r["decode_tok_s_sample"] / max(r["decode_tok_s_logits"], 1e-9)
        tg["batch%d_sample_plain_over_logits" % bs] = r["decode_tok_s_sample_plain"] / max(r["decode_tok_s_logits"], 1e-9)
if 256 in runs:
    tg["batch256_tok_s_logits"] = runs[256]["decode_tok_s_logits"]
    tg["batch256_tok_s_argmax"] = runs[256]["decode_tok_s_argmax"]
    tg["batch256_ok(>=20000)"] = max(runs[256]["decode_tok_s_logits"], runs[256]["decode_tok_s_argmax"]) >= 20000
tb = t.get("decode_tok_s") if isinstance(t, dict) else None
if 64 in runs and tb:
    tg["vs_torch_batch64_logits"] = runs[64]["decode_tok_s_logits"] / tb
    tg["vs_torch_batch64_argmax"] = runs[64]["decode_tok_s_argmax"] / tb
    tg["vs_torch_ok(>=5)"] = max(tg["vs_torch_batch64_logits"], tg["vs_torch_batch64_argmax"]) >= 5
# Which opt-in paths to make defaults (bench/README "After a GPU run"): a
# path qualifies when its tests passed (the whole program, or its own
# isolated rerun) and it beat what it would replace in this run's figures.
def passed(prog, path=None):
    return st.get(prog) == "pass" or (path is not None and st.get("%s:path:%s" % (prog, path)) == "pass")
def pct(key):
    return tg.get("batch1_%s_roofline_pct_argmax" % key, 0.0) if key else tg.get("batch1_roofline_pct_argmax", 0.0)
rec = s["recommend"] = {}
ops_ok = st.get("test_cuda_ops") == "pass"
# v3 runs v2's kernels above 16 rows, so at batch 64 / 256 it should match v2:
# 10% is the noise allowed there (two H100 runs of the same kernels: 0.95 - 1.02)
rec["decode_v3"] = bool(ops_ok and passed("test_cuda_backend", "v3") and pct("v3") > pct(None)
                        and all(tg.get("batch%d_v3_over_v2_argmax" % bs, 1.0) >= 0.90 for bs in (64, 256)))
pf = [(pct(k), v) for k, v in (("v3pdl_pf0", 0), ("v3pdl", 2048), ("v3pdl_pf8k", 8192)) if pct(k) > 0]
rec["pdl"] = bool(rec["decode_v3"] and passed("test_cuda_backend", "v3-pdl-nc") and pf and max(pf)[0] > pct("v3"))
if rec["pdl"] and pf:
    rec["pdl_prefetch_bytes"] = max(pf)[1]
if pct("v3pdl_pf0_nofuse") > 0:  # at no prefetch (the nofuse pair at 2 KiB is in the figures too)
    rec["fuse_qkv"] = pct("v3pdl_pf0") >= pct("v3pdl_pf0_nofuse")
ch = [(pct(k), c) for k, c in (("v3pdl_pf0", 64), ("v3pdl_pf0_c32", 32), ("v3pdl_pf0_c16", 16)) if pct(k) > 0]
if ch and passed("test_cuda_backend", "v3-split4-c16"):  # the best chunk, unless 16 loses at the long prompt
    best_c = max(ch)[1]
    if best_c == 16 and pct("v3pdl_pf0_c16_p1024") < pct("v3pdl_pf0_p1024"):
        best_c = max(c for c in ch if c[1] != 16)[1]
    rec["attn_chunk"] = best_c
if pct("v3pdl_pf0_c16_nofuse_nc") > 0:  # the norms in the consumers vs the producers' tails, all else the defaults
    rec["norm_consumer"] = bool(passed("test_cuda_backend", "v3-pdl-nc")
                                and pct("v3pdl_pf0_c16_nofuse_nc") > pct("v3pdl_pf0_c16_nofuse"))
if pct("v3pdl_pf0_c16_nofuse_nc_ra") > 0:  # the q/k/v post-process inside the attention, all else the defaults
    rec["rope_in_attn"] = bool(passed("test_cuda_backend", "v3-ra")
                               and pct("v3pdl_pf0_c16_nofuse_nc_ra") > pct("v3pdl_pf0_c16_nofuse_nc"))
rec["prefill_tiled"] = bool(st.get("test_cuda_prefill") == "pass" and passed("test_cuda_backend", "tiled")
                            and tg.get("prefill_1024_tiled_over_per_token", 0) > 1)
smp = [tg.get("batch%d_sample_%s_over_logits" % (bs, k)) for bs in (1, 64, 256) for k in ("topp", "plain")]
rec["can_sample"] = bool(ops_ok and passed("test_cuda_backend") and smp and all(x and x > 1 for x in smp))
json.dump(s, open(os.path.join(out, "summary.json"), "w"), indent=1)
print("== summary")
for k in sorted(st):
    print(f"  {k:20s} {st[k]}")
for k, v in tg.items():
    print(f"  {k:32s} {v:.2f}" if isinstance(v, float) else f"  {k:32s} {v}")
print("== make default? (cu_defaults in engine/cuda/backend.c)")
for k, v in rec.items():
    print(f"  {k:32s} {v}")
PY
rm -f "$OUT/.status"
log "done in $(($(date +%s) - T0)) s; results in $OUT"
ok=1
for k in configure build test_cuda_ops test_cuda_backend bench_gpu; do
  [ "$k" = configure ] && [ -n "$SUF" ] && continue # the dry run configures nothing
  [ "${STATUS[$k]:-missing}" = pass ] || ok=0
done
[ $ok = 1 ]
