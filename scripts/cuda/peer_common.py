"""What the cuBLAS peers (torch_peer.py, dequant_peer.py) share: the shape and repetition
arguments and PyTorch's bf16 matmul setting."""
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
