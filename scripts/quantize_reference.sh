#!/usr/bin/env bash
# Reference files for issue #13's whole-file comparison (tests/cli/llama_quantize.rs): from the
# real-weight SmolLM2-135M-Instruct bf16.gguf that scripts/hf_reference.sh makes,
#   - imatrix.gguf: llama-imatrix on the committed fixtures/imatrix/calibration.txt
#     (4 chunks of 128 tokens, --no-repack), and imatrix.dat, the same in the legacy format;
#   - TYPE.gguf: llama-quantize's output for EVERY type its usage text lists (aliases and COPY
#     included), with --imatrix imatrix.gguf for the types it refuses without one;
#   - extra cases, each one line of manifest.tsv: a k-quant with --imatrix (GGUF and legacy
#     .dat), the flags (--prune-layers, --override-kv, also of hyperparameters the mix rules read,
#     --tensor-type-file, --output-tensor-type,
#     --token-embedding-type, --leave-output-tensor, --pure, --include/--exclude-weights), a split
#     input (llama-gguf-split, 100 tensors a file) quantized to one file and with --keep-split;
#   - Q1_0-minilm: Q1_0 of all-MiniLM-L6-v2's f16.gguf (HF_REF_DIR/all-MiniLM-L6-v2), whose
#     rows of 384 and 1536 Q1_0 takes (llama-quantize refuses SmolLM2's rows of 576).
# manifest.tsv (tab-separated: case, type, imatrix file or -, extra flags, input, output) says
# what each output is; the test runs qforge with the same arguments and compares whole files.
#
# Usage: scripts/quantize_reference.sh LLAMA_REF_DIR HF_REF_DIR OUT_DIR
#   LLAMA_REF_DIR  what ../shared/tools/llama-ref.sh prints (bin/)
#   HF_REF_DIR     scripts/hf_reference.sh's output (.cache/hf-ref)
#   OUT_DIR        receives the files above (.cache/quantize-ref); never commit it
# A step whose logs/NAME.done is newer than the input and this script is not run again. Threads: 2 (QUANT_THREADS overrides).
# Step times go to OUT_DIR/timings.tsv and stderr.
set -euo pipefail
if [ $# -ne 3 ]; then
  sed -n '2,23p' "$0" >&2
  exit 2
fi
ref=$(cd "$1" && pwd)
input="$(cd "$2" && pwd)/SmolLM2-135M-Instruct/bf16.gguf"
minilm="$(cd "$2" && pwd)/all-MiniLM-L6-v2/f16.gguf"
mkdir -p "$3"
out=$(cd "$3" && pwd)
here=$(cd "$(dirname "$0")/.." && pwd)
text="$here/fixtures/imatrix/calibration.txt"
threads=${QUANT_THREADS:-2}
bin="$ref/bin"
export LD_LIBRARY_PATH="$bin${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
for f in "$input" "$minilm" "$text" "$bin/llama-quantize" "$bin/llama-imatrix" "$bin/llama-gguf-split"; do
  [ -e "$f" ] || { echo "quantize_reference: $f is missing" >&2; exit 1; }
done

timings="$out/timings.tsv"
printf 'step\tseconds\n' >"$timings"
# step NAME COMMAND...: runs COMMAND unless logs/NAME.done is newer than the input and this
# script, logs to
# logs/NAME.log, records the time.
step() {
  local name=$1
  shift
  local done="$out/logs/$name.done"
  if [ "$done" -nt "$input" ] && [ "$done" -nt "$0" ]; then
    return 0
  fi
  if [ "$out/logs/$name.failed" -nt "$input" ] && [ "$out/logs/$name.failed" -nt "$0" ]; then
    return 1
  fi
  local t0=$SECONDS
  if ! "$@" >"$out/logs/$name.log" 2>&1; then
    echo "quantize_reference: $name FAILED; last lines of $out/logs/$name.log:" >&2
    tail -3 "$out/logs/$name.log" >&2
    touch "$out/logs/$name.failed"
    return 1
  fi
  touch "$done"
  printf '%s\t%s\n' "$name" "$((SECONDS - t0))" >>"$timings"
  echo "quantize_reference: $name $((SECONDS - t0)) s" >&2
}
mkdir -p "$out/logs" "$out/split" "$out/keep-split"

step imatrix "$bin/llama-imatrix" -m "$input" -f "$text" -o "$out/imatrix.gguf" \
  -c 128 --chunks 4 -t "$threads" --no-repack --no-ppl
step imatrix-dat "$bin/llama-imatrix" -m "$input" -f "$text" -o "$out/imatrix.dat" \
  --output-format dat -c 128 --chunks 4 -t "$threads" --no-repack --no-ppl
step split "$bin/llama-gguf-split" --split --split-max-tensors 100 \
  "$input" "$out/split/bf16"

# Every type llama-quantize's usage text lists ("  15  or  Q4_K_M  : ..." and "COPY : ...").
mapfile -t types < <("$bin/llama-quantize" 2>&1 | sed -n 's/^  \([0-9 ][0-9]  or  \|        \)\([A-Z0-9_][A-Z0-9_]*\) *: .*/\2/p')
[ ${#types[@]} -ge 35 ] || { echo "quantize_reference: could not read llama-quantize's type list" >&2; exit 1; }
# The types llama-quantize refuses without an importance matrix (tensor_requires_imatrix).
needs_imatrix=" IQ2_XXS IQ2_XS IQ2_S IQ2_M IQ1_S IQ1_M IQ3_XXS Q2_K_S "

cat >"$out/tensor-types.txt" <<'EOF'
attn_q=q5_0 ffn_up=Q8_0
blk\.1[0-9]\.ffn_down=q6_k
EOF

manifest="$out/manifest.tsv.tmp"
: >"$manifest"
# case NAME TYPE IMATRIX FLAGS INPUT OUTPUT: one llama-quantize run and its manifest line.
# FLAGS is one word-split string (no spaces inside a flag's value). When llama-quantize
# refuses the input (Q1_0: no fallback for rows of 576), the output column is "!" followed by
# its message, and the test expects qforge to refuse too.
case_() {
  local name=$1 type=$2 imatrix=$3 flags=$4 in=$5 dest=$6
  local args=()
  [ "$imatrix" = - ] || args+=(--imatrix "$imatrix")
  # shellcheck disable=SC2206
  [ -z "$flags" ] || args+=($flags)
  if ! step "$name" "$bin/llama-quantize" "${args[@]}" "$in" "$dest" "$type" "$threads"; then
    local why
    why=$(grep -o 'failed to quantize: .*' "$out/logs/$name.log" | head -1)
    [ -n "$why" ] || exit 1
    dest="!$why"
    echo "quantize_reference: $name: llama-quantize refuses it ($why)" >&2
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$type" "$imatrix" "${flags:--}" "$in" "$dest" >>"$manifest"
}

for t in "${types[@]}"; do
  im=-
  [[ $needs_imatrix == *" $t "* ]] && im="$out/imatrix.gguf"
  case_ "$t" "$t" "$im" "" "$input" "$out/$t.gguf"
done
case_ Q4_K_M-imatrix Q4_K_M "$out/imatrix.gguf" "" "$input" "$out/Q4_K_M-imatrix.gguf"
case_ Q3_K_S-imatrix-dat Q3_K_S "$out/imatrix.dat" "--exclude-weights ffn_gate" "$input" "$out/Q3_K_S-imatrix-dat.gguf"
case_ Q5_K_M-include Q5_K_M "$out/imatrix.gguf" "--include-weights attn_v --include-weights ffn_down" \
  "$input" "$out/Q5_K_M-include.gguf"
case_ Q4_0-flags Q4_0 - "--prune-layers 3,1,7 --override-kv general.name=str:pruned --override-kv test.count=int:-7 --override-kv test.scale=float:0.25 --override-kv test.flag=bool:true --tensor-type-file $out/tensor-types.txt --output-tensor-type q8_0 --token-embedding-type q5_0" \
  "$input" "$out/Q4_0-flags.gguf"
# Overridden hyperparameters change the mix: n_gqa 9 moves Q2_K's attn_v up, 40 blocks
# give Q3_K_M's blk.1.ffn_down Q5_K (llama-quantize's loader applies --override-kv).
hparams="--override-kv llama.attention.head_count_kv=int:1 --override-kv llama.block_count=int:40"
case_ Q2_K-hparams Q2_K - "$hparams" "$input" "$out/Q2_K-hparams.gguf"
case_ Q3_K_M-hparams Q3_K_M - "$hparams" "$input" "$out/Q3_K_M-hparams.gguf"
case_ Q6_K-pure Q6_K - "--pure --leave-output-tensor --tensor-type attn_k=q4_0" "$input" "$out/Q6_K-pure.gguf"
split_in="$out/split/bf16-00001-of-00003.gguf"
case_ Q4_K_M-from-split Q4_K_M - "" "$split_in" "$out/Q4_K_M-from-split.gguf"
case_ Q4_K_M-keep-split Q4_K_M - "--keep-split" "$split_in" "$out/keep-split/Q4_K_M.gguf"
# Q1_0 on real weights whose rows it takes (SmolLM2's are refused above).
case_ Q1_0-minilm Q1_0 - "" "$minilm" "$out/Q1_0-minilm.gguf"
mv -f "$manifest" "$out/manifest.tsv"
echo "quantize_reference: $(wc -l <"$out/manifest.tsv") cases in $out" >&2
