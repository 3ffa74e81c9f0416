#!/usr/bin/env bash
# The imatrix i-quants (issue #13): `qforge quantize` against `llama-quantize` with the same
# input, imatrix, type and threads, interleaved, median of RUNS rounds per type: wall time
# and CPU time (user + sys of the child, getrusage) of both tools and their ratios
# llama/qforge (goal: >= 3). scripts/bench_quantize.sh covers the types without an imatrix.
#
# Usage: scripts/bench_iquants.sh LLAMA_REF_DIR IMATRIX.gguf [INPUT.gguf]
#   LLAMA_REF_DIR  what ../shared/tools/llama-ref.sh prints (bin/llama-quantize)
#   IMATRIX.gguf   an imatrix of the input's model (llama-imatrix output)
#   INPUT.gguf     an F16 GGUF; default /work/cache/hf-ref/SmolLM2-135M-Instruct/f16.gguf
# Environment: QFORGE (default: target/release/qforge after cargo build --release), THREADS
# (default 2), RUNS (default 3), TYPES (default "IQ2_XXS IQ2_XS IQ2_S IQ2_M"), BENCH_TMP
# (scratch folder, default .cache/bench-iquants).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ]; then
  sed -n '2,13p' "$0" >&2
  exit 2
fi
ref=$(cd "$1" && pwd)
imatrix=$2
input=${3:-/work/cache/hf-ref/SmolLM2-135M-Instruct/f16.gguf}
threads=${THREADS:-2}
runs=${RUNS:-3}
types=${TYPES:-IQ2_XXS IQ2_XS IQ2_S IQ2_M}
for f in "$input" "$imatrix"; do
  [ -f "$f" ] || { echo "bench_iquants: no file $f" >&2; exit 2; }
done
if [ -n "${QFORGE:-}" ]; then
  qforge=$QFORGE
else
  echo "bench_iquants: cargo build --release" >&2
  cargo build --release --quiet --bin qforge
  qforge=target/release/qforge
fi
tmp=${BENCH_TMP:-.cache/bench-iquants}
mkdir -p "$tmp"
results="$tmp/results.tsv"
: >"$results"

# measure TOOL TYPE CMD...: appends "TOOL TYPE WALL_S CPU_S" to the results.
measure() {
  local tool=$1 ty=$2
  shift 2
  python3 -c '
import resource, subprocess, sys, time
t = time.perf_counter()
with open(sys.argv[1], "w") as log:
    rc = subprocess.run(sys.argv[2:], stdout=log, stderr=log).returncode
s = time.perf_counter() - t
u = resource.getrusage(resource.RUSAGE_CHILDREN)
print(f"{s:.3f} {u.ru_utime + u.ru_stime:.3f}")
sys.exit(rc)' "$tmp/out.log" "$@" >"$tmp/time.log" || {
    echo "bench_iquants: $tool $ty failed:" >&2
    tail -20 "$tmp/out.log" >&2
    exit 1
  }
  echo "$tool $ty $(tail -1 "$tmp/time.log")" >>"$results"
  rm -f "$tmp/out.gguf"
}

cat "$input" >/dev/null # warm the page cache
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
for r in $(seq "$runs"); do
  echo "bench_iquants: round $r of $runs" >&2
  for ty in $types; do
    measure qforge "$ty" "$qforge" quantize --imatrix "$imatrix" "$input" "$tmp/out.gguf" "$ty" "$threads"
    measure llama "$ty" "$ref/bin/llama-quantize" --imatrix "$imatrix" "$input" "$tmp/out.gguf" "$ty" "$threads"
  done
done

echo "input $input, imatrix $imatrix, $threads threads, median of $runs interleaved runs, $(nproc) cores"
echo "load average before: $load_before, after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$results" "$types" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
def med(tool, ty, col):
    return statistics.median(float(r[col]) for r in rows if r[0] == tool and r[1] == ty)
print(f"{'type':8} {'qforge s':>9} {'llama s':>9} {'wall ratio':>10} {'qforge cpu':>10} {'llama cpu':>10} {'cpu ratio':>9}")
for ty in sys.argv[2].split():
    q, l, qc, lc = med("qforge", ty, 2), med("llama", ty, 2), med("qforge", ty, 3), med("llama", ty, 3)
    print(f"{ty:8} {q:9.3f} {l:9.3f} {l / q:10.2f} {qc:10.3f} {lc:10.3f} {lc / qc:9.2f}")
PY
