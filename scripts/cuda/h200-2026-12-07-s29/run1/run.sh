#!/usr/bin/env bash
# s29 run 1 (#18), NOT RUN in s29 (no device was lent: `status` said paused); the plan for the
# next session with a device. The lean Q4_K one-token GEMV (-DM1_Q4K_LEAN) against the
# committed one, at m=1 (b2b and PDL, scripts/cuda/variants.sh compiling each variant there):
# lean (L2 line prefetch 2 items ahead), lean_pf0 / pf4 / pf8 (no prefetch, 4, 8 items), lean_ld
# (weight loads not kept in the L1, with the L2 256-byte hint: -DQ4KL_LD_HINT), lean_noswz (the
# token unswizzled in shared memory: -DQ4KL_SWIZZLE=0), then
# committed again; the GEMM's producers without run-time divisions (-DWS_CURSOR: the unit's
# tiles and k step carried from unit to unit) against committed at m=512 for every type, and
# with -DVSUB_ADD (Q6_K's and Q4_0's levels by an add, no __vsub4) for those two at m=512 and
# m=1/8; the GPU reference test with all three variants in one PTX (every type, m 1-70,
# against the f64 reference); the plain 33 MB read (the floor); ncu of the lean gemv_q4_k_m1 (-lineinfo).
# Staged by ../stage.sh MAIN (as s28, scripts/cuda/h200-2026-12-06-s28/start.sh): the worktree in .peer/wt of the
# main checkout with gpu-bin/qforge.xz and gpu-bin/qforge-tests.xz (release, stripped); carry
# .peer; command: bash .peer/wt/scripts/cuda/h200-2026-12-07-s29/run1/run.sh
set -u
source "$(dirname "$0")/../../h200-2026-12-06-s28/start.sh"
mkdir -p ptx
nvcc -arch=sm_90a -O3 -ptx -DM1_Q4K_LEAN kernels/cuda/qgemm.cu -o ptx/lean.ptx.tmp &&
  { echo "// qforge source sha256: variant lean"; cat ptx/lean.ptx.tmp; } > ptx/lean.ptx &
nvcc -arch=sm_90a -O3 -ptx -DM1_Q4K_LEAN -DWS_CURSOR -DVSUB_ADD kernels/cuda/qgemm.cu -o ptx/all.ptx.tmp &&
  { echo "// qforge source sha256: variant all"; cat ptx/all.ptx.tmp; } > ptx/all.ptx &
nvcc -arch=sm_90a -O3 -ptx -lineinfo -DM1_Q4K_LEAN kernels/cuda/qgemm.cu -o ptx/lean_li.ptx.tmp &&
  { echo "// qforge source sha256: variant lean_li"; cat ptx/lean_li.ptx.tmp; } > ptx/lean_li.ptx
wait
ts "GPU reference test with lean + cursor + vsub"
reftest $PWD/ptx/all.ptx $o/tests-all.log
ts "q4_k m=1: committed, lean, prefetch distances"
timeout 200 bash scripts/cuda/variants.sh $o/var q4_k 1,8 committed=@kernels/cuda/qgemm.ptx lean=@ptx/lean.ptx \
  lean_pf0=-DM1_Q4K_LEAN,-DQ4KL_PF=0 lean_pf4=-DM1_Q4K_LEAN,-DQ4KL_PF=4 lean_pf8=-DM1_Q4K_LEAN,-DQ4KL_PF=8 \
  lean_ld=-DM1_Q4K_LEAN,-DQ4KL_LD_HINT lean_noswz=-DM1_Q4K_LEAN,-DQ4KL_SWIZZLE=0 \
  committed2=@kernels/cuda/qgemm.ptx 2>&1 | tee $o/var.log
tar czf $OUT/run1-var.tgz -C /tmp o  # (again after each step: what ran comes back if time runs out)
ts "m=512 every type: committed, cursor; q8_0 q6_k nf4 committed again"
timeout 150 bash scripts/cuda/variants.sh $o/var "q4_k q6_k q8_0 q5_k q4_0 iq4_xs nf4" 512 \
  committed=@kernels/cuda/qgemm.ptx cursor=-DWS_CURSOR 2>&1 | tee -a $o/var.log
tar czf $OUT/run1-var.tgz -C /tmp o
timeout 60 bash scripts/cuda/variants.sh $o/var "q6_k q4_0" 512 cursor_vs=-DWS_CURSOR,-DVSUB_ADD 2>&1 |
  tee -a $o/var.log
timeout 60 bash scripts/cuda/variants.sh $o/var "q6_k q4_0" 1,8 committed=@kernels/cuda/qgemm.ptx vsub=-DVSUB_ADD 2>&1 |
  tee -a $o/var.log
timeout 60 bash scripts/cuda/variants.sh $o/var "q8_0 q6_k nf4" 512 committed3=@kernels/cuda/qgemm.ptx 2>&1 |
  tee -a $o/var.log
ts "plain read"
timeout 60 python3 scripts/cuda/small_read.py kernels/cuda/qgemm.ptx 33 1000 > $o/small_read.jsonl 2>&1
cat $o/small_read.jsonl
tar czf $OUT/run1-var.tgz -C /tmp o
N=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
left=$(( 560 - ($(date +%s) - t0) ))
ts "ncu lean gemv, $left s left"
if [ $left -gt 60 ]; then
  QFORGE_CUDA_PTX=$PWD/ptx/lean_li.ptx timeout $((left - 20)) $N --clock-control none -k regex:gemv_q4_k_m1 -c 1 \
    --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section SourceCounters \
    --section InstructionStats --import-source yes -o $o/lean ./gpu-bin/qforge bench-gemm --device cuda --type q4_k \
    --n 14336 --k 4096 --m 1 --reps 3 --json > $o/lean-run.txt 2>&1
  $N -i $o/lean.ncu-rep --page details > $o/lean.txt 2>&1
  $N -i $o/lean.ncu-rep --page source --csv --print-source sass > $o/lean-sass.csv 2>/dev/null
  python3 scripts/cuda/h200-2026-12-06-s28/ncu_top.py $o/lean-sass.csv 30 > $o/lean-top-sass.txt
  grep -E "Duration|DRAM Throughput|Warp Cycles Per Issued|Executed Instructions|Stall" $o/lean.txt | head -14
  tar czf $OUT/run1-ncu.tgz -C $o lean.txt lean-top-sass.txt lean-run.txt
fi
nvidia-smi --query-gpu=clocks.sm,clocks.mem --format=csv,noheader | sed 's/^/clocks after: /' | tee -a $o/smi.txt
ts "total"
