#!/usr/bin/env bash
# Fuzzes qforge's parsers for a bounded time each, then minimizes each corpus (issue #7).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 60 s, every target)
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). Runs on stable Rust through
# RUSTC_BOOTSTRAP=1. FUZZ_SANITIZER=none builds without AddressSanitizer (when its runtime
# is missing); the default is address. Each run starts from fuzz/corpus/TARGET plus seeds
# made from the repository's fixtures, stops at the first crash, and leaves a reproducer
# in fuzz/artifacts/TARGET/. Allocations over 256 MiB (or 512 MiB resident) and inputs
# taking over 10 s are findings. A summary table is printed at the end; the exit status
# is 1 when any target found something. docs/reliability.md explains what to do next.
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-60}"
shift || true
all=(gguf_header safetensors_shard safetensors_index kv_profile imatrix_legacy qnat_index tokenizer_json tokenizer_model hf_config model_card)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")
san="${FUZZ_SANITIZER:-address}"
export RUSTC_BOOTSTRAP=1
limits=(-rss_limit_mb=512 -malloc_limit_mb=256 -timeout=10)

command -v cargo-fuzz >/dev/null || {
  echo "cargo-fuzz is missing: cargo install cargo-fuzz" >&2
  exit 2
}

echo "== build (sanitizer: $san)"
cargo fuzz build -s "$san"

echo "== seeds from fixtures"
seeds="$(mktemp -d)"
trap 'rm -rf "$seeds"' EXIT
mkdir -p "$seeds"/{gguf_header,safetensors_shard,safetensors_index,kv_profile,imatrix_legacy,qnat_index,tokenizer_json,tokenizer_model,hf_config,model_card}
# Large fixtures are cut to their first 4 KiB: the header is what the parsers read.
for f in fixtures/*.gguf; do head -c 4096 "$f" >"$seeds/gguf_header/$(basename "$f")"; done
for f in fixtures/*.safetensors fixtures/sharded/*.safetensors; do
  head -c 4096 "$f" >"$seeds/safetensors_shard/$(basename "$f")"
done
cp fixtures/sharded/*.index.json "$seeds/safetensors_index/"
cp fixtures/hf-tiny-llama/config.json "$seeds/hf_config/"
cp fixtures/hf-tiny-llama/README.md "$seeds/model_card/"
# tokenizer_json: a leading flag byte (which companion files also get the input), then JSON.
for f in fixtures/tokenizers/*.json; do
  for flag in 0 7; do { printf "\\$flag"; cat "$f"; } >"$seeds/tokenizer_json/$flag-$(basename "$f")"; done
done
cp fixtures/tokenizers/*.model "$seeds/tokenizer_model/"
# QFORGE_BIN: an already built qforge binary; otherwise `cargo run` builds one.
if [ -n "${QFORGE_BIN:-}" ]; then qforge=("$QFORGE_BIN"); else qforge=(cargo run --quiet --); fi
"${qforge[@]}" kv-profile build \
  --shape layers=1,kv_heads=1,query_heads=2,head_dim=64,tokens=64 -o "$seeds/kv_profile/x.json"
# That one is ~10 KiB, past -max_len (inputs are cut to 4 KiB to keep the committed
# corpus small); a 16-codeword profile fits whole.
"${qforge[@]}" kv-profile build --codebook-size 16 \
  --shape layers=1,kv_heads=1,query_heads=2,head_dim=64,tokens=64 -o "$seeds/kv_profile/n16.json"
# No fixture is a small QNAT file: that corpus starts from the committed seeds
# (docs/reliability.md says how they were made).

mkdir -p fuzz/logs
summary=()
status=0
for t in "${targets[@]}"; do
  echo "== $t: ${secs} s"
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  before=$(find "fuzz/artifacts/$t" -type f | wc -l)
  log="fuzz/logs/$t.log"
  rc=0
  cargo fuzz run -s "$san" "$t" "fuzz/corpus/$t" "$seeds/$t" -- \
    -max_total_time="$secs" -max_len=4096 -print_final_stats=1 "${limits[@]}" \
    >"$log" 2>&1 || rc=$?
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  found=$(($(find "fuzz/artifacts/$t" -type f | wc -l) - before))
  if [ "$rc" -ne 0 ] || [ "$found" -gt 0 ]; then
    status=1
    echo "   FOUND (exit $rc): see $log and fuzz/artifacts/$t/"
    grep -E '^(==[0-9]+==ERROR|SUMMARY|thread .* panicked)' "$log" | head -5 || true
  fi
  summary+=("$(printf '| %-18s | %12s | %8s | %3s |' "$t" "$execs" "$rate" "$found")")
  echo "== $t: minimize corpus"
  # -set_cover_merge keeps every feature with fewer, smaller files than the greedy
  # -merge=1 that cmin uses by itself (about 20% fewer bytes here).
  cargo fuzz cmin -s "$san" "$t" "fuzz/corpus/$t" -- "${limits[@]}" -max_len=4096 -set_cover_merge=1 \
    >"fuzz/logs/$t.cmin.log" 2>&1 || echo "   cmin failed: fuzz/logs/$t.cmin.log"
done

echo
echo "| target             |        execs |   exec/s | new |"
echo "|--------------------|--------------|----------|-----|"
printf '%s\n' "${summary[@]}"
exit "$status"
