#!/usr/bin/env bash
# Counts the SASS instructions of one kernel of kernels/cuda/qgemm.cu without a GPU: compiles
# to a cubin for sm_90a with extra nvcc flags, disassembles the kernel (cuobjdump) and prints
# its regions, split after each EXIT and BAR.SYNC, and its loops (back edges), each with its
# instruction count and opcode histogram, then ptxas' registers/spills.
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
ins, ins2 = [], []
for line in open(sys.argv[1]):
    m = re.match(r"\s+/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;", line)
    if m:
        ins.append(m.group(2))
        ins2.append((int(m.group(1), 16), m.group(2)))
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
# Loops: a branch back over more than 64 instructions, its body from the target to it (the
# divergent-path copies after the kernel's end also show up, as loops that end there).
addr = [a for a, _ in ins2]
for i, (a, t) in enumerate(ins2):
    m = re.search(r"BRA (?:!?U?P\d, )?0x([0-9a-f]+)", t)
    if m and int(m.group(1), 16) < a - 0x400 and int(m.group(1), 16) in addr:
        j = addr.index(int(m.group(1), 16))
        ops = Counter(re.sub(r"\..*", "", (x.split()[1] if x.startswith("@") else x.split()[0])) for _, x in ins2[j:i + 1])
        print(f"loop {j}-{i}: {i + 1 - j}: " + " ".join(f"{o}:{c}" for o, c in ops.most_common()))
PY
grep -A3 "entry function '$kernel'" "$tmp/ptxas.txt" | grep -E "registers|spill" | sed 's/^ptxas info *: //'
rm -rf "$tmp"
