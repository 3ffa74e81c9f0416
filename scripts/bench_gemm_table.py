"""Medians over rounds of scripts/bench_gemm_table.sh: python3 scripts/bench_gemm_table.py DIR..."""
import json
import os
import statistics as st
import sys

TYPES = ["q4_k", "q5_k", "q6_k", "q8_0", "q4_0", "iq4_xs", "nf4"]
BACKENDS = ["fused", "llamacpp-repack", "llamacpp-plain", "candle"]


def main(runs):
    print(f"{len(runs)} rounds; cells: m=1 ms / m=8 GFLOP/s / m=512 GFLOP/s (medians over rounds)")
    print("| type | qforge fused | llama.cpp repack | ggml plain | candle | m=1 % bw (paired) | m=512 % int8 | vs llama.cpp m=1/8/512 | vs candle |")
    print("|---|---|---|---|---|---|---|---|---|")
    for ty in TYPES:
        docs = [json.load(open(p)) for p in (os.path.join(r, ty + ".json") for r in runs) if os.path.exists(p)]
        if not docs:
            continue

        def values(b, m, f):
            return [x[f] for d in docs for x in d["results"] if x["backend"] == b and x["m"] == m and x.get(f) is not None]

        def med(b, m, f):
            v = values(b, m, f)
            return st.median(v) if v else None

        def cell(b):
            out = []
            for m in (1, 8, 512):
                v = med(b, m, "median_ms" if m == 1 else "gflops")
                out.append("-" if v is None else (f"{v:.2f}" if m == 1 else f"{v:.0f}"))
            return " / ".join(out)

        fmt = lambda v, s="": "-" if v is None else f"{v:.2f}{s}"
        bw, paired = med("fused", 1, "pct_bandwidth"), med("fused", 1, "pct_paired_bandwidth")
        print(f"| {ty} | {cell('fused')} | {cell('llamacpp-repack')} | {cell('llamacpp-plain')} | {cell('candle')} "
              f"| {bw:.0f}% ({fmt(paired)}%) | {fmt(med('fused', 512, 'pct_int8_peak'))}% "
              f"| {' / '.join(fmt(med('fused', m, 'speedup_vs_llamacpp'), 'x') for m in (1, 8, 512))} "
              f"| {' / '.join(fmt(med('fused', m, 'speedup_vs_candle'), 'x') for m in (1, 8, 512))} |")
        for f in ("pct_bandwidth", "pct_paired_bandwidth", "speedup_vs_llamacpp"):
            v = values("fused", 1, f)
            if v:
                print(f"|  | m=1 {f} per round: {', '.join(f'{x:.2f}' for x in v)} |")


if __name__ == "__main__":
    main(sys.argv[1:])
