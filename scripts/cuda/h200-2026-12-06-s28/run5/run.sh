#!/usr/bin/env bash
# s28 run 5 (#18): odd: every type's staged window row an odd number of 16-byte words (NF4 and
# IQ4_XS had 10: their rows' 16- and 8-byte code loads met banks twice; run 4's NF4 absmax
# staging made NF4's 12 and ran 12% slower), against the committed PTX: the GPU reference test
# with it, NF4 and IQ4_XS at m=9,64,512 twice, Q5_K at m=512. Staged as run 4 (ptx/odd.ptx.xz).
set -u
source "$(dirname "$0")/../start.sh"
ts "GPU reference test with odd"
reftest $PWD/ptx/odd.ptx $o/tests.log
ts "nf4, iq4_xs m=9,64,512; q5_k m=512"
timeout 150 bash scripts/cuda/variants.sh $o/var "nf4 iq4_xs" 9,64,512 committed=@kernels/cuda/qgemm.ptx odd=@ptx/odd.ptx \
  committed2=@kernels/cuda/qgemm.ptx odd2=@ptx/odd.ptx 2>&1 | tee $o/var.log
timeout 60 bash scripts/cuda/variants.sh $o/var q5_k 512 committed=@kernels/cuda/qgemm.ptx odd=@ptx/odd.ptx 2>&1 | tee -a $o/var.log
tar czf $OUT/run5.tgz -C /tmp o
ts "total"
