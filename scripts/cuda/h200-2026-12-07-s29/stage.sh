#!/usr/bin/env bash
# Stages this worktree for a device run: the run tool sends the main checkout, not a worktree,
# so the tree's tracked files go to MAIN/.peer/wt (an ignored folder there) with the release
# binary and the library's test binary, stripped and xz-compressed (gpu-bin/*.xz, which
# start.sh unpacks there). Then: run with carry [".peer"] and the command
# `bash .peer/wt/scripts/cuda/h200-2026-12-07-s29/run1/run.sh`; afterwards `rm -rf MAIN/.peer`.
# Usage: scripts/cuda/h200-2026-12-07-s29/stage.sh MAIN   (builds with one job on core 1)
set -euo pipefail
main=$(cd "$1" && pwd)
cd "$(dirname "$0")/../../.."
export CARGO_BUILD_JOBS=1
taskset -c 1 cargo build --release
tests=$(taskset -c 1 cargo test --release --lib --no-run --message-format=json |
  python3 -c 'import json, sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["kind"] == ["lib"] and m.get("executable"):
        print(m["executable"])' | tail -1)
[ -x "$tests" ] || { echo "error: no library test binary" >&2; exit 1; }
dst=$main/.peer/wt
rm -rf "$dst"
mkdir -p "$dst/gpu-bin"
git ls-files -z | xargs -0 cp --parents -t "$dst"
strip -o "$dst/gpu-bin/qforge" target/release/qforge
strip -o "$dst/gpu-bin/qforge-tests" "$tests"
xz -T1 -6 "$dst/gpu-bin/qforge" "$dst/gpu-bin/qforge-tests"
du -sh "$dst"
