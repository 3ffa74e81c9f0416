#!/usr/bin/env bash
# Device-run wrapper (staging only, s26 #18): unpack; the wgmma GEMM variants' PTX (sm_90a) and
# the GPU tests with each (against the CPU f64 reference); the full bench (cuda-bench.sh with
# the committed PTX: GPU tests, every type, the plain read chained with PDL, cuBLAS, dequant +
# cuBLAS, llama.cpp); m=512 variants against the committed GEMM in the same run; ncu of the
# Q4_K one-token GEMV (stall reasons per SASS line). Outputs tarred into $OUT. Lives in a copy
# of the worktree (.peer/wt of the main checkout) with gpu-bin/*.xz and ggml.tar.xz beside it
# (scripts/cuda/unpack-staged.py).
set -u
cd "$(dirname "$0")"
t0=$(date +%s)
ts() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
python3 scripts/cuda/unpack-staged.py
mkdir -p /tmp/o/final /tmp/o/wg
PHASE=${PHASE:-all}  # all: run 1; wg: run 2 (after the wgmma fix: tests, PDL read, m=512 variants)
# The PTX compiled here (scripts/cuda-ptx.sh, in a copy of the tree), against the staged one.
rm -rf /tmp/ptxtree; mkdir -p /tmp/ptxtree; cp -r kernels scripts /tmp/ptxtree/
( REPORT=/tmp/o/final bash /tmp/ptxtree/scripts/cuda-ptx.sh &&
  if cmp -s /tmp/ptxtree/kernels/cuda/qgemm.ptx kernels/cuda/qgemm.ptx; then echo "PTX compiled here = staged PTX"
  else echo "PTX compiled here DIFFERS from the staged one"; fi
) > /tmp/o/final/ptx-check.txt 2>&1 &
ptxjob=$!
# The wgmma variants' PTX (as variants.sh compiles them), for the GPU tests below.
for v in "wg=-DGEMM_WGMMA" "wg256=-DGEMM_WGMMA -DBM=256 -DBN=64"; do
  ( nvcc -arch=sm_90a -O3 -ptx ${v#*=} kernels/cuda/qgemm.cu -o /tmp/o/wg/${v%%=*}.ptx &&
    nvcc -arch=sm_90a -O3 -cubin -Xptxas -v ${v#*=} kernels/cuda/qgemm.cu -o /tmp/${v%%=*}.cubin 2> /tmp/o/wg/${v%%=*}.ptxas.txt ) &
done
wait $ptxjob
if [ "$PHASE" = wg ]; then
  wait; cat /tmp/o/final/ptx-check.txt
  for v in committed wg wg256; do
    echo "== GPU tests with $v"
    ptx=/tmp/o/wg/$v.ptx; [ $v = committed ] && ptx=$PWD/kernels/cuda/qgemm.ptx
    QFORGE_CUDA_PTX=$ptx timeout 60 ./gpu-bin/qforge-tests kernels::cuda --test-threads 1 2>&1 | tail -9
  done 2>&1 | tee /tmp/o/wg/tests.log
  ts "PDL read"
  timeout 60 python3 scripts/cuda/small_read.py kernels/cuda/qgemm.ptx 33 62 2>&1 | tee /tmp/o/wg/small_read.jsonl
  left=$(( ${VAR_END:-540} - ($(date +%s) - t0) ))
  ts "m=512 variants, $left s left"
  timeout $((left - 10)) bash scripts/cuda/variants.sh /tmp/o/var "${TYPES:-q4_k q8_0 q6_k}" 512 \
    base= wg=-DGEMM_WGMMA,-arch=sm_90a wg256=-DGEMM_WGMMA,-DBM=256,-DBN=64,-arch=sm_90a \
    wg256p4=-DGEMM_WGMMA,-DBM=256,-DBN=64,-DGEMM_PRODUCERS=4,-arch=sm_90a 2>&1 | tee /tmp/o/var.log
  tar czf $OUT/run2.tgz -C /tmp/o var var.log wg final/ptx-check.txt
  ts "total"
  exit 0
fi
ts "bench"
timeout ${BENCH_S:-330} bash scripts/cuda-bench.sh /tmp/o/final 14336 4096 40 2>&1 | tee /tmp/o/bench.log
cat /tmp/o/final/ptx-check.txt
wait
tar czf $OUT/final.tgz -C /tmp/o final bench.log
ts "wgmma GPU tests"
for v in wg wg256; do
  echo "== GPU tests with $v"
  QFORGE_CUDA_PTX=/tmp/o/wg/$v.ptx timeout 60 ./gpu-bin/qforge-tests kernels::cuda --test-threads 1 2>&1 | tail -6
done 2>&1 | tee /tmp/o/wg/tests.log
left=$(( ${VAR_END:-520} - ($(date +%s) - t0) ))
ts "m=512 variants, $left s left"
[ $left -gt 40 ] && timeout $((left - 10)) bash scripts/cuda/variants.sh /tmp/o/var "${TYPES:-q4_k q8_0 q6_k}" 512 \
  base= wg=-DGEMM_WGMMA,-arch=sm_90a wg256=-DGEMM_WGMMA,-DBM=256,-DBN=64,-arch=sm_90a \
  wg256p4=-DGEMM_WGMMA,-DBM=256,-DBN=64,-DGEMM_PRODUCERS=4,-arch=sm_90a 2>&1 | tee /tmp/o/var.log
tar czf $OUT/var.tgz -C /tmp/o var var.log wg 2>/dev/null
N=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
left=$(( ${NCU_END:-585} - ($(date +%s) - t0) ))
ts "ncu, $left s left"
if [ $left -gt 30 ]; then
  QFORGE_CUDA_PTX=$PWD/kernels/cuda/qgemm.ptx timeout $((left - 10)) $N --clock-control none -k regex:gemv_q4_k_m1 -c 1 \
    --set full --import-source no -o /tmp/o/gemv ./gpu-bin/qforge bench-gemm --device cuda --type q4_k --n 14336 --k 4096 \
    --m 1 --reps 3 --json > /tmp/o/ncu-run.txt 2>&1
  $N -i /tmp/o/gemv.ncu-rep --page details > $OUT/ncu-gemv.txt 2>&1
  $N -i /tmp/o/gemv.ncu-rep --page source --csv --print-source sass > $OUT/ncu-gemv-sass.csv 2>&1
  grep -E "Duration|DRAM Throughput|Registers Per|Achieved Occ|Stall|stall" $OUT/ncu-gemv.txt | head -30
fi
ts "total"
