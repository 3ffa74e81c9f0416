"""The "dequant + cuBLAS" pipeline next to bench-gemm --device cuda (as bitsandbytes' and
vLLM-AWQ's prefill run): qforge's dequant_<type> kernel (qgemm.cu: the GEMM's decoders, one
thread a sub-block) turns the stored blocks into bf16 rows in GPU memory, then PyTorch's bf16
matmul (cuBLAS) computes y = x W^T. Timed as torch_peer.py times cuBLAS alone: stored-block
copies rotated past the L2 (random bytes: the decoders have no data-dependent branches), one
pair of CUDA events around a pass over the copies, per call, median of --reps. One JSON line
per type and m: dequant_us (the dequant alone), pipeline_us (dequant then matmul), and one
per type with m = 0 for the dequant alone.
Usage: dequant_peer.py PTX [--types ...] (on the GPU machine: CuPy and PyTorch)."""
import argparse, json, math
import cupy as cp
import torch

import peer_common

# Stored bytes a row of k values: (block bytes, values a block); NF4 has an f32 absmax per 64 apart.
BLOCKS = {"q4_k": (144, 256), "q5_k": (176, 256), "q6_k": (210, 256), "q8_0": (34, 32), "q4_0": (18, 32),
          "iq4_xs": (136, 256), "nf4": (32, 64)}
p = argparse.ArgumentParser()
p.add_argument("ptx")
p.add_argument("--types", default=",".join(BLOCKS))
a, dev = peer_common.parse(p)
mod = cp.RawModule(path=a.ptx)
stream = torch.cuda.current_stream()
g = torch.Generator(device=dev).manual_seed(1)
wb = torch.empty(a.n, a.k, device=dev, dtype=torch.bfloat16)
absmax = torch.rand(a.n * (a.k // 64), device=dev, generator=g)


for ty in a.types.split(","):
    bb, bv = BLOCKS[ty]
    row_bytes = a.k // bv * bb
    copies = max(4, math.ceil((256 << 20) / (a.n * row_bytes)))
    ws = [torch.randint(0, 256, (a.n * row_bytes,), device=dev, dtype=torch.uint8, generator=g)
          for _ in range(copies)]
    fn = mod.get_function(f"dequant_{ty}")
    blocks = (a.n * (a.k // 32) + 255) // 256

    def dequant(c):
        with cp.cuda.ExternalStream(stream.cuda_stream):
            fn((blocks,), (256,), (cp.uint64(ws[c].data_ptr()), cp.uint64(absmax.data_ptr()),
                                   cp.uint64(wb.data_ptr()), cp.int32(a.n), cp.int32(a.k), cp.int32(row_bytes)))

    dq = peer_common.batched_us(dequant, copies, a.reps)
    print(json.dumps({"peer": "dequant-cublas", "type": ty, "m": 0, "dequant_us": dq, "copies": copies,
                      "gbs": (a.n * row_bytes + a.n * a.k * 2) / dq / 1e3}), flush=True)
    for m in [int(v) for v in a.m.split(",")]:
        x = torch.randn(m, a.k, device=dev, dtype=torch.bfloat16, generator=g)

        def pipeline(c):
            dequant(c)
            torch.matmul(x, wb.t())

        us = peer_common.batched_us(pipeline, copies, a.reps)
        print(json.dumps({"peer": "dequant-cublas", "type": ty, "m": m, "n": a.n, "k": a.k, "dequant_us": dq,
                          "pipeline_us": us, "tflops": 2 * m * a.n * a.k / us / 1e6}), flush=True)
    del ws
