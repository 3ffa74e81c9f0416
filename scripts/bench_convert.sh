#!/usr/bin/env bash
# Issue #12's benchmark: a Hugging Face folder to a Q4_K_M GGUF, llama.cpp's two steps
# (convert_hf_to_gguf.py --outtype bf16, then llama-quantize Q4_K_M) against qforge's one
# (`qforge quantize FOLDER -t Q4_K_M`): wall time and peak RSS (/usr/bin/time -v) of each,
# and the ratios (goal: qforge at least 5x faster, at most a quarter of the peak memory).
#
# Usage: scripts/bench_convert.sh LLAMA_REF_DIR [FOLDER ...]
#   LLAMA_REF_DIR  what ../shared/tools/llama-ref.sh prints
#   FOLDER         Hugging Face folders; default: .cache/hf-models/SmolLM2-135M-Instruct and
#                  .cache/hf-bench/llama-bench-1g (both made with scripts/hf_models.py if missing)
# Environment: QFORGE (default: target/release/qforge after cargo build --release), BENCH_TMP (scratch
# folder for the outputs, default .cache/bench-convert), QFORGE_ARGS (extra quantize flags,
# e.g. --no-vocab). Outputs are deleted afterwards.
# The last column says whether the two routes wrote byte-identical files.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ]; then
  sed -n '2,14p' "$0" >&2
  exit 2
fi
ref=$(cd "$1" && pwd)
shift
py="$ref/venv/bin/python"
[ -x /usr/bin/time ] || { echo "bench_convert: /usr/bin/time is missing (apt-get install time)" >&2; exit 1; }
if [ -n "${QFORGE:-}" ]; then
  qforge=$QFORGE
else
  echo "bench_convert: cargo build --release" >&2
  cargo build --release --quiet
  qforge=target/release/qforge
fi
tmp=${BENCH_TMP:-.cache/bench-convert}
mkdir -p "$tmp"

if [ $# -gt 0 ]; then
  folders=("$@")
else
  "$py" scripts/hf_models.py .cache/hf-models SmolLM2-135M-Instruct
  "$py" scripts/hf_models.py .cache/hf-bench llama-bench-1g
  folders=(.cache/hf-models/SmolLM2-135M-Instruct .cache/hf-bench/llama-bench-1g)
fi

# measure LABEL CMD...: runs CMD under /usr/bin/time -v; sets WALL (s) and RSS (KiB).
measure() {
  local label=$1
  shift
  local log="$tmp/time.log"
  if ! /usr/bin/time -v "$@" >"$tmp/out.log" 2>"$log"; then
    echo "bench_convert: $label failed:" >&2
    tail -20 "$tmp/out.log" "$log" >&2
    exit 1
  fi
  WALL=$(awk -F': ' '/Elapsed \(wall clock\)/ {
    n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; print s }' "$log")
  RSS=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$log")
}

# Warm the page cache so neither route pays the first read.
warm() { cat "$1"/*.safetensors >/dev/null; }

rows=()
for dir in "${folders[@]}"; do
  name=$(basename "$dir")
  size=$(du -sb --apparent-size "$dir" | cut -f1)
  warm "$dir"
  measure "convert $name" "$py" "$ref/llama.cpp/convert_hf_to_gguf.py" "$dir" --outtype bf16 --outfile "$tmp/$name.bf16.gguf"
  cw=$WALL cr=$RSS
  measure "llama-quantize $name" "$ref/bin/llama-quantize" "$tmp/$name.bf16.gguf" "$tmp/$name.ref.gguf" Q4_K_M
  qw=$WALL qr=$RSS
  rm -f "$tmp/$name.bf16.gguf"
  warm "$dir"
  # shellcheck disable=SC2086 # QFORGE_ARGS is a list of flags
  measure "qforge $name" "$qforge" quantize "$dir" -o "$tmp/$name.qforge.gguf" -t Q4_K_M ${QFORGE_ARGS:-}
  fw=$WALL fr=$RSS
  if cmp -s "$tmp/$name.ref.gguf" "$tmp/$name.qforge.gguf"; then same="identical"; else same="DIFFERENT"; fi
  rm -f "$tmp/$name.ref.gguf" "$tmp/$name.qforge.gguf"
  rows+=("$(awk -v n="$name" -v sz="$size" -v cw="$cw" -v cr="$cr" -v qw="$qw" -v qr="$qr" \
      -v fw="$fw" -v fr="$fr" -v same="$same" 'BEGIN {
    rw = cw + qw; rr = (cr > qr ? cr : qr)
    printf "| %s | %.0f MB | %.1f s / %.0f MiB | %.1f s / %.0f MiB | %.1f s / %.0f MiB | %.1f s / %.0f MiB | %.1fx | %.2f | %s |\n",
      n, sz / 1e6, cw, cr / 1024, qw, qr / 1024, rw, rr / 1024, fw, fr / 1024,
      (fw > 0 ? rw / fw : 0), (rr > 0 ? fr / rr : 0), same }')")
done
echo
echo "Hugging Face folder -> Q4_K_M GGUF: convert_hf_to_gguf.py --outtype bf16 + llama-quantize vs qforge quantize -t Q4_K_M"
echo "(wall time / peak RSS; the two-step peak is the larger step's; goal: >= 5x faster, <= 0.25 of the memory)"
echo
echo "| folder | size | convert bf16 | llama-quantize | two steps | qforge | speed-up | memory ratio | files |"
echo "|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
