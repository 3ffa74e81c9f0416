#!/usr/bin/env bash
# s27 run 1 (#18): the warp-specialized wgmma GEMM (-DGEMM_WS: mbarrier stages, 128-byte
# swizzle, bulk-copied tokens, persistent grid) against the committed GEMM and the s26 wgmma
# variant, with timing probes of both (probe.patch: -DPROBE_NODECODE, the producers store a
# constant instead of decoding; -DPROBE_NOMMA, the consumers issue no wgmma; wrong results,
# timing only); the GPU tests with the new kernel's PTX; dequant + cuBLAS in the same run.
# Staged as s26's run.sh: a copy of the worktree in .peer/wt with gpu-bin/*.xz beside it.
set -u
cd "$(dirname "$0")/../../../.."
t0=$(date +%s)
ts() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
python3 scripts/cuda/unpack-staged.py
o=/tmp/o; mkdir -p $o
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,clocks.max.sm,clocks.max.mem,driver_version --format=csv | tee $o/smi.txt
# the probe source (qgemm.cu + probe.patch) is staged as probe/qgemm.cu
mkdir -p /tmp/probe; cp probe/qgemm.cu /tmp/probe/
ptx() {  # NAME SOURCE FLAGS...: PTX for sm_90a with a hash line, and ptxas' report
  local name=$1 src=$2; shift 2
  nvcc -arch=sm_90a -O3 -ptx "$@" "$src" -o /tmp/$name.tmp && { echo "// qforge source sha256: variant $name"; cat /tmp/$name.tmp; } > $o/$name.ptx
  nvcc -arch=sm_90a -O3 -cubin -Xptxas -v "$@" "$src" -o /tmp/$name.cubin 2> $o/$name.ptxas.txt
  cuobjdump --dump-sass /tmp/$name.cubin 2>/dev/null | grep -c "HGMMA" | sed "s/^/$name HGMMA lines: /"
}
ptx ws kernels/cuda/qgemm.cu -DGEMM_WS &
ptx ws3 kernels/cuda/qgemm.cu -DGEMM_WS -DWS_STAGES=3 &
ptx wg kernels/cuda/qgemm.cu -DGEMM_WGMMA &
ptx ws_nodec /tmp/probe/qgemm.cu -DGEMM_WS -DPROBE_NODECODE &
ptx ws_nomma /tmp/probe/qgemm.cu -DGEMM_WS -DPROBE_NOMMA &
ptx wg_nodec /tmp/probe/qgemm.cu -DGEMM_WGMMA -DPROBE_NODECODE &
ptx wg_nomma /tmp/probe/qgemm.cu -DGEMM_WGMMA -DPROBE_NOMMA &
wait
ts "PTX compiled"; ls $o
grep -h -A1 "function 'gemm_q4_k'\|function 'gemm_q6_k'" $o/*.ptxas.txt | grep -i "regist\|spill" | head -20
grep -il "warn" $o/*.ptxas.txt && grep -ih "warn" $o/*.ptxas.txt | sort | uniq -c | head
echo "== GPU tests with ws"
QFORGE_CUDA_PTX=$o/ws.ptx timeout 150 ./gpu-bin/qforge-tests kernels::cuda --test-threads 1 2>&1 | tail -12 | tee $o/tests.log
ts "probes, q4_k m=512"
timeout 200 bash scripts/cuda/variants.sh $o/var q4_k 512 committed=@kernels/cuda/qgemm.ptx ws=@$o/ws.ptx \
  ws3=@$o/ws3.ptx ws_nodec=@$o/ws_nodec.ptx ws_nomma=@$o/ws_nomma.ptx wg=@$o/wg.ptx wg_nodec=@$o/wg_nodec.ptx \
  wg_nomma=@$o/wg_nomma.ptx 2>&1 | tee $o/var.log
left=$(( ${VAR_END:-420} - ($(date +%s) - t0) ))
ts "every type m=9,64,512: committed, ws; $left s left"
[ $left -gt 30 ] && timeout $left bash scripts/cuda/variants.sh $o/var "q4_k q8_0 q6_k q4_0 q5_k iq4_xs nf4" 9,64,512 \
  committed=@kernels/cuda/qgemm.ptx ws=@$o/ws.ptx 2>&1 | tee -a $o/var.log
left=$(( ${DQ_END:-520} - ($(date +%s) - t0) ))
ts "dequant + cuBLAS, $left s left"
[ $left -gt 20 ] && timeout $left python3 scripts/cuda/dequant_peer.py kernels/cuda/qgemm.ptx --m 512 2>&1 | tee $o/dequant.jsonl
nvidia-smi --query-gpu=clocks.sm,clocks.mem --format=csv,noheader | sed 's/^/clocks after: /' | tee -a $o/smi.txt
rm -f $o/*.tmp
tar czf $OUT/run1.tgz -C /tmp o
ts "total"
