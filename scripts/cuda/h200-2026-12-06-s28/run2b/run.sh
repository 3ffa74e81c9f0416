#!/usr/bin/env bash
# s28 run 2b (#18): the committed source's PTX (63cdd87: run 2's p2 with the m=1 GEMVs' global
# loads as s27's), compiled here, before the binaries were rebuilt: the GPU reference test
# with it (run 1's test binary, QFORGE_CUDA_PTX), every type at m=1,8,512 against the s27 PTX,
# and ncu per-line counters of its Q6_K and Q4_K GEMMs at m=512. Staged as run 1 (.peer/wt:
# kernels/cuda/qgemm.ptx.xz the new PTX, ptx/s27.ptx.xz main's); carry .peer.
set -u
source "$(dirname "$0")/../start.sh"
ts "GPU reference test with the new PTX"
reftest $PWD/kernels/cuda/qgemm.ptx $o/tests.log
ts "every type m=1,8,512: s27, new"
timeout 240 bash scripts/cuda/variants.sh $o/var "q4_k q6_k q8_0 q5_k q4_0 iq4_xs nf4" 1,8,512 s27=@ptx/s27.ptx \
  new=@kernels/cuda/qgemm.ptx 2>&1 | tee $o/var.log
tar czf $OUT/run2b-var.tgz -C /tmp o
N=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
for t in q6_k q4_k; do
  left=$(( ${NCU_END:-400} - ($(date +%s) - t0) ))
  ts "ncu gemm_$t, $left s left"
  [ $left -gt 45 ] || break
  QFORGE_CUDA_PTX=$PWD/kernels/cuda/qgemm.ptx timeout $((left - 10)) $N --clock-control none -k regex:gemm_$t -c 1 \
    --section SpeedOfLight --section WarpStateStats --section SourceCounters --section InstructionStats \
    -o $o/g$t ./gpu-bin/qforge bench-gemm --device cuda --type $t --n 14336 --k 4096 --m 512 --reps 3 --json > /dev/null 2>&1
  $N -i $o/g$t.ncu-rep --page details > $o/gemm_$t.txt 2>&1
  $N -i $o/g$t.ncu-rep --page source --csv --print-source sass > $o/gemm_$t-sass.csv 2>&1
  python3 scripts/cuda/h200-2026-12-06-s28/ncu_top.py $o/gemm_$t-sass.csv 25 | tee $o/gemm_$t-top-sass.txt | head -8
  grep -E "Duration|Warp Cycles Per Issued" $o/gemm_$t.txt
  rm -f $o/g$t.ncu-rep
done
nvidia-smi --query-gpu=clocks.sm,clocks.mem --format=csv,noheader | sed 's/^/clocks after: /' | tee -a $o/smi.txt
tar czf $OUT/run2b.tgz -C /tmp o
ts "total"
