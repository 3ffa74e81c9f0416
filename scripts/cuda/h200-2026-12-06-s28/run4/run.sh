#!/usr/bin/env bash
# s28 run 4 (#18): NF4's absmax staged with the codes (nf4s: the window's four absmax values
# copied by the producers' cp.async with the row's codes, read from shared memory, instead of
# a global load in every unit's decode), against the committed PTX: the GPU reference test
# with it, NF4 at m=9,64,512 and the other types at m=512 (their code is unchanged). Staged as
# run 1 (.peer/wt: kernels/cuda/qgemm.ptx.xz the committed PTX, ptx/nf4s.ptx.xz); carry .peer.
set -u
source "$(dirname "$0")/../start.sh"
ts "GPU reference test with nf4s"
reftest $PWD/ptx/nf4s.ptx $o/tests.log
ts "nf4 m=9,64,512, then the rest at m=512"
timeout 100 bash scripts/cuda/variants.sh $o/var nf4 9,64,512 committed=@kernels/cuda/qgemm.ptx nf4s=@ptx/nf4s.ptx \
  committed2=@kernels/cuda/qgemm.ptx nf4s2=@ptx/nf4s.ptx 2>&1 | tee $o/var.log
timeout 150 bash scripts/cuda/variants.sh $o/var "q4_k iq4_xs q8_0" 512 committed=@kernels/cuda/qgemm.ptx \
  nf4s=@ptx/nf4s.ptx 2>&1 | tee -a $o/var.log
tar czf $OUT/run4.tgz -C /tmp o
ts "total"
