#!/usr/bin/env bash
# s28 run 3 (#18): the committed state: the PTX compiled here by scripts/cuda-ptx.sh against
# the committed one, the GPU tests with the committed binary (the PTX-hash test included),
# then the full bench (scripts/cuda-bench.sh: every type at m=1,8,512, the plain reads,
# cuBLAS, dequant + cuBLAS, llama.cpp's CUDA backend), and the committed GEMM against the
# s27 one (ptx/s27.ptx, main's PTX) at m=512 in the same run. Staged as runs 1 and 2 (.peer/wt,
# gpu-bin/*.xz, ggml.tar.xz, ptx/*.xz); carry .peer.
set -u
source "$(dirname "$0")/../start.sh"
(bash scripts/cuda/build-ggml.sh > /tmp/ggml-build.log 2>&1; echo "ggml build rc=$?" >> /tmp/ggml-build.log) &
rm -rf /tmp/ptxtree; mkdir -p /tmp/ptxtree; cp -r kernels scripts /tmp/ptxtree/
( REPORT=$o bash /tmp/ptxtree/scripts/cuda-ptx.sh &&
  if cmp -s /tmp/ptxtree/kernels/cuda/qgemm.ptx kernels/cuda/qgemm.ptx; then echo "PTX compiled here = committed PTX"
  else echo "PTX compiled here DIFFERS from the committed one"; fi ) > $o/ptx-check.txt 2>&1 &
ptxjob=$!
ts "m=512 every type: committed against s27"
timeout 200 bash scripts/cuda/variants.sh $o/var "q4_k q6_k q8_0 q5_k q4_0 iq4_xs nf4" 512 \
  committed=@kernels/cuda/qgemm.ptx s27=@ptx/s27.ptx 2>&1 | tee $o/var.log
wait $ptxjob; cat $o/ptx-check.txt
tar czf $OUT/run2-var.tgz -C /tmp o
ts "waiting for the ggml build"
wait; tail -2 /tmp/ggml-build.log
left=$(( ${BENCH_END:-585} - ($(date +%s) - t0) ))
ts "full bench, committed binary and PTX, $left s left"
timeout $left bash scripts/cuda-bench.sh /tmp/o/final 14336 4096 40 2>&1 | tee /tmp/o/bench.log
tar czf $OUT/run2.tgz -C /tmp o
ts "total"
