#!/usr/bin/env bash
# Builds the qlora-rs test-file generator against each qlora-rs version and writes
# fixtures/qlora-rs/v<version>/; with --check, writes to a temporary folder and compares
# it byte for byte with the committed fixtures (exit 1 on a difference).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
check=0; [[ ${1:-} == --check ]] && check=1
export CARGO_TARGET_DIR=${QLORA_GEN_TARGET:-$root/target/qlora-gen}
status=0
for v in 1.0.5 1.3.0; do
    out=$root/fixtures/qlora-rs/v$v
    [[ $check == 1 ]] && out=$(mktemp -d)
    cargo run -q --ignore-rust-version --manifest-path "$root/tools/qlora-gen/v$v/Cargo.toml" --locked -- "$out"
    if [[ $check == 1 ]]; then
        diff -r "$out" "$root/fixtures/qlora-rs/v$v" --exclude=README.md || status=1
        rm -rf "$out"
    fi
done
exit $status
