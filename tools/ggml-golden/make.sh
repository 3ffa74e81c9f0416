#!/usr/bin/env bash
# Regenerates fixtures/golden/ggml/<TYPE>[.imatrix].bin for the types named on the command line (all
# of TYPES when none) with ggml 0.25.3 itself: builds gen.c against the llama.cpp that
# ../shared/tools/llama-ref.sh provides (libggml-base from the llama-cpp-python 0.3.36 sdist).
# Usage: tools/ggml-golden/make.sh [TYPE...]. The outputs are committed; this tool is not built by cargo.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
REF=${REF:-$("$root/../shared/tools/llama-ref.sh")}
gold=$root/fixtures/golden/ggml
bin=$(mktemp -d)/gen
trap 'rm -rf "$(dirname "$bin")"' EXIT
cc -O2 -o "$bin" "$root/tools/ggml-golden/gen.c" -I"$REF/llama.cpp/ggml/include" \
   -L"$REF/bin" -lggml-base -Wl,-rpath,"$REF/bin"
read -r rows cols < <(python3 -c "import json;m=json.load(open('$gold/manifest.json'));print(m['rows'],m['cols'])")
# name:ggml type id:imatrix (no = only without, yes = both, only = only with: ggml refuses without)
TYPES="Q4_0:2:yes Q4_1:3:yes Q5_0:6:yes Q5_1:7:yes Q8_0:8:no Q2_K:10:yes Q3_K:11:yes Q4_K:12:yes
Q5_K:13:yes Q6_K:14:yes IQ2_XXS:16:only IQ2_XS:17:only IQ3_XXS:18:yes IQ1_S:19:only IQ4_NL:20:yes
IQ3_S:21:yes IQ2_S:22:yes IQ4_XS:23:yes IQ1_M:29:yes TQ1_0:34:no TQ2_0:35:no MXFP4:39:no
Q1_0:41:no Q2_0:42:no"
want=" $* "
for t in $TYPES; do
  IFS=: read -r name id im <<<"$t"
  if [ $# -gt 0 ] && [[ "$want" != *" $name "* ]]; then continue; fi
  if [ "$im" != only ]; then "$bin" "$id" "$rows" "$cols" "$gold/input.f32" - "$gold/$name.bin"; fi
  if [ "$im" != no ]; then "$bin" "$id" "$rows" "$cols" "$gold/input.f32" "$gold/imatrix.f32" "$gold/$name.imatrix.bin"; fi
  echo "$name ($id): done" >&2
done
