#!/usr/bin/env python3
"""Generate the bitsandbytes golden fixture used by `tests/bnb_reference.rs`.

Runs bitsandbytes' own CPU path (`bitsandbytes.functional.quantize_4bit`,
`dequantize_4bit`, `create_dynamic_map`, `get_4bit_type`) and writes a compact
little-endian binary file. See fixtures/bnb/README.md for the format and for
the exact versions used.

Usage: python scripts/bnb_reference.py [out_path]
"""
import os
import struct
import sys

os.environ.setdefault("ATEN_CPU_CAPABILITY", "avx2")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import bitsandbytes as bnb  # noqa: E402
import bitsandbytes.functional as F  # noqa: E402

MAGIC = b"BNBFIX01"
KINDS = {"nf4": 0, "fp4": 1}
BLOCK_SIZES = (32, 64, 128, 4096)

M64 = (1 << 64) - 1


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & M64
    return h


def splitmix_tensor(n: int, seed: int) -> np.ndarray:
    """Deterministic f32 values, reproduced bit for bit by the Rust test."""
    i = np.arange(n, dtype=np.uint64) + np.uint64(seed) * np.uint64(0x100000000)
    with np.errstate(over="ignore"):
        z = (i + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    mant = (z >> np.uint64(40)).astype(np.int64) - (1 << 23)  # in [-2^23, 2^23)
    shift = (np.arange(n, dtype=np.int64) >> 12) % 8  # scale changes every 4096 values
    v = mant.astype(np.float32) * np.float32(2.0**-23)
    v = v * np.exp2(-shift).astype(np.float32)
    return v.astype(np.float32)


def edge_tensor() -> np.ndarray:
    nf4 = F.get_4bit_type("nf4", device="cpu").numpy()
    fp4 = np.sort(F.get_4bit_type("fp4", device="cpu").numpy())
    mid_nf4 = ((nf4[:-1] + nf4[1:]) / np.float32(2)).astype(np.float32)
    mid_fp4 = ((fp4[:-1] + fp4[1:]) / np.float32(2)).astype(np.float32)
    parts = []
    parts.append(np.zeros(64, np.float32))  # all-zero block
    # absmax exactly 1: midpoints and their neighbours
    b = [1.0, -1.0]
    for m in mid_nf4:
        b += [m, np.nextafter(m, np.float32(2)), np.nextafter(m, np.float32(-2))]
    parts.append(np.array(b[:64], np.float32))
    parts.append(np.array((b[64:] + [0.0] * 64)[:64], np.float32))
    b = [1.0]
    for m in mid_fp4:
        b += [m, np.nextafter(m, np.float32(2)), np.nextafter(m, np.float32(-2))]
    b += [-0.0, 1e-30, -1e-30]
    parts.append(np.array((b + [0.5] * 64)[:64], np.float32))
    # midpoints times 3 (absmax 9, not a power of two)
    parts.append((np.concatenate([mid_nf4, mid_fp4, [-3.0], np.linspace(-3, 3, 64 - 31)]) * 3).astype(np.float32)[:64])
    # negative absmax, +-absmax
    parts.append(np.array([-7.5, 7.5] + [0.1 * k for k in range(62)], np.float32))
    # subnormals / tiny values (absmax below the 1e-38 clamp)
    parts.append(np.array([1e-40, -1e-40, 5e-41, 0.0] * 16, np.float32))
    parts.append(np.array([1e-38, 5e-39, -2e-39, 1e-39] * 16, np.float32))
    # odd tail: 37 values
    parts.append(np.linspace(-0.3, 0.2, 37).astype(np.float32))
    return np.concatenate(parts).astype(np.float32)


def division_probe(absmax: float, n: int) -> np.ndarray:
    """`absmax` followed by values whose code differs between `x / absmax` (bitsandbytes' ragged
    last block) and `x * (1 / absmax)` (its full blocks), zero padded to `n` values."""
    am = np.float32(absmax)
    recip = np.float32(1) / am
    picks = [am]
    for kind in ("nf4", "fp4"):
        code = np.sort(F.get_4bit_type(kind, device="cpu").numpy())
        bounds = ((code[:-1] + code[1:]) / np.float32(2)).astype(np.float32)
        for b in bounds:
            base = np.float32(b * am).view(np.int32)
            for d in range(-4, 5):
                x = np.array([base + d], np.int32).view(np.float32)[0]
                if np.sum(~(bounds >= x / am)) != np.sum(~(bounds >= x * recip)):
                    picks.append(x)
    return np.array((picks + [0.0] * n)[:n], np.float32)


def nan_inf_tensor() -> np.ndarray:
    x = np.linspace(-1, 1, 200).astype(np.float32)
    x[5] = np.nan
    x[70] = np.inf
    x[71] = -np.inf
    x[150] = -np.inf
    x[199] = np.nan
    return x


def f32s(a) -> bytes:
    a = np.ascontiguousarray(np.asarray(a, dtype=np.float32).reshape(-1))
    return struct.pack("<I", a.size) + a.tobytes()


def u8s(a) -> bytes:
    a = np.ascontiguousarray(np.asarray(a, dtype=np.uint8).reshape(-1))
    return struct.pack("<I", a.size) + a.tobytes()


def h(a) -> int:
    return fnv1a64(np.ascontiguousarray(a.detach().cpu().numpy()).tobytes())


def hz(a) -> int:
    """Hash of a dequantized f32 tensor with -0.0 folded into +0.0 and every NaN into 0xffffffff.

    bitsandbytes' CPU dequantization returns -0.0 for FP4 code 8 from its C++ kernel (even
    sizes) but +0.0 from its torch fallback (odd sizes, or AVX-512 with blocksize >= 2048).
    NaN payloads after NaN + NaN are not pinned down in Rust (nor in C), so they are folded.
    """
    v = (a.float() + 0.0).numpy().copy()
    v.view(np.uint32)[np.isnan(v)] = 0xFFFFFFFF
    return fnv1a64(v.tobytes())


def record(t: torch.Tensor, kind: str, bs: int) -> bytes:
    packed, st = F.quantize_4bit(t, blocksize=bs, compress_statistics=False, quant_type=kind)
    deq = F.dequantize_4bit(packed, st)
    packed2, st2 = F.quantize_4bit(t, blocksize=bs, compress_statistics=True, quant_type=kind)
    assert torch.equal(packed, packed2)
    deq2 = F.dequantize_4bit(packed2, st2)
    nested_deq = F.dequantize_blockwise(st2.absmax, st2.state2) + st2.offset
    out = struct.pack("<BI", KINDS[kind], bs)
    out += u8s(packed.numpy()) + f32s(st.absmax.numpy()) + struct.pack("<Q", hz(deq))
    out += u8s(st2.absmax.numpy()) + f32s(st2.state2.absmax.numpy())
    out += struct.pack("<f", st2.offset.item()) + f32s(nested_deq.numpy()) + struct.pack("<Q", hz(deq2))
    assert st2.state2.blocksize == 256
    return out


def big_record(n: int, seed: int, kind: str, bs: int, threads: int) -> bytes:
    torch.set_num_threads(threads)
    t = torch.from_numpy(splitmix_tensor(n, seed))
    packed, st = F.quantize_4bit(t, blocksize=bs, compress_statistics=True, quant_type=kind)
    _, plain = F.quantize_4bit(t, blocksize=bs, compress_statistics=False, quant_type=kind)
    torch.set_num_threads(1)
    return struct.pack("<IIBII", n, seed, KINDS[kind], bs, threads) + struct.pack(
        "<fQQQQ", st.offset.item(), h(packed), h(plain.absmax), h(st.absmax), h(st.state2.absmax)
    )


def main():
    out_path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(__file__), "..", "fixtures", "bnb", "golden.bin"
    )
    torch.set_num_threads(1)
    rng = np.random.default_rng(20240611)
    tensors = [
        ("normal4096", (rng.standard_normal(4096) * 0.02).astype(np.float32)),
        ("heavy1001", (rng.standard_t(2.0, 1001) * 0.05).astype(np.float32)),
        ("edge", edge_tensor()),
        ("nan_inf", nan_inf_tensor()),
        ("zeros100", np.zeros(100, np.float32)),
        ("single3", np.array([0.25, -1.5, 0.75], np.float32)),
        ("div3_32", division_probe(3.0, 32)),  # a full block at 32, the ragged tail otherwise
        ("div7_31", division_probe(7.0, 31)),
    ]
    buf = bytearray(MAGIC)
    buf += f32s(F.create_dynamic_map(signed=True).numpy())
    buf += f32s(F.get_4bit_type("nf4", device="cpu").numpy())
    buf += f32s(F.get_4bit_type("fp4", device="cpu").numpy())
    buf += struct.pack("<I", len(tensors))
    for name, arr in tensors:
        t = torch.from_numpy(arr)
        nb = name.encode()
        buf += struct.pack("<B", len(nb)) + nb + f32s(arr)
        recs = [record(t, k, bs) for k in KINDS for bs in BLOCK_SIZES]
        buf += struct.pack("<I", len(recs)) + b"".join(recs)
    bigs = [
        big_record(1 << 21, 7, "nf4", 64, 1),  # 32768 absmax values: two-pass threshold
        big_record(1 << 22, 7, "nf4", 64, 1),
        big_record(1 << 22, 7, "nf4", 64, 2),
        big_record(1 << 22, 7, "nf4", 64, 4),
        big_record((1 << 22) + 4095, 9, "fp4", 32, 3),
        big_record((1 << 22) + 4095, 9, "fp4", 32, 1),
    ]
    buf += struct.pack("<I", len(bigs)) + b"".join(bigs)
    # 16-bit inputs: bitsandbytes widens them to f32 (`A.float()`) before quantizing.
    halfs = []
    for code, dtype in ((0, torch.bfloat16), (1, torch.float16)):
        t = torch.from_numpy(tensors[0][1]).to(dtype)
        for kind in KINDS:
            packed, st = F.quantize_4bit(t, blocksize=64, compress_statistics=False, quant_type=kind)
            halfs.append(struct.pack("<BB", code, KINDS[kind]) + struct.pack("<QQ", h(packed), h(st.absmax)))
    buf += struct.pack("<I", len(halfs)) + b"".join(halfs)
    with open(out_path, "wb") as f:
        f.write(bytes(buf))
    print(
        f"wrote {out_path}: {len(buf)} bytes; torch {torch.__version__}, bitsandbytes {bnb.__version__}, "
        f"numpy {np.__version__}, cpu capability {torch.backends.cpu.get_cpu_capability()}"
    )


if __name__ == "__main__":
    main()
