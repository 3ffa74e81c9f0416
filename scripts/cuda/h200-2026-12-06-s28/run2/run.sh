#!/usr/bin/env bash
# s28 run 2 (#18): run 1's winner (p1: -DWS_PAIR -DWS_Q6K_VEC) against the committed s27 PTX
# and two more variants, every type at m=1,8,512 (the GEMVs share the decoders): p3 = p1 +
# -DPTR_ALIGN (load_words and the Q6_K pair align by pointer arithmetic, so the compiler keeps
# the shared address space: LDS instead of generic LD), p2 = p3 + -DHDR16 (the Q4_K / Q5_K
# header by one 16-byte load instead of four 4-byte ones: run 1's ncu showed those 4-way bank
# conflicted); the GPU reference test with p2 and p1. Staged as run 1; carry .peer.
set -u
source "$(dirname "$0")/../start.sh"
for v in p2 p1; do
  ts "GPU reference test with $v"
  [ -x gpu-bin/qforge-tests ] && QFORGE_CUDA_PTX=$PWD/ptx/$v.ptx timeout 90 ./gpu-bin/qforge-tests \
    kernels::cuda::tests::gpu_kernels_match_the_reference --test-threads 1 2>&1 | tail -4 | tee $o/tests-$v.log
done
ts "every type m=1,8,512: s27, p1, p2, p3"
timeout 400 bash scripts/cuda/variants.sh $o/var "q4_k q6_k q8_0 q5_k q4_0 iq4_xs nf4" 1,8,512 s27=@kernels/cuda/qgemm.ptx \
  p1=@ptx/p1.ptx p2=@ptx/p2.ptx p3=@ptx/p3.ptx 2>&1 | tee $o/var.log
nvidia-smi --query-gpu=clocks.sm,clocks.mem --format=csv,noheader | sed 's/^/clocks after: /' | tee -a $o/smi.txt
tar czf $OUT/run2.tgz -C /tmp o
ts "total"
