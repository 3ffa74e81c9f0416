#!/usr/bin/env bash
# Compiles kernels/cuda/*.cu to PTX for sm_90a (Hopper: wgmma) with nvcc (run it on the GPU machine) and
# writes each next to its source, its first line the source's sha256, which
# src/kernels/cuda.rs checks (a unit test fails when the source changed after the PTX).
# REPORT=DIR also writes ptxas' resource report (registers, shared memory, spills) there.
set -euo pipefail
cd "$(dirname "$0")/.."
for cu in kernels/cuda/*.cu; do
  ptx="${cu%.cu}.ptx"
  sum=$(sha256sum "$cu" | cut -d' ' -f1)
  nvcc -arch=sm_90a -O3 -ptx "$cu" -o "$ptx.tmp"
  { echo "// qforge source sha256: $sum"; cat "$ptx.tmp"; } > "$ptx"
  rm "$ptx.tmp"
  if [ -n "${REPORT:-}" ]; then
    nvcc -arch=sm_90a -O3 -cubin -Xptxas -v "$cu" -o "/tmp/$(basename "$cu").cubin" \
      2> "$REPORT/$(basename "$cu").ptxas.txt"
  fi
done
