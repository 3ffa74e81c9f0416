#!/usr/bin/env bash
# Tuning on the GPU machine: compiles kernels/cuda/qgemm.cu with extra nvcc flags per variant
# and runs bench-gemm --device cuda with each PTX (QFORGE_CUDA_PTX), so several kernel
# versions are timed in one run. The host follows the kernels' shapes (gemm_config).
# Usage: scripts/cuda/variants.sh OUTDIR "TYPES" "M,..." NAME='-DFLAG=V ...' ...
# (commas in a variant's flags stand for spaces: NAME=-DA=1,-DB=2; an -arch= among them replaces sm_90a;
# NAME=@FILE.ptx times a PTX compiled before, e.g. the committed one or another source's)
# Writes OUTDIR/variants.jsonl ({"variant": NAME, ...report}) and prints one line per result.
set -uo pipefail
cd "$(dirname "$0")/../.."
out=$1 types=$2 ms=$3; shift 3
mkdir -p "$out"
# Every variant's PTX first, all at once (the machine has 16 cores), then the timings one by one.
for v in "$@"; do
  name=${v%%=*} flags=${v#*=}
  flags=${flags//,/ }
  ptx=/tmp/qgemm-$name.ptx
  rm -f "$ptx"
  if [[ $flags == @* ]]; then cp "${flags#@}" "$ptx"; continue; fi
  arch=-arch=sm_90a
  [[ " $flags " == *" -arch="* ]] && arch=  # a variant's own target (-arch=sm_90 for -DGEMM_MMA_SYNC)
  # shellcheck disable=SC2086
  ( nvcc $arch -O3 -ptx $flags kernels/cuda/qgemm.cu -o "$ptx.tmp" &&
    { echo "// qforge source sha256: variant $name"; cat "$ptx.tmp"; } > "$ptx" ) &
done
wait
for v in "$@"; do
  name=${v%%=*}
  ptx=/tmp/qgemm-$name.ptx
  [ -s "$ptx" ] || { echo "variant $name: nvcc failed"; continue; }
  for ty in $types; do
    QFORGE_CUDA_PTX=$ptx ./gpu-bin/qforge bench-gemm --device cuda --type "$ty" --n 14336 --k 4096 \
      --m "$ms" --reps 40 --json > /tmp/variant.json || { echo "variant $name $ty: bench failed"; continue; }
    python3 - "$name" /tmp/variant.json "$out/variants.jsonl" <<'PY'
import json, sys
name, src, dst = sys.argv[1:]
r = json.load(open(src)); r["variant"] = name
open(dst, "a").write(json.dumps(r) + "\n")
for x in r["results"]:
    b, c = x.get("batched_ms"), x.get("batched_pdl_ms")
    b = f"{b*1e3:8.1f} us b2b, " if b is not None else ""
    b += f"{c*1e3:8.1f} us b2b pdl, " if c is not None else ""
    print(f"variant {name:10s} {r['weight_type']:5s} m={x['m']:<4d} {b}{x['median_ms']*1e3:8.1f} us "
          f"{x['effective_gbs']:6.0f} GB/s ({x['pct_bandwidth']:.0f}%) {x['gflops']/1e3:6.1f} TFLOP/s err {x['rel_err']:.1e}")
PY
  done
done
