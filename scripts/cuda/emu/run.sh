#!/usr/bin/env bash
# Checks the lean Q4_K one-token GEMV (kernels/cuda/qgemm.cu, -DM1_Q4K_LEAN) on the CPU:
# its device code extracted (the helpers it uses and the M1_Q4K_LEAN block), compiled for the
# host with shim.h (threads for lanes, barriers for shuffles) and run on random rows
# (q4k_lean.cpp). No GPU needed; not a substitute for the GPU test, a check of the kernel's
# arithmetic and indexing before device time is spent. Usage: [EMU_FLAGS=-DMACRO=V] scripts/cuda/emu/run.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$here/../../../kernels/cuda/qgemm.cu
tmp=$(mktemp -d)
python3 - "$src" "$tmp/q4k_lean.inc" <<'PY'
import re, sys
s = open(sys.argv[1]).read()
def cut(start, end):
    a = s.index(start); b = s.index(end, a)
    return s[a:b]
parts = [
    cut("#define BIAS", "__device__ __forceinline__ float warp_max"),  # BIAS, unbias, warp_sum
    cut("// The 4N values", "// One 32-value block of activations"),  # pack_levels
]
a = s.index("#ifdef M1_Q4K_LEAN"); b = s.index("#endif  // M1_Q4K_LEAN", a)
lean = s[a + len("#ifdef M1_Q4K_LEAN"):b]
lean = re.sub(r"// dp4a of unsigned bytes.*?\n}\n", "", lean, flags=re.S)  # shim.h's dp4a_us
lean = lean.replace("asm volatile(", "EMU_ASM(").replace("asm(", "EMU_ASM(")  # (in variants' #ifdefs)
lean = lean.replace("extern __shared__ __align__(16) uint8_t smem[];", "uint8_t* smem = emu_smem;")
out = "inline uint8_t* emu_smem;\n" + "".join(parts) + lean
assert "asm" not in out.replace("EMU_ASM", ""), "inline asm left in the extracted code"
open(sys.argv[2], "w").write(out)
PY
# shellcheck disable=SC2086
g++ -std=c++20 -O2 -pthread ${EMU_FLAGS:-} -I"$tmp" "$here/q4k_lean.cpp" -o "$tmp/q4k_lean"
rc=0
for args in "64 4096 3" "37 4096 2" "20 14336 2" "9 2304 1" "33 768 2" "5 256 1" "40 2048 4 7"; do
  # shellcheck disable=SC2086
  "$tmp/q4k_lean" $args || rc=1
done
rm -rf "$tmp"
exit $rc
