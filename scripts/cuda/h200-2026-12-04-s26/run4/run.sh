#!/usr/bin/env bash
# s26 run 4 (second part): the tokens quantized once per call (`quantize_tokens`) and the Q4_K
# GEMV's scales by byte permutes, against the committed kernel in one run. Staged like run.sh
# (a copy of the worktree in .peer/wt with gpu-bin/*.xz, built with token-kernel.patch's host);
# kernels/cuda/qgemm.cu there was s1 (main + token-kernel.patch + q4k-scales.patch), run4/s2.cu
# s2 (main + token-kernel.patch); neither kept (see docs/cuda.md, s26 second part). Each source's
# PTX is compiled by scripts/cuda-ptx.sh in a copy of the tree (the PTX to commit), the GPU
# tests run with each, then variants.sh times committed / s2 / s1 / committed again.
set -u
cd "$(dirname "$0")/../../../.."
t0=$(date +%s)
ts() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
python3 scripts/cuda/unpack-staged.py
o=/tmp/o; mkdir -p $o
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,clocks.max.sm,clocks.max.mem,driver_version --format=csv | tee $o/smi.txt
for v in s1 s2; do
  rm -rf /tmp/t-$v; mkdir -p /tmp/t-$v/$v; cp -r kernels scripts /tmp/t-$v/
  [ $v = s2 ] && cp scripts/cuda/h200-2026-12-04-s26/run4/s2.cu /tmp/t-$v/kernels/cuda/qgemm.cu
  ( REPORT=/tmp/t-$v/$v bash /tmp/t-$v/scripts/cuda-ptx.sh > /tmp/t-$v/$v/ptx.log 2>&1
    cp /tmp/t-$v/kernels/cuda/qgemm.ptx $o/$v.ptx; cp -r /tmp/t-$v/$v $o/ ) &
done
wait
ts "PTX compiled"; ls -la $o; cat $o/s1/ptx.log $o/s2/ptx.log; grep -h -A1 "gemv_q4_k_m1\|quantize_tokens" $o/s*/qgemm.cu.ptxas.txt | grep -i "regist\|spill" | head
for v in s1 s2; do
  echo "== GPU tests with $v"
  [ -s $o/$v.ptx ] && QFORGE_CUDA_PTX=$o/$v.ptx timeout 90 ./gpu-bin/qforge-tests kernels::cuda --test-threads 1 2>&1 | tail -8
done 2>&1 | tee $o/tests.log
ts "variants"
timeout ${VAR1_S:-200} bash scripts/cuda/variants.sh $o/var "q4_k" 1,8 committed=@kernels/cuda/qgemm.ptx \
  s2=@$o/s2.ptx s1=@$o/s1.ptx committed2=@kernels/cuda/qgemm.ptx s1b=@$o/s1.ptx 2>&1 | tee $o/var.log
left=$(( ${VAR_END:-430} - ($(date +%s) - t0) ))
ts "other types, $left s left"
[ $left -gt 30 ] && timeout $left bash scripts/cuda/variants.sh $o/var "q8_0 q6_k q4_0 q5_k iq4_xs nf4" 1,8 \
  committed=@kernels/cuda/qgemm.ptx s1=@$o/s1.ptx 2>&1 | tee -a $o/var.log
left=$(( ${VAR_END:-430} - ($(date +%s) - t0) ))
ts "Q4_K m=1 resident blocks a multiprocessor (s1 source), $left s left"
[ $left -gt 30 ] && timeout $left bash scripts/cuda/variants.sh $o/var "q4_k" 1 \
  s1=@$o/s1.ptx s1blk3=-DM1_BLOCKS=3 s1blk1=-DM1_BLOCKS=1 2>&1 | tee -a $o/var.log
nvidia-smi --query-gpu=clocks.sm,clocks.mem --format=csv,noheader | sed 's/^/clocks after: /' | tee -a $o/smi.txt
python3 scripts/cuda/small_read.py $o/s1.ptx 33 > $o/small_read.jsonl 2>&1 || true
tar czf $OUT/run4.tgz -C /tmp o
ts "total"
