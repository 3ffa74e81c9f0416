#!/usr/bin/env bash
# The #17 table: `qforge bench-gemm` for every fused type at m = 1, 8, 512 with every peer, ROUNDS times
# (this machine's read bandwidth drifts between runs; the medians over rounds are what to quote).
#   scripts/bench_gemm_table.sh OUT [ROUNDS=5] [REPS=11] [THREADS=2]
# Needs the release binary and the ggml peer (QFORGE_GGML_PEER, tools/ggml-peer/make.sh); then
#   python3 scripts/bench_gemm_table.py OUT/round-*
set -euo pipefail
out=$1 rounds=${2:-5} reps=${3:-11} threads=${4:-2}
bin=${QFORGE_BIN:-target/release/qforge}
for r in $(seq "$rounds"); do
  mkdir -p "$out/round-$r"
  for ty in q4_k q5_k q6_k q8_0 q4_0 iq4_xs nf4; do
    "$bin" bench-gemm --type "$ty" --m 1,8,512 --threads "$threads" --reps "$reps" \
      --backends fused,candle,llamacpp --json > "$out/round-$r/$ty.json"
  done
done
