#!/usr/bin/env python3
"""Writes a large F16 GGUF in llama.cpp's llama layout with random weights, streaming (the
file is never in memory: at most one 64 MiB chunk), for issue #14's scale test.

Usage: scripts/make_big_gguf.py OUT.gguf [--size-gb 30] [--n-embd 5120] [--n-ff 13824]
                                [--n-head 40] [--n-head-kv 40] [--vocab 32000] [--seed 0]

The shape is Llama-2-13B's (token_embd, 40 heads, SwiGLU FFN) with as many layers as make
the file about --size-gb GB (10^9 bytes). 2-D weights are F16, norms F32 (as
convert_hf_to_gguf.py --outtype f16 writes them). Values are N(0, 0.02) drawn once into a
pool of 4 Mi values, each chunk a slice of it at a random offset (drawing fresh normals for
30 GB would take longer than the quantization being measured). Python 3 only (no numpy).

Then, e.g.:
  /usr/bin/time -v target/release/qforge quantize OUT.gguf -o out-Q4_K_M.gguf -t Q4_K_M --threads 1
"""
import argparse
import math
import random
import struct
import sys

GGUF_MAGIC = 0x46554747  # "GGUF"
GGUF_VERSION = 3
ALIGN = 32
T_U32, T_F32, T_STRING = 4, 6, 8
GGML_F32, GGML_F16 = 0, 1
POOL = 4 << 20  # values
CHUNK = 2 << 20  # values per write


def gguf_str(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def kv(key, ty, value):
    out = gguf_str(key) + struct.pack("<I", ty)
    if ty == T_U32:
        return out + struct.pack("<I", value)
    if ty == T_F32:
        return out + struct.pack("<f", value)
    if ty == T_STRING:
        return out + gguf_str(value)
    raise ValueError(ty)


def tensors(a, n_layer):
    """(name, ne, ggml type) in llama.cpp's order; ne[0] is the row length."""
    e, ff, kv_dim = a.n_embd, a.n_ff, a.n_embd // a.n_head * a.n_head_kv
    yield "token_embd.weight", (e, a.vocab), GGML_F16
    for i in range(n_layer):
        b = f"blk.{i}."
        yield b + "attn_norm.weight", (e,), GGML_F32
        yield b + "attn_q.weight", (e, e), GGML_F16
        yield b + "attn_k.weight", (e, kv_dim), GGML_F16
        yield b + "attn_v.weight", (e, kv_dim), GGML_F16
        yield b + "attn_output.weight", (e, e), GGML_F16
        yield b + "ffn_norm.weight", (e,), GGML_F32
        yield b + "ffn_gate.weight", (e, ff), GGML_F16
        yield b + "ffn_up.weight", (e, ff), GGML_F16
        yield b + "ffn_down.weight", (ff, e), GGML_F16
    yield "output_norm.weight", (e,), GGML_F32
    yield "output.weight", (e, a.vocab), GGML_F16


def nbytes(ne, ty):
    return math.prod(ne) * (4 if ty == GGML_F32 else 2)


def align(n):
    return (n + ALIGN - 1) // ALIGN * ALIGN


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--size-gb", type=float, default=30.0)
    p.add_argument("--n-embd", type=int, default=5120)
    p.add_argument("--n-ff", type=int, default=13824)
    p.add_argument("--n-head", type=int, default=40)
    p.add_argument("--n-head-kv", type=int, default=40)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()

    fixed = sum(nbytes(ne, ty) for name, ne, ty in tensors(a, 0))
    per_layer = sum(nbytes(ne, ty) for name, ne, ty in tensors(a, 1)) - fixed
    n_layer = max(1, round((a.size_gb * 1e9 - fixed) / per_layer))
    specs = list(tensors(a, n_layer))

    meta = [
        kv("general.architecture", T_STRING, "llama"),
        kv("general.name", T_STRING, f"random llama {n_layer} layers"),
        kv("llama.block_count", T_U32, n_layer),
        kv("llama.context_length", T_U32, 4096),
        kv("llama.embedding_length", T_U32, a.n_embd),
        kv("llama.feed_forward_length", T_U32, a.n_ff),
        kv("llama.attention.head_count", T_U32, a.n_head),
        kv("llama.attention.head_count_kv", T_U32, a.n_head_kv),
        kv("llama.rope.dimension_count", T_U32, a.n_embd // a.n_head),
        kv("llama.attention.layer_norm_rms_epsilon", T_F32, 1e-5),
        kv("general.file_type", T_U32, 1),  # MOSTLY_F16
    ]
    header = struct.pack("<IIQQ", GGUF_MAGIC, GGUF_VERSION, len(specs), len(meta)) + b"".join(meta)
    offset = 0
    for name, ne, ty in specs:
        header += gguf_str(name) + struct.pack("<I", len(ne))
        header += struct.pack(f"<{len(ne)}Q", *ne) + struct.pack("<IQ", ty, offset)
        offset = align(offset + nbytes(ne, ty))
    total = align(len(header)) + offset
    print(f"{a.out}: {n_layer} layers, {len(specs)} tensors, {total / 1e9:.2f} GB", file=sys.stderr)

    rng = random.Random(a.seed)
    values = [rng.gauss(0.0, 0.02) for _ in range(POOL)]
    pool = struct.pack(f"<{POOL}e", *values)  # f16 bytes
    norm = struct.pack(f"<{a.n_embd}f", *(1.0 + v for v in values[: a.n_embd]))
    with open(a.out, "wb") as f:
        f.write(header + b"\0" * (align(len(header)) - len(header)))
        for name, ne, ty in specs:
            n = math.prod(ne)
            if ty == GGML_F32:  # norms (n_embd values): around 1, as trained models have them
                f.write(norm)
            else:
                left = n
                while left:
                    k = min(left, CHUNK)
                    o = rng.randrange(0, POOL - k + 1)
                    f.write(pool[2 * o : 2 * (o + k)])
                    left -= k
            b = nbytes(ne, ty)
            f.write(b"\0" * (align(b) - b))
        assert f.tell() == total, (f.tell(), total)


if __name__ == "__main__":
    main()
