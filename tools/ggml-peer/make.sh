#!/usr/bin/env bash
# Builds the llama.cpp peer of `qforge bench-gemm` (peer.c) against ggml 0.25.3 from the llama.cpp
# that ../shared/tools/llama-ref.sh provides (the llama-cpp-python 0.3.36 sdist), and prints the
# path of the binary. bench-gemm runs it when given --llamacpp-peer PATH or QFORGE_GGML_PEER=PATH.
# Usage: tools/ggml-peer/make.sh [OUT] (default target/ggml-peer/ggml-peer). Not built by cargo.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
REF=${REF:-$("$root/../shared/tools/llama-ref.sh")}
out=${1:-$root/target/ggml-peer/ggml-peer}
mkdir -p "$(dirname "$out")"
cc -O2 -std=c11 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -o "$out" "$root/tools/ggml-peer/peer.c" \
   -I"$REF/llama.cpp/ggml/include" -L"$REF/bin" -lggml -lggml-cpu -lggml-base -Wl,-rpath,"$REF/bin"
echo "$out"
