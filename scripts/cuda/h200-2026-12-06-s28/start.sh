# The s28 device wrappers' common start (sourced by runN/run.sh, staged in .peer/wt of the
# main checkout): to the staged tree's root, a timer (ts), the carried binaries and PTX
# unpacked (gpu-bin/*.xz, ggml.tar.xz, ptx/*.xz, kernels/cuda/*.xz), /tmp/o for the outputs,
# and the GPU's clocks before anything runs.
cd "$(dirname "${BASH_SOURCE[0]}")/../../.."
t0=$(date +%s)
ts() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
python3 scripts/cuda/unpack-staged.py
for f in ptx/*.xz kernels/cuda/*.xz; do xz -d -f "$f"; done
o=/tmp/o; mkdir -p $o
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,clocks.max.sm,clocks.max.mem,driver_version,power.limit --format=csv | tee $o/smi.txt
# The GPU reference test (every type, m 1-70, against the f64 reference) with PTX $1, its
# result in $2.
reftest() {
  QFORGE_CUDA_PTX=$1 timeout 90 ./gpu-bin/qforge-tests kernels::cuda::tests::gpu_kernels_match_the_reference \
    --test-threads 1 2>&1 | tail -4 | tee "$2"
}
