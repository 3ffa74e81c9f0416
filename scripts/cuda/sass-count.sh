#!/usr/bin/env bash
# Counts the SASS instructions of one kernel of kernels/cuda/qgemm.cu without a GPU: compiles
# to a cubin for sm_90a with extra nvcc flags, disassembles the kernel (cuobjdump) and prints
# its regions, split after each EXIT and BAR.SYNC (so a GEMV's row loop is a region of its
# own), each with its instruction count and opcode histogram, then ptxas' registers/spills.
# Needs nvcc and cuobjdump (PyPI's nvidia-cuda-nvcc, Triton's bundled cuobjdump do).
# Usage: scripts/cuda/sass-count.sh KERNEL [NVCC_FLAGS...]   e.g. gemv_q4_k_m1 -DM1_Q4K_LEAN
set -euo pipefail
cd "$(dirname "$0")/../.."
kernel=$1; shift
tmp=$(mktemp -d)
nvcc -arch=sm_90a -O3 -cubin "$@" -Xptxas -v kernels/cuda/qgemm.cu -o "$tmp/k.cubin" 2> "$tmp/ptxas.txt"
cuobjdump -sass -fun "$kernel" "$tmp/k.cubin" > "$tmp/k.sass"
python3 - "$tmp/k.sass" <<'PY'
import re, sys
from collections import Counter
ins = []
for line in open(sys.argv[1]):
    m = re.match(r"\s+/\*[0-9a-f]{4}\*/\s+(.*?)\s*;", line)
    if m:
        ins.append(m.group(1))
region, start = [], 0
def flush(end):
    if not region: return
    ops = Counter(re.sub(r"\..*", "", (t.split()[1] if t.startswith("@") else t.split()[0])) for t in region)
    print(f"instructions {start}-{end - 1}: {len(region)}: " + " ".join(f"{o}:{c}" for o, c in ops.most_common()))
for i, t in enumerate(ins):
    region.append(t)
    if re.search(r"\bEXIT\b|BAR\.SYNC", t):
        flush(i + 1); region, start = [], i + 1
flush(len(ins))
print(f"total {len(ins)}")
PY
grep -A3 "entry function '$kernel'" "$tmp/ptxas.txt" | grep -E "registers|spill" | sed 's/^ptxas info *: //'
rm -rf "$tmp"
