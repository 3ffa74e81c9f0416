#!/usr/bin/env bash
# Device-run wrapper (staging only, s25 #18): unpack, full bench (cuda-bench.sh: PTX compiled
# there too and compared with the staged one, GPU tests, every type, peers), then m=1 variants
# of Q4_K's one-token GEMV (run 1, with fdbefde's source: the s24 register GEMV as
# -DM1_Q4K_REGS, stage counts of the bulk-copy GEMV), GEMV/GEMM variants at m=8 and 512, ncu
# of the Q4_K m=1 kernel; outputs tarred into $OUT. Lives in a copy of the worktree (.peer/wt
# of the main checkout) with gpu-bin/*.xz and ggml.tar.xz beside it (scripts/cuda/unpack-staged.py).
set -u
cd "$(dirname "$0")"
t0=$(date +%s)
ts() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
python3 scripts/cuda/unpack-staged.py
mkdir -p /tmp/o/final
PHASE=${PHASE:-all}
# The PTX compiled here (scripts/cuda-ptx.sh, in a copy of the tree), against the staged one.
rm -rf /tmp/ptxtree; mkdir -p /tmp/ptxtree; cp -r kernels scripts /tmp/ptxtree/
( REPORT=/tmp/o/final bash /tmp/ptxtree/scripts/cuda-ptx.sh &&
  if cmp -s /tmp/ptxtree/kernels/cuda/qgemm.ptx kernels/cuda/qgemm.ptx; then echo "PTX compiled here = staged PTX"
  else echo "PTX compiled here DIFFERS from the staged one"; cp /tmp/ptxtree/kernels/cuda/qgemm.ptx $OUT/qgemm-device.ptx; fi
) > /tmp/o/final/ptx-check.txt 2>&1 &
ptxjob=$!
if [ "$PHASE" = all ] || [ "$PHASE" = bench ]; then
  ts "bench"
  timeout ${BENCH_S:-400} bash scripts/cuda-bench.sh /tmp/o/final 14336 4096 40 2>&1 | tee /tmp/o/bench.log
  wait $ptxjob; cat /tmp/o/final/ptx-check.txt
  tar czf $OUT/final.tgz -C /tmp/o final bench.log
  ts "bench phase done"
fi
if [ "$PHASE" = all ] || [ "$PHASE" = var ]; then
  left=$(( ${VAR_END:-540} - ($(date +%s) - t0) ))
  ts "m=1 variants, $left s left"
  [ $left -gt 60 ] && timeout $((left - 20)) bash scripts/cuda/variants.sh /tmp/o/var1 "${M1_TYPES:-q4_k}" 1 ${M1_VARIANTS:-} 2>&1 | tee /tmp/o/var1.log
  left=$(( ${VAR_END:-540} - ($(date +%s) - t0) ))
  ts "GEMM variants, $left s left"
  [ $left -gt 60 ] && [ -n "${VARIANTS:-}" ] && timeout $((left - 20)) bash scripts/cuda/variants.sh /tmp/o/var "${TYPES:-q4_k q8_0}" ${VAR_M:-512} ${VARIANTS:-} 2>&1 | tee /tmp/o/var.log
  tar czf $OUT/var.tgz -C /tmp/o var1 var1.log var var.log 2>/dev/null
  ts "variants done"
fi
# Run 2: Q4_K m=1 variants of the bulk-copy GEMV of run 1 (its source, fdbefde, with the rows
# strided over the warps as -DM1_STRIDED: ../wt2/kernels/cuda/qgemm.cu, with run 1's binary).
if [ -n "${WT2_VARIANTS:-}" ] && [ -d ../wt2 ]; then
  left=$(( ${WT2_END:-540} - ($(date +%s) - t0) ))
  ts "wt2 variants, $left s left"
  ( cd ../wt2 && python3 ../wt/scripts/cuda/unpack-staged.py &&
    timeout $((left - 10)) bash scripts/cuda/variants.sh /tmp/o/var2 q4_k 1 $WT2_VARIANTS ) 2>&1 | tee /tmp/o/var2.log
  tar czf $OUT/var2.tgz -C /tmp/o var2 var2.log 2>/dev/null
fi
if [ "$PHASE" = all ] || [ "$PHASE" = ncu ]; then
  N=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  left=$(( ${NCU_END:-585} - ($(date +%s) - t0) ))
  ts "ncu, $left s left"
  [ $left -gt 40 ] && QFORGE_CUDA_PTX=$PWD/kernels/cuda/qgemm.ptx timeout $((left - 10)) $N --clock-control none -k regex:${NCU_KERNEL:-gemv_q4_k_m1} -c 1 --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section Occupancy --metrics 'regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio' ./gpu-bin/qforge bench-gemm --device cuda --type q4_k --n 14336 --k 4096 --m ${NCU_M:-1} --reps 3 --json > $OUT/ncu.txt 2>&1
  grep -E "Duration|DRAM Throughput|Memory Throughput|Registers Per|Achieved Occ|stalled" $OUT/ncu.txt | head -30
fi
# Run 3 (PHASE=check): after the last refactor, the GPU tests and a short bench of two types
# with the committed PTX (the PTX compiled here compared with it, as above).
if [ "$PHASE" = check ]; then
  ./gpu-bin/qforge-tests kernels::cuda --test-threads 1 2>&1 | tail -8 | tee /tmp/o/final/tests.log
  for ty in q4_k q8_0; do
    ./gpu-bin/qforge bench-gemm --device cuda --type $ty --n 14336 --k 4096 --m 1,8,512 --reps 40 --json >> /tmp/o/final/ours.jsonl
  done
  python3 scripts/cuda/table.py /tmp/o/final | tee /tmp/o/final/table.md | head -12
  wait $ptxjob; cat /tmp/o/final/ptx-check.txt
  tar czf $OUT/check.tgz -C /tmp/o final
fi
ts "total"
