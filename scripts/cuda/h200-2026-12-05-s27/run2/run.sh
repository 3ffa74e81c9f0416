#!/usr/bin/env bash
# s27 run 2 (#18): the warp-specialized wgmma GEMM with the raw weights staged in shared
# memory by coalesced cp.async (-DGEMM_WS as of this run), its timing probes (probe.patch on
# the same source, staged as probe/qgemm.cu: PROBE_NODECODE, PROBE_NOMMA, PROBE_NOTMA: the
# tokens not copied), every type at m=9,64 against the committed GEMM, then the full bench
# (scripts/cuda-bench.sh) with the new kernel's PTX: GPU tests, every type at m=1,8,512,
# cuBLAS, dequant + cuBLAS, llama.cpp. Staged as run1 (.peer/wt, gpu-bin/*.xz, ggml.tar.xz).
set -u
cd "$(dirname "$0")/../../../.."
t0=$(date +%s)
ts() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
python3 scripts/cuda/unpack-staged.py
o=/tmp/o; mkdir -p $o
(bash scripts/cuda/build-ggml.sh > /tmp/ggml-build.log 2>&1; echo "ggml build rc=$?" >> /tmp/ggml-build.log) &
ggml=$!
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,clocks.max.sm,clocks.max.mem,driver_version --format=csv | tee $o/smi.txt
mkdir -p /tmp/probe; cp probe/qgemm.cu /tmp/probe/
ptx() {  # NAME SOURCE FLAGS...: PTX for sm_90a with a hash line, and ptxas' report
  local name=$1 src=$2; shift 2
  nvcc -arch=sm_90a -O3 -ptx "$@" "$src" -o /tmp/$name.tmp && { echo "// qforge source sha256: variant $name"; cat /tmp/$name.tmp; } > $o/$name.ptx
  nvcc -arch=sm_90a -O3 -cubin -Xptxas -v "$@" "$src" -o /tmp/$name.cubin 2> $o/$name.ptxas.txt
}
ptx ws kernels/cuda/qgemm.cu -DGEMM_WS &
ptx ws4 kernels/cuda/qgemm.cu -DGEMM_WS -DWS_STAGES=4 &
ptx ws_nodec /tmp/probe/qgemm.cu -DGEMM_WS -DPROBE_NODECODE &
ptx ws_nomma /tmp/probe/qgemm.cu -DGEMM_WS -DPROBE_NOMMA &
ptx ws_notma /tmp/probe/qgemm.cu -DGEMM_WS -DPROBE_NOTMA &
ptx ws_notma_nodec /tmp/probe/qgemm.cu -DGEMM_WS -DPROBE_NOTMA -DPROBE_NODECODE &
ptx ws_nodec_nomma /tmp/probe/qgemm.cu -DGEMM_WS -DPROBE_NODECODE -DPROBE_NOMMA &
wait $(jobs -p | grep -v "^$ggml$")
ts "PTX compiled"; ls $o
grep -h -A1 "function 'gemm_q4_k'\|function 'gemm_q8_0'" $o/*.ptxas.txt | grep -i "regist\|spill" | head -20
echo "== GPU tests with ws"
QFORGE_CUDA_PTX=$o/ws.ptx timeout 150 ./gpu-bin/qforge-tests kernels::cuda --test-threads 1 2>&1 | tail -8 | tee $o/tests.log
ts "probes, q4_k m=512"
timeout 160 bash scripts/cuda/variants.sh $o/var q4_k 512 committed=@kernels/cuda/qgemm.ptx ws=@$o/ws.ptx \
  ws4=@$o/ws4.ptx ws_nodec=@$o/ws_nodec.ptx ws_nomma=@$o/ws_nomma.ptx ws_notma=@$o/ws_notma.ptx \
  ws_notma_nodec=@$o/ws_notma_nodec.ptx ws_nodec_nomma=@$o/ws_nodec_nomma.ptx 2>&1 | tee $o/var.log
ts "every type m=9,64: committed, ws"
timeout 90 bash scripts/cuda/variants.sh $o/var "q4_k q8_0 q6_k q4_0 q5_k iq4_xs nf4" 9,64 \
  committed=@kernels/cuda/qgemm.ptx ws=@$o/ws.ptx 2>&1 | tee -a $o/var.log
tar czf $OUT/run2-var.tgz -C /tmp o
ts "waiting for the ggml build"
wait $ggml; tail -2 /tmp/ggml-build.log
left=$(( ${BENCH_END:-575} - ($(date +%s) - t0) ))
ts "full bench with ws, $left s left"
QFORGE_CUDA_PTX=$o/ws.ptx timeout $left bash scripts/cuda-bench.sh /tmp/o/final 14336 4096 40 2>&1 | tee /tmp/o/bench.log
rm -f $o/*.tmp
tar czf $OUT/run2.tgz -C /tmp o
ts "total"
