#!/usr/bin/env bash
# s27 run 3 (#18): the committed state (gemm_ws the default GEMM): the PTX compiled here
# against the committed one, the GPU tests with the committed binary (the PTX-hash test
# included), every type at m=9,64,512 with the committed PTX against the mma.sync GEMM
# (-DGEMM_MMA_SYNC, sm_90) and WS_STAGES=2, a probe that copies only the first 128 tokens of
# each 256-token tile (probe.patch, PROBE_HALFTOK: half the token bytes read from the L2, as a
# cluster sharing each copy would; wrong results, timing only), then ncu of the Q4_K GEMM at
# m=512. Staged as run1 (.peer/wt with gpu-bin/*.xz, the probe source as probe/qgemm.cu).
set -u
cd "$(dirname "$0")/../../../.."
t0=$(date +%s)
ts() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
python3 scripts/cuda/unpack-staged.py
o=/tmp/o; mkdir -p $o
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,clocks.max.sm,clocks.max.mem,driver_version --format=csv | tee $o/smi.txt
rm -rf /tmp/ptxtree; mkdir -p /tmp/ptxtree; cp -r kernels scripts /tmp/ptxtree/
( REPORT=$o bash /tmp/ptxtree/scripts/cuda-ptx.sh &&
  if cmp -s /tmp/ptxtree/kernels/cuda/qgemm.ptx kernels/cuda/qgemm.ptx; then echo "PTX compiled here = committed PTX"
  else echo "PTX compiled here DIFFERS from the committed one"; fi ) > $o/ptx-check.txt 2>&1 &
( nvcc -arch=sm_90a -O3 -ptx -DPROBE_HALFTOK probe/qgemm.cu -o /tmp/half.tmp &&
  { echo "// qforge source sha256: variant halftok"; cat /tmp/half.tmp; } > /tmp/halftok.ptx ) &
echo "== GPU tests, committed binary and PTX"
timeout 150 ./gpu-bin/qforge-tests kernels::cuda --test-threads 1 2>&1 | tail -8 | tee $o/tests.log
wait; cat $o/ptx-check.txt
ts "every type m=9,64,512"
timeout 300 bash scripts/cuda/variants.sh $o/var "q4_k q8_0 q6_k q4_0 q5_k iq4_xs nf4" 9,64,512 \
  committed=@kernels/cuda/qgemm.ptx mma=-DGEMM_MMA_SYNC,-arch=sm_90 2>&1 | tee $o/var.log
left=$(( ${VAR_END:-430} - ($(date +%s) - t0) ))
ts "WS_STAGES=2, $left s left"
[ $left -gt 30 ] && timeout $left bash scripts/cuda/variants.sh $o/var "q4_k q6_k" 512 \
  committed=@kernels/cuda/qgemm.ptx ws2=-DWS_STAGES=2 halftok=@/tmp/halftok.ptx 2>&1 | tee -a $o/var.log
tar czf $OUT/run3-var.tgz -C /tmp o
N=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
left=$(( ${NCU_END:-560} - ($(date +%s) - t0) ))
ts "ncu, $left s left"
if [ $left -gt 40 ]; then
  timeout $((left - 10)) $N --clock-control none -k regex:gemm_q4_k -c 1 --set full -o /tmp/o/gemm \
    ./gpu-bin/qforge bench-gemm --device cuda --type q4_k --n 14336 --k 4096 --m 512 --reps 3 --json > /tmp/o/ncu-run.txt 2>&1
  $N -i /tmp/o/gemm.ncu-rep --page details > $o/ncu-gemm.txt 2>&1
  grep -E "Duration|DRAM Throughput|L2 Cache Throughput|L1/TEX Cache|Registers Per|Achieved Occ|SM Busy|Issue Slots|Stall|Compute \(SM\)|Memory Throughput" $o/ncu-gemm.txt | head -30
  rm -f /tmp/o/gemm.ncu-rep
fi
nvidia-smi --query-gpu=clocks.sm,clocks.mem --format=csv,noheader | sed 's/^/clocks after: /' | tee -a $o/smi.txt
tar czf $OUT/run3.tgz -C /tmp o
ts "total"
