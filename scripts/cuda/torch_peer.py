"""Dequant + cuBLAS peer of bench-gemm --device cuda: PyTorch bf16 matmul y = x W^T on weights
already dequantized to bf16 (the dequantization is not timed; the time is the same for every
quantized type). Weights rotated past the L2 (copies = max(4, ceil(256 MiB / bytes))), CUDA
events around each call (median_us) and around a pass over the copies (batched_us, per call),
queued behind torch.cuda._sleep so launches run back to back; median of --reps. One JSON line
per m."""
import argparse, json, math
import torch

import peer_common

a, dev = peer_common.parse(argparse.ArgumentParser())
wbytes = a.n * a.k * 2
copies = max(4, math.ceil((256 << 20) / wbytes))
g = torch.Generator(device=dev).manual_seed(1)
ws = [torch.randn(a.n, a.k, device=dev, dtype=torch.bfloat16, generator=g) * 0.02 for _ in range(copies)]
for m in [int(v) for v in a.m.split(",")]:
    x = torch.randn(m, a.k, device=dev, dtype=torch.bfloat16, generator=g)
    for w in ws:
        y = x @ w.t()
    torch.cuda.synchronize()
    ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(a.reps)]
    torch.cuda._sleep(int(2e6))  # ~1 ms at 2 GHz: the launches below queue behind it
    for i, (s, e) in enumerate(ev):
        s.record()
        y = x @ ws[i % copies].t()
        e.record()
    torch.cuda.synchronize()
    t = sorted(s.elapsed_time(e) * 1e3 for s, e in ev)  # us
    med = t[len(t) // 2]
    # Back to back: one pair of events around a pass over the copies, per call.
    bmed = peer_common.batched_us(lambda c: x @ ws[c].t(), copies, a.reps)
    print(json.dumps({"peer": "torch-bf16-cublas", "m": m, "n": a.n, "k": a.k, "copies": copies,
                      "weight_bytes": wbytes, "median_us": med, "min_us": t[0], "batched_us": bmed,
                      "gbs": (wbytes + 2 * m * (a.k + a.n)) / bmed / 1e3,
                      "tflops": 2 * m * a.n * a.k / bmed / 1e6}), flush=True)
