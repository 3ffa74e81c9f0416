#!/usr/bin/env bash
# Device-run wrapper (staging only, s24 #18): unpack, full bench (default kernels), GEMM variants
# at m=512 on every type, ncu of one type's GEMM (NCU_TYPE); outputs tarred into $OUT.
set -u
cd "$(dirname "$0")"
t0=$(date +%s)
ts() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
python3 scripts/cuda/unpack-staged.py
mkdir -p /tmp/o
PHASE=${PHASE:-all}
TYPES=${TYPES:-"q4_k q5_k q6_k q8_0 q4_0 iq4_xs nf4"}
if [ "$PHASE" = all ] || [ "$PHASE" = bench ]; then
  ts "bench"
  timeout ${BENCH_S:-400} bash scripts/cuda-bench.sh /tmp/o/final 14336 4096 40 2>&1 | tee /tmp/o/bench.log
  cp kernels/cuda/qgemm.ptx $OUT/ 2>/dev/null
  tar czf $OUT/final.tgz -C /tmp/o final bench.log
  ts "bench phase done"
fi
if [ "$PHASE" = all ] || [ "$PHASE" = var ]; then
  left=$(( ${VAR_END:-540} - ($(date +%s) - t0) ))
  ts "variants, $left s left"
  [ $left -gt 60 ] && timeout $((left - 20)) bash scripts/cuda/variants.sh /tmp/o/var "$TYPES" ${VAR_M:-512} ${VARIANTS:-} 2>&1 | tee /tmp/o/var.log
  for f in /tmp/qgemm-*.ptx; do n=$(basename $f .ptx); ptxas -arch=sm_90 -v $f -o /dev/null 2>&1 | grep -A1 "gemm_q4_k\|gemm_q6_k" | head -8 | sed "s/^/$n: /"; done > /tmp/o/var/ptxas.txt 2>&1
  tar czf $OUT/var.tgz -C /tmp/o var var.log 2>/dev/null
  ts "variants done"
fi
if [ "$PHASE" = all ] || [ "$PHASE" = ncu ]; then
  N=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  left=$(( ${NCU_END:-585} - ($(date +%s) - t0) ))
  ts "ncu, $left s left"
  [ $left -gt 40 ] && QFORGE_CUDA_PTX=$PWD/kernels/cuda/qgemm.ptx timeout $((left - 10)) $N --clock-control none -k regex:gemm_${NCU_TYPE:-q4_k} -c 1 --section SpeedOfLight --section WarpStateStats --section SchedulerStats --section Occupancy --section ComputeWorkloadAnalysis --metrics 'regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio' ./gpu-bin/qforge bench-gemm --device cuda --type ${NCU_TYPE:-q4_k} --n 14336 --k 4096 --m 512 --reps 3 --json > $OUT/ncu.txt 2>&1
  grep -E "Duration|Issue Slots|Eligible Warps|Registers Per|stalled" $OUT/ncu.txt | sort -k3 -n -r | head -30
fi
ts "total"
