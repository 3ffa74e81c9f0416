#!/usr/bin/env bash
# Issue #14's benchmark: `qforge quantize` against `llama-quantize` on the same F16 GGUF with
# the same threads, in one run, plus `cp` of the input (the I/O floor). Runs are interleaved
# (cp, then each type with both tools, then the next round) and the median of RUNS rounds is
# printed per type (and min/median/max of the wall times): both wall times, the ratio llama/qforge (goal: >= 3), both peak RSS, and
# for Q8_0 and F16 qforge's time over the copy's (goal for Q8_0: <= 3).
#
# Usage: scripts/bench_quantize.sh LLAMA_REF_DIR [INPUT.gguf]
#   LLAMA_REF_DIR  what ../shared/tools/llama-ref.sh prints (bin/llama-quantize)
#   INPUT.gguf     an F16 GGUF; default /work/cache/hf-ref/SmolLM2-135M-Instruct/f16.gguf
# Environment: QFORGE (default: target/release/qforge after cargo build --release), THREADS
# (default 2), RUNS (default 5), TYPES (default "F16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q2_K Q3_K_M
# Q4_K_M Q5_K_M Q6_K IQ4_NL"), BENCH_TMP (scratch folder, default .cache/bench-quantize),
# QFORGE_BASE (optional: an earlier qforge binary, run in the same rounds; the table then
# also gives its time and how much faster QFORGE is).
# Outputs are deleted after each run. qforge runs without --digest (llama-quantize hashes
# nothing either). The load average before and after the runs is printed with the table.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ]; then
  sed -n '2,17p' "$0" >&2
  exit 2
fi
ref=$(cd "$1" && pwd)
input=${2:-/work/cache/hf-ref/SmolLM2-135M-Instruct/f16.gguf}
threads=${THREADS:-2}
runs=${RUNS:-5}
types=${TYPES:-F16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q2_K Q3_K_M Q4_K_M Q5_K_M Q6_K IQ4_NL}
[ -f "$input" ] || { echo "bench_quantize: no input $input" >&2; exit 2; }
if [ -n "${QFORGE:-}" ]; then
  qforge=$QFORGE
else
  echo "bench_quantize: cargo build --release" >&2
  cargo build --release --quiet --bin qforge
  qforge=target/release/qforge
fi
lq="$ref/bin/llama-quantize"
tmp=${BENCH_TMP:-.cache/bench-quantize}
mkdir -p "$tmp"
results="$tmp/results.tsv"
: >"$results"

# measure TOOL TYPE CMD...: runs CMD; appends "TOOL TYPE SECONDS KIB" (wall time, peak RSS
# of the child as getrusage reports it).
measure() {
  local tool=$1 ty=$2
  shift 2
  if ! python3 -c '
import resource, subprocess, sys, time
t = time.perf_counter()
with open(sys.argv[1], "w") as log:
    rc = subprocess.run(sys.argv[2:], stdout=log, stderr=log).returncode
s = time.perf_counter() - t
print(f"{s:.3f} {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}")
sys.exit(rc)' "$tmp/out.log" "$@" >"$tmp/time.log"; then
    echo "bench_quantize: $tool $ty failed:" >&2
    tail -20 "$tmp/out.log" >&2
    exit 1
  fi
  echo "$tool $ty $(tail -1 "$tmp/time.log")" >>"$results"
  rm -f "$tmp/out.gguf"
}

cat "$input" >/dev/null # warm the page cache: no tool pays the first read
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
for r in $(seq "$runs"); do
  echo "bench_quantize: round $r of $runs" >&2
  measure cp copy cp "$input" "$tmp/out.gguf"
  for ty in $types; do
    measure qforge "$ty" "$qforge" quantize "$input" -o "$tmp/out.gguf" -t "$ty" --threads "$threads" -q
    if [ -n "${QFORGE_BASE:-}" ]; then
      measure base "$ty" "$QFORGE_BASE" quantize "$input" -o "$tmp/out.gguf" -t "$ty" --threads "$threads" -q
    fi
    measure llama "$ty" "$lq" "$input" "$tmp/out.gguf" "$ty" "$threads"
  done
done

echo "input $input ($(du -h "$input" | cut -f1)), $threads threads, median of $runs interleaved runs, $(nproc) cores"
echo "load average before: $load_before, after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$results" "$types" "${QFORGE_BASE:+base}" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
def vals(tool, ty, col):
    return [float(r[col]) for r in rows if r[0] == tool and r[1] == ty]
def med(tool, ty, col):
    return statistics.median(vals(tool, ty, col))
def spread(tool, ty):
    v = vals(tool, ty, 2)
    return f"{min(v):.3f}/{statistics.median(v):.3f}/{max(v):.3f}"
cp = med("cp", "copy", 2)
print(f"cp: {cp:.3f} s (min/median/max {spread('cp', 'copy')})")
base = len(sys.argv) > 3 and sys.argv[3] == "base"
extra = f" {'base s':>7} {'speedup':>7}" if base else ""
print(f"{'type':8} {'qforge s':>9} {'llama s':>9} {'ratio':>6} {'qforge MiB':>11} {'llama MiB':>10} {'qforge/cp':>9}{extra}")
worst = None
for ty in sys.argv[2].split():
    q, l = med("qforge", ty, 2), med("llama", ty, 2)
    qm, lm = med("qforge", ty, 3) / 1024, med("llama", ty, 3) / 1024
    ratio = l / q if q > 0 else float("inf")
    worst = ratio if worst is None else min(worst, ratio)
    over_cp = f"{q / cp:9.2f}" if cp > 0 else f"{'-':>9}"
    extra = ""
    if base:
        b = med("base", ty, 2)
        extra = f" {b:7.3f} {b / q:7.2f}"
    print(f"{ty:8} {q:9.3f} {l:9.3f} {ratio:6.2f} {qm:11.0f} {lm:10.0f} {over_cp}{extra}")
print(f"slowest ratio {worst:.2f} (goal >= 3)")
print("wall s min/median/max per type:")
for ty in sys.argv[2].split():
    print(f"  {ty:8} qforge {spread('qforge', ty)}  llama {spread('llama', ty)}")
EOF
