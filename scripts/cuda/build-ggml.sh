#!/usr/bin/env bash
# Builds ggml with its CUDA backend for sm_90 from the llama.cpp sources copied into .peer/ggml
# (ignored; carried to the GPU machine), then scripts/cuda/ggml_peer.cpp against it, into
# .peer/build/ggml_peer. Copy the sources first, here:
#   L=~/.cache/llama-ref/llama.cpp/ggml; mkdir -p .peer/ggml/src
#   cp -r $L/CMakeLists.txt $L/cmake $L/include .peer/ggml/ && cp $L/src/*.* .peer/ggml/src/
#   cp -r $L/src/ggml-cpu $L/src/ggml-cuda .peer/ggml/src/ && touch .peer/ggml/ggml.pc.in
set -euo pipefail
cd "$(dirname "$0")/../.."
gen=(); command -v ninja >/dev/null && gen=(-G Ninja)
cmake -S .peer/ggml -B .peer/build "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_CUDA_FA=OFF -DGGML_CUDA_NCCL=OFF -DGGML_NATIVE=OFF \
  -DGGML_BUILD_TESTS=OFF -DGGML_BUILD_EXAMPLES=OFF >/dev/null
cmake --build .peer/build -j "$(nproc)" >/dev/null
lib=$(dirname "$(find .peer/build -name 'libggml-cuda.so' | head -1)")
g++ -O2 -std=c++17 scripts/cuda/ggml_peer.cpp -I.peer/ggml/include -L"$lib" -L.peer/build/src \
  $(find .peer/build -name 'libggml*.so' -printf '-L%h ' | tr ' ' '\n' | sort -u | tr '\n' ' ') \
  -lggml -lggml-base -lggml-cuda -Wl,-rpath,"$PWD/$lib" \
  $(find .peer/build -name 'libggml*.so' -printf '-Wl,-rpath,'"$PWD"'/%h ' ) -o .peer/build/ggml_peer
