"""The table of scripts/cuda-bench.sh: type x m, qforge's CUDA kernels against llama.cpp's CUDA
backend and PyTorch bf16 (cuBLAS) on dequantized weights, from OUTDIR/{ours,llama,torch}.jsonl."""
import json, sys, pathlib

d = pathlib.Path(sys.argv[1])
def lines(name):
    """The JSON documents of a file, one after another (pretty-printed or one per line)."""
    p = d / name
    text, docs, dec, i = (p.read_text() if p.exists() else ""), [], json.JSONDecoder(), 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i == len(text):
            return docs
        doc, i = dec.raw_decode(text, i)
        docs.append(doc)

ours = lines("ours.jsonl")
llama = {(r["type"].lower(), r["m"]): r for r in lines("llama.jsonl")}
torch = {r["m"]: r for r in lines("torch.jsonl")}
if ours:
    r0 = ours[0]
    g = r0.get("gpu") or {}
    c = g.get("clocks") or {}
    print(f"GPU {g.get('name')} sm_{str(g.get('compute_capability','')).replace('.','')}, "
          f"clocks SM {c.get('sm_mhz')} MHz (max {c.get('max_sm_mhz')}), memory {c.get('mem_mhz')} MHz "
          f"(max {c.get('max_mem_mhz')}), driver {c.get('driver')}; n={r0['n']} k={r0['k']}, reps {r0['reps']}, "
          f"median; HBM read {r0['roofline']['bandwidth_gbs']:.0f} GB/s\n")
print("| type | m | ours us | ours GB/s (% HBM) | ours TFLOP/s | rel err | llama.cpp CUDA us | vs llama | bf16 cuBLAS us | vs cuBLAS |")
print("|---|---|---|---|---|---|---|---|---|---|")
for r in ours:
    for x in r["results"]:
        m, us = x["m"], x["median_ms"] * 1e3
        l = llama.get((r["weight_type"], m))
        t = torch.get(m)
        lu = f"{l['median_us']:.1f}" if l else "n/a"
        lv = f"{l['median_us'] / us:.2f}x" if l else "-"
        tu = f"{t['median_us']:.1f}" if t else "n/a"
        tv = f"{t['median_us'] / us:.2f}x" if t else "-"
        print(f"| {r['weight_type']} | {m} | {us:.1f} | {x['effective_gbs']:.0f} ({x['pct_bandwidth']:.0f}%) | "
              f"{x['gflops'] / 1e3:.1f} | {x['rel_err']:.1e} | {lu} | {lv} | {tu} | {tv} |")
