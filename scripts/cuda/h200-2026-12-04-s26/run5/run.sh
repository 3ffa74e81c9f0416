#!/usr/bin/env bash
# s26 run 5 (second part): the GEMVs' in-block token quantization spread over all the block's
# threads (quantize_blocks: eight threads a block of 32 values; wide.patch on main's qgemm.cu,
# not kept) against the committed kernel, in one run. Staged like run4/run.sh (a copy of the worktree in .peer/wt with gpu-bin/*.xz,
# the binaries of run 4: with a PTX that has no quantize_tokens kernel their GEMVs take the f32
# tokens, as the committed host does). The PTX is compiled by scripts/cuda-ptx.sh (the one to
# commit), the GPU tests run with it, then variants.sh times committed / wide twice each.
set -u
cd "$(dirname "$0")/../../../.."
t0=$(date +%s)
ts() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
python3 scripts/cuda/unpack-staged.py
o=/tmp/o; mkdir -p $o/ptx
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,clocks.max.sm,clocks.max.mem,driver_version --format=csv | tee $o/smi.txt
cp kernels/cuda/qgemm.ptx /tmp/committed.ptx
rm -rf /tmp/t; mkdir -p /tmp/t; cp -r kernels scripts /tmp/t/
REPORT=$o/ptx bash /tmp/t/scripts/cuda-ptx.sh > $o/ptx/ptx.log 2>&1; cp /tmp/t/kernels/cuda/qgemm.ptx $o/wide.ptx
ts "PTX compiled"; grep -A3 "'gemv_q4_k_m1'\|'gemv_q4_k_m8'" $o/ptx/qgemm.cu.ptxas.txt | grep -i "regist\|spill"
echo "== GPU tests with wide"
QFORGE_CUDA_PTX=$o/wide.ptx timeout 90 ./gpu-bin/qforge-tests kernels::cuda --test-threads 1 2>&1 | tail -8 | tee $o/tests.log
ts "variants"
timeout 150 bash scripts/cuda/variants.sh $o/var "q4_k q8_0 q6_k q4_0 q5_k iq4_xs nf4" 1,8 committed=@/tmp/committed.ptx \
  wide=@$o/wide.ptx 2>&1 | tee $o/var.log
timeout 60 bash scripts/cuda/variants.sh $o/var "q4_k" 1,8 committed2=@/tmp/committed.ptx wide2=@$o/wide.ptx 2>&1 | tee -a $o/var.log
nvidia-smi --query-gpu=clocks.sm,clocks.mem --format=csv,noheader | sed 's/^/clocks after: /' | tee -a $o/smi.txt
tar czf $OUT/run5.tgz -C /tmp o
ts "total"
