#!/usr/bin/env bash
# s28 run 1 (#18): variants of the wgmma GEMM's producers against the committed PTX, every
# type at m=512 (scripts/cuda/variants.sh; PTX compiled beforehand with PyPI's nvcc 13.0.88,
# carried as ptx/*.ptx.xz): pair (-DWS_PAIR: a thread's two sub-blocks loaded before either
# is unpacked), q6v (pair + -DWS_Q6K_VEC: Q6_K's two sub-blocks by eight 16-byte loads), arr
# (-DWS_WARP_ARRIVE: one full-barrier arrival a producer warp instead of a thread), all
# (the three); the GPU reference test with `all`; the plain 33 MB read (small_read.py); then
# ncu per-line counters (SourceCounters, WarpStateStats) of the Q4_K and Q6_K GEMMs at m=512
# and the Q4_K one-token GEMV, from a -lineinfo build of the committed source (base_li).
# Staged in .peer/wt of the main checkout (gpu-bin/*.xz, ptx/*.xz); carry .peer.
set -u
source "$(dirname "$0")/../start.sh"
ts "GPU reference test with all"
[ -x gpu-bin/qforge-tests ] && QFORGE_CUDA_PTX=$PWD/ptx/all.ptx timeout 90 ./gpu-bin/qforge-tests kernels::cuda::tests::gpu_kernels_match_the_reference \
  --test-threads 1 2>&1 | tail -5 | tee $o/tests-all.log
ts "every type m=512: committed, all, arr, pair"
T="q4_k q6_k q8_0 q5_k q4_0 iq4_xs nf4"
timeout 300 bash scripts/cuda/variants.sh $o/var "$T" 512 committed=@kernels/cuda/qgemm.ptx all=@ptx/all.ptx \
  arr=@ptx/arr.ptx pair=@ptx/pair.ptx 2>&1 | tee $o/var.log
ts "q6_k: q6v; q4_k, q6_k: committed again"
timeout 60 bash scripts/cuda/variants.sh $o/var "q6_k" 512 q6v=@ptx/q6v.ptx 2>&1 | tee -a $o/var.log
timeout 60 bash scripts/cuda/variants.sh $o/var "q4_k q6_k" 512 committed2=@kernels/cuda/qgemm.ptx 2>&1 | tee -a $o/var.log
ts "plain read"
timeout 60 python3 scripts/cuda/small_read.py kernels/cuda/qgemm.ptx 33 62 1000 > $o/small_read.jsonl 2>&1; cat $o/small_read.jsonl
tar czf $OUT/run1-var.tgz -C /tmp o
mkdir -p /work/wt-18/kernels/cuda && cp kernels/cuda/qgemm.cu /work/wt-18/kernels/cuda/  # base_li.ptx names this path
N=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
prof() {  # NAME KERNEL TYPE M
  local left=$(( ${NCU_END:-570} - ($(date +%s) - t0) ))
  ts "ncu $1, $left s left"
  [ $left -gt 45 ] || return
  QFORGE_CUDA_PTX=$PWD/ptx/base_li.ptx timeout $((left - 15)) $N --clock-control none -k regex:$2 -c 1 \
    --section SpeedOfLight --section WarpStateStats --section SourceCounters --section InstructionStats \
    --import-source yes -o $o/$1 ./gpu-bin/qforge bench-gemm --device cuda --type $3 --n 14336 --k 4096 --m $4 \
    --reps 3 --json > $o/$1-run.txt 2>&1
  $N -i $o/$1.ncu-rep --page details > $o/$1.txt 2>&1
  $N -i $o/$1.ncu-rep --page source --csv --print-source sass > $o/$1-sass.csv 2> $o/$1-sass.err
  $N -i $o/$1.ncu-rep --page source --csv --print-source cuda > $o/$1-cuda.csv 2> $o/$1-cuda.err
  python3 scripts/cuda/h200-2026-12-06-s28/ncu_top.py $o/$1-cuda.csv 30 | tee $o/$1-top-cuda.txt
  python3 scripts/cuda/h200-2026-12-06-s28/ncu_top.py $o/$1-sass.csv 30 > $o/$1-top-sass.txt
  grep -E "Duration|Warp Cycles Per Issued|Issue Slots|Stall|Bank" $o/$1.txt | head -12
  tar czf $OUT/run1-$1.tgz -C $o $1.txt $1-sass.csv $1-cuda.csv $1-top-cuda.txt $1-top-sass.txt $1-run.txt \
    $1-sass.err $1-cuda.err 2>/dev/null
  rm -f $o/$1.ncu-rep
}
prof gemm_q4k gemm_q4_k q4_k 512
prof gemm_q6k gemm_q6_k q6_k 512
prof gemv_q4k gemv_q4_k_m1 q4_k 1
nvidia-smi --query-gpu=clocks.sm,clocks.mem --format=csv,noheader | sed 's/^/clocks after: /' | tee -a $o/smi.txt
tar czf $OUT/run1-var.tgz -C /tmp o/smi.txt o/var.log o/var o/tests-all.log o/small_read.jsonl
ts "total"
