"""The table of scripts/cuda-bench.sh: type x m, qforge's CUDA kernels against llama.cpp's CUDA
backend, PyTorch bf16 (cuBLAS) on pre-dequantized weights and the dequant + cuBLAS pipeline
(our dequant kernel, then cuBLAS), from OUTDIR/{ours,llama,torch,dequant}.jsonl."""
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
deq = {(r["type"], r["m"]): r for r in lines("dequant.jsonl")}
if ours:
    r0 = ours[0]
    g = r0.get("gpu") or {}
    c = g.get("clocks") or {}
    print(f"GPU {g.get('name')} sm_{str(g.get('compute_capability','')).replace('.','')}, "
          f"clocks SM {c.get('sm_mhz')} MHz (max {c.get('max_sm_mhz')}), memory {c.get('mem_mhz')} MHz "
          f"(max {c.get('max_mem_mhz')}), driver {c.get('driver')}; n={r0['n']} k={r0['k']}, reps {r0['reps']}, "
          f"median; HBM read {r0['roofline']['bandwidth_gbs']:.0f} GB/s\n")
# "b2b": calls back to back, one pair of events around a pass over the weight copies, per call
# (how llama.cpp's peer is timed); "pdl": the same with programmatic dependent launch (each
# call's kernels may start while the previous call drains); "per pair": one pair of events
# around each call. The comparisons use plain b2b.
print("| type | m | ours us b2b | % HBM (b2b) | ours us b2b pdl | % HBM (pdl) | ours us per pair | TFLOP/s (b2b) | rel err | llama.cpp CUDA us | vs llama | bf16 cuBLAS us b2b | vs cuBLAS | dequant + cuBLAS us | vs it |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for r in ours:
    for x in r["results"]:
        m, per = x["m"], x["median_ms"] * 1e3
        us = x["batched_ms"] * 1e3 if x.get("batched_ms") is not None else per
        pct = x.get("batched_pct_bandwidth") or x["pct_bandwidth"]
        pdl = f"{x['batched_pdl_ms'] * 1e3:.1f}" if x.get("batched_pdl_ms") is not None else "n/a"
        ppct = f"{x['batched_pdl_pct_bandwidth']:.0f}%" if x.get("batched_pdl_pct_bandwidth") is not None else "n/a"
        l = llama.get((r["weight_type"], m))
        t = torch.get(m)
        tus = (t.get("batched_us") or t["median_us"]) if t else None
        lu = f"{l['median_us']:.1f}" if l else "n/a"
        lv = f"{l['median_us'] / us:.2f}x" if l else "-"
        tu = f"{tus:.1f}" if t else "n/a"
        tv = f"{tus / us:.2f}x" if t else "-"
        q = deq.get((r["weight_type"], m))
        qu = f"{q['pipeline_us']:.1f}" if q else "n/a"
        qv = f"{q['pipeline_us'] / us:.2f}x" if q else "-"
        print(f"| {r['weight_type']} | {m} | {us:.1f} | {pct:.0f}% | {pdl} | {ppct} | {per:.1f} | "
              f"{2 * m * r['n'] * r['k'] / us / 1e6:.1f} | {x['rel_err']:.1e} | {lu} | {lv} | {tu} | {tv} | {qu} | {qv} |")

# m=1 against a plain read of the same bytes timed the same way (small_read.py: events around
# each launch, copies rotated past the L2), interpolated linearly between the sizes it read.
best = {}
for r in lines("small_read.jsonl"):
    if r.get("what") == "read":
        best[r["mb"]] = min(best.get(r["mb"], 1e30), r["median_us"])
    elif r.get("what") == "empty launch between events":
        print(f"\nAn empty launch between two events: {r['median_us']:.2f} us.")
    elif r.get("what") in ("empty launch back to back", "read back to back", "read back to back pdl") and "mean_us" in r:
        size = f" of {r['mb']:.0f} MB" if "mb" in r else ""
        print(f"\n{r['what'].capitalize()}{size} (one pair of events around {40} launches): "
              f"{r['mean_us']:.2f} us a launch.")
pts = sorted(best.items())
def read_us(mb):
    if len(pts) < 2:
        return None
    lo = max([p for p in pts if p[0] <= mb] or [pts[0]], key=lambda p: p[0])
    hi = min([p for p in pts if p[0] > mb and p[0] != lo[0]] or [pts[-1]], key=lambda p: p[0])
    if hi[0] == lo[0]:
        return lo[1]
    return lo[1] + (hi[1] - lo[1]) * (mb - lo[0]) / (hi[0] - lo[0])
if pts:
    print("\n| type | m=1 MB read | ours us | plain read of those bytes us | ours / read |")
    print("|---|---|---|---|---|")
    for r in ours:
        for x in r["results"]:
            if x["m"] == 1:
                us = x["median_ms"] * 1e3
                mb = x["effective_gbs"] * us / 1e3
                t = read_us(mb)
                if t:
                    print(f"| {r['weight_type']} | {mb:.1f} | {us:.1f} | {t:.1f} | {t / us * 100:.0f}% |")
for (ty, m), q in sorted(deq.items()):
    if m == 0:
        print(f"\nDequant {ty} to bf16 alone: {q['dequant_us']:.1f} us ({q['gbs']:.0f} GB/s read + written).")
