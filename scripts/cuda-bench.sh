#!/usr/bin/env bash
# Issue #18's GPU measurement in one run on the GPU machine (CUDA 13, nvcc, PyTorch; no
# Rust there): qforge's CUDA kernels (`bench-gemm --device cuda`), llama.cpp's CUDA backend
# (scripts/cuda/ggml_peer.cpp against ggml built here for sm_90), PyTorch's bf16 matmul on
# pre-dequantized weights (cuBLAS) and the dequant + cuBLAS pipeline (our dequant kernel, then
# cuBLAS: scripts/cuda/dequant_peer.py), same shapes, weights rotated past the L2, CUDA events; a plain
# read of the m=1 calls' bytes timed the same way (scripts/cuda/small_read.py); then the GPU
# unit tests and the table (scripts/cuda/table.py).
#
# Needs, carried from a machine with cargo (ignored folders):
#   gpu-bin/qforge        cargo build --release; strip -o gpu-bin/qforge target/release/qforge
#   gpu-bin/qforge-tests  the lib test binary (cargo test --lib --no-run), stripped
#   .peer/ggml            llama.cpp's ggml sources (scripts/cuda/build-ggml.sh says which)
# Usage: scripts/cuda-bench.sh OUTDIR [N K REPS]
# When kernels/cuda/qgemm.cu no longer matches the committed PTX's hash, the PTX is compiled
# here (scripts/cuda-ptx.sh) and loaded through QFORGE_CUDA_PTX; it lands in OUTDIR to commit.
# A QFORGE_CUDA_PTX already set (a variant's PTX) is used as it is and copied to OUTDIR.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/cuda-bench.sh OUTDIR [N K REPS]}
n=${2:-14336} k=${3:-4096} reps=${4:-40}
mkdir -p "$out"
# A peer build already made in this run (.peer/build/ggml_peer) is reused.
if [ -x .peer/build/ggml_peer ]; then
  echo "ggml peer already built" > /tmp/ggml-build.log; build=
else
  (bash scripts/cuda/build-ggml.sh > /tmp/ggml-build.log 2>&1; echo "ggml build rc=$?" >> /tmp/ggml-build.log) &
  build=$!
fi
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,clocks.max.sm,clocks.max.mem,driver_version,power.limit \
  --format=csv | tee "$out/smi.txt"
want=$(sha256sum kernels/cuda/qgemm.cu | cut -d' ' -f1)
have=$(head -1 kernels/cuda/qgemm.ptx 2>/dev/null | sed 's/.*sha256: //')
if [ -n "${QFORGE_CUDA_PTX:-}" ]; then
  echo "using QFORGE_CUDA_PTX=$QFORGE_CUDA_PTX"
  cp "$QFORGE_CUDA_PTX" "$out/"
elif [ "$want" != "$have" ]; then
  echo "qgemm.cu changed: compiling its PTX here"
  REPORT="$out" bash scripts/cuda-ptx.sh || exit 1
  cp kernels/cuda/qgemm.ptx "$out/"
  export QFORGE_CUDA_PTX=$PWD/kernels/cuda/qgemm.ptx
fi
echo "== GPU unit tests"
./gpu-bin/qforge-tests kernels::cuda --test-threads 1 --nocapture 2>&1 | tail -15 | tee "$out/tests.log"
echo "== qforge bench-gemm --device cuda"
: > "$out/ours.jsonl"
for ty in q4_k q5_k q6_k q8_0 q4_0 iq4_xs nf4; do
  ./gpu-bin/qforge bench-gemm --device cuda --type $ty --n "$n" --k "$k" --m 1,8,512 --reps "$reps" --json \
    >> "$out/ours.jsonl" || echo "bench-gemm $ty failed"
done
echo "== a plain read of the m=1 calls' bytes, timed the same way"
python3 scripts/cuda/small_read.py "${QFORGE_CUDA_PTX:-kernels/cuda/qgemm.ptx}" 33 48 62 117 1000 \
  > "$out/small_read.jsonl" || echo "small_read.py failed"
echo "== PyTorch bf16 (cuBLAS)"
python3 scripts/cuda/torch_peer.py --n "$n" --k "$k" --reps "$reps" > "$out/torch.jsonl"
echo "== dequant (ours) + PyTorch bf16 (cuBLAS)"
python3 scripts/cuda/dequant_peer.py "${QFORGE_CUDA_PTX:-kernels/cuda/qgemm.ptx}" --n "$n" --k "$k" --reps "$reps" \
  > "$out/dequant.jsonl" || echo "dequant_peer.py failed"
[ -n "$build" ] && wait $build
tail -3 /tmp/ggml-build.log
echo "== llama.cpp CUDA"
timeout 240 .peer/build/ggml_peer "$n" "$k" "$reps" > "$out/llama.jsonl"
nvidia-smi --query-gpu=clocks.sm,clocks.mem --format=csv,noheader | sed 's/^/clocks after: /' | tee -a "$out/smi.txt"
python3 scripts/cuda/table.py "$out" | tee "$out/table.md"
