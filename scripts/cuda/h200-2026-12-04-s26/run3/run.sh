#!/usr/bin/env bash
# s26 run 3: Q4_K/Q6_K/Q8_0 m=1 with and without the token quantization (a timing probe, run3/m1-no-quant.patch applied).
set -u; cd "$(dirname "$0")"; python3 scripts/cuda/unpack-staged.py
timeout 400 bash scripts/cuda/variants.sh /tmp/o/var3 "q4_k q6_k q8_0" 1 base= noquant=-DM1_NO_QUANT base2= 2>&1 | tee $OUT/var3.log
cp /tmp/o/var3/variants.jsonl $OUT/
