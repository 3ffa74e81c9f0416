#!/usr/bin/env bash
# Prints the sha256 of a fixed set of qforge outputs made from the shipped fixtures, one
# line per output. A refactor that must not change any output byte compares this list
# before and after:  scripts/output_digests.sh > before.txt; ...; diff before.txt after.txt
# Usage: scripts/output_digests.sh [QFORGE_BINARY]   (default: target/release/qforge)
set -euo pipefail
cd "$(dirname "$0")/.."
Q=$(realpath "${1:-target/release/qforge}")
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
run() { "$Q" "$@" >/dev/null 2>&1 || { echo "FAILED: $*" >&2; exit 1; }; }
for ty in Q4_K_M Q5_K_S Q3_K_L Q2_K Q6_K Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 IQ4_NL F16 BF16; do
  run quantize fixtures/tiny-llama.gguf -o "$T/gguf-$ty.gguf" -t "$ty" --threads 2
  run quantize fixtures/tiny-llama.safetensors -o "$T/st-$ty.gguf" -t "$ty" --threads 2
done
run quantize fixtures/tiny-llama.gguf -o "$T/gguf-pure-q4k.gguf" -t Q4_K_M --pure --output-tensor-type q8_0
run quantize fixtures/sharded -o "$T/sharded-bnb" --format bnb-safetensors
run quantize fixtures/tiny-llama.safetensors -o "$T/bnb" --format bnb-safetensors --double-quant
run quantize fixtures/tiny-llama.safetensors -o "$T/bnb-fp4" --format bnb-safetensors -t FP4
run quantize fixtures/tiny-llama.safetensors -o "$T/q.qnat" --format qnat -t nf4
for s in nf4 fp4 q4_k q5_k q6_k q8_0 f16 bf16 f32; do
  run export-native fixtures/tiny-llama.safetensors -o "$T/en-$s.qnat" --scheme "$s" --double-quant
done
run export-native fixtures/tiny-llama.gguf -o "$T/en-gguf.qnat"
run export-native "$T/en-nf4.qnat" --dequantize -o "$T/deq.safetensors"
run kv-profile build --shape layers=2,kv_heads=2,query_heads=4,head_dim=64,tokens=512 --bits 8 -o "$T/kv.json"
run kv-profile verify "$T/kv.json" --compare -o "$T/receipt.json"
for f in fixtures/tiny-llama.gguf fixtures/mixed-types.gguf fixtures/tiny-llama.safetensors fixtures/sharded; do
  "$Q" inspect --json "$f" > "$T/inspect-$(basename "$f").json"
done
(cd "$T" && "$Q" inspect --json en-nf4.qnat > inspect-en-nf4.qnat.json)   # a relative path: the JSON names it
cd "$T" && find . -type f | sort | xargs sha256sum
