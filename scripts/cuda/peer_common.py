"""What the cuBLAS peers (torch_peer.py, dequant_peer.py) share: the shape and repetition
arguments, PyTorch's bf16 matmul setting and the back-to-back timing."""
import argparse

import torch


def parse(p: argparse.ArgumentParser):
    """Adds --n, --k, --m (comma-separated token counts) and --reps to p, parses the command
    line, sets PyTorch's bf16 matmul as the peers run it; returns the arguments and the device."""
    p.add_argument("--n", type=int, default=14336)
    p.add_argument("--k", type=int, default=4096)
    p.add_argument("--m", default="1,8,512")
    p.add_argument("--reps", type=int, default=40)
    a = p.parse_args()
    torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = True
    return a, torch.device("cuda")


def batched_us(step, copies: int, reps: int) -> float:
    """Per call, us: one pair of CUDA events around a pass of step(0) .. step(copies - 1) (as
    ggml_peer and bench-gemm's batched_ms), queued behind torch.cuda._sleep so the launches run
    back to back, after one untimed pass; the median over reps."""
    for c in range(copies):
        step(c)
    torch.cuda.synchronize()
    ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
    torch.cuda._sleep(int(2e6) * copies)  # ~1 ms a copy at 2 GHz: the launches below queue behind it
    for s, e in ev:
        s.record()
        for c in range(copies):
            step(c)
        e.record()
    torch.cuda.synchronize()
    t = sorted(s.elapsed_time(e) * 1e3 / copies for s, e in ev)
    return t[len(t) // 2]
