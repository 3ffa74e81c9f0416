#!/usr/bin/env bash
# Reference GGUFs for issue #12's converter tests (tests/cli/convert.rs): for every model folder
# that scripts/hf_models.py made, llama.cpp's convert_hf_to_gguf.py --outtype f16, bf16, f32 and
# q8_0, and llama-quantize Q4_K_M on convert's lossless output (bf16 for a bf16 folder, f32 for
# an f32 or f16 one).
#
# Usage: scripts/hf_reference.sh MODELS_DIR LLAMA_REF_DIR OUT_DIR [MODEL ...]
#   MODELS_DIR     scripts/hf_models.py's output (.cache/hf-models)
#   LLAMA_REF_DIR  what ../shared/tools/llama-ref.sh prints (bin/, venv/, llama.cpp/)
#   OUT_DIR        receives OUT_DIR/MODEL/{f16,bf16,f32,q8_0,Q4_K_M}.gguf (.cache/hf-ref)
#
# A file is remade only when missing or older than its model folder's completion marker
# (MODELS_DIR/.MODEL.done). Each step's wall time goes to OUT_DIR/timings.tsv and stderr.
# Never commit the output.
set -euo pipefail
if [ $# -lt 3 ]; then
  sed -n '2,14p' "$0" >&2
  exit 2
fi
models=$(cd "$1" && pwd)
ref=$(cd "$2" && pwd)
mkdir -p "$3"
out=$(cd "$3" && pwd)
shift 3
py="$ref/venv/bin/python"
convert="$ref/llama.cpp/convert_hf_to_gguf.py"
quantize="$ref/bin/llama-quantize"
for tool in "$py" "$convert" "$quantize"; do
  [ -e "$tool" ] || { echo "hf_reference: $tool is missing (run ../shared/tools/llama-ref.sh)" >&2; exit 1; }
done

if [ $# -gt 0 ]; then
  names=("$@")
else
  names=()
  for marker in "$models"/.*.done; do
    [ -e "$marker" ] || continue
    n=${marker##*/.}
    names+=("${n%.done}")
  done
fi
[ ${#names[@]} -gt 0 ] || { echo "hf_reference: no models in $models (run scripts/hf_models.py)" >&2; exit 1; }

timings="$out/timings.tsv"
[ -f "$timings" ] || printf 'model\tstep\tseconds\n' >"$timings"

# step MODEL STEP OUTPUT COMMAND...: runs COMMAND (which writes OUTPUT.tmp) unless OUTPUT is
# up to date, then renames it into place and records the time.
step() {
  local name=$1 what=$2 dest=$3
  shift 3
  if [ -s "$dest" ] && [ "$dest" -nt "$models/.$name.done" ]; then
    return 0
  fi
  local t0 t1 secs
  t0=$(date +%s.%N)
  if ! "$@" >"$dest.log" 2>&1; then
    echo "hf_reference: $name $what FAILED; last lines of $dest.log:" >&2
    tail -20 "$dest.log" >&2
    rm -f "$dest.tmp"
    return 1
  fi
  mv -f "$dest.tmp" "$dest"
  t1=$(date +%s.%N)
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
  printf '%s\t%s\t%s\n' "$name" "$what" "$secs" >>"$timings"
  echo "hf_reference: $name $what ${secs}s" >&2
}

# source_type DIR: "bf16" when every floating tensor of the folder's safetensors is BF16,
# else "f32".
source_type() {
  "$py" - "$1" <<'EOF'
import json, pathlib, struct, sys
dtypes = set()
for f in sorted(pathlib.Path(sys.argv[1]).glob("*.safetensors")):
    with open(f, "rb") as fh:
        n = struct.unpack("<Q", fh.read(8))[0]
        header = json.loads(fh.read(n))
    dtypes |= {v["dtype"] for k, v in header.items() if k != "__metadata__" and v["dtype"].startswith(("F", "BF"))}
print("bf16" if dtypes == {"BF16"} else "f32")
EOF
}

for name in "${names[@]}"; do
  dir="$models/$name"
  [ -f "$models/.$name.done" ] || { echo "hf_reference: $dir is not complete (rerun scripts/hf_models.py)" >&2; exit 1; }
  mkdir -p "$out/$name"
  for t in bf16 f16 f32 q8_0; do
    step "$name" "convert --outtype $t" "$out/$name/$t.gguf" \
      "$py" "$convert" "$dir" --outtype "$t" --outfile "$out/$name/$t.gguf.tmp"
  done
  # Q4_K_M from convert's lossless output: bf16 for a bf16 folder, f32 for f32 or f16 ones
  # (issue #12: quantized types come from the source values, never through a lossy round trip).
  src=$(source_type "$dir")
  step "$name" "llama-quantize Q4_K_M (from $src)" "$out/$name/Q4_K_M.gguf" \
    "$quantize" "$out/$name/$src.gguf" "$out/$name/Q4_K_M.gguf.tmp" Q4_K_M
done
echo "hf_reference: reference GGUFs in $out" >&2
