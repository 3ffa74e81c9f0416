#!/usr/bin/env python3
"""The floor for one small memory-bound call, timed as bench-gemm times its calls: qgemm.cu's
read_bw kernel over buffers of the size one GEMV call reads (copies rotated past the L2),
CUDA events around each launch, all queued behind the spin kernel; and an empty launch
between events (what the events and one launch cost); and the same launches back to back
between one pair of events (per launch), in plain stream order and chained with programmatic
dependent launch (cuLaunchKernelEx through ctypes, as bench-gemm's batched_pdl_ms: read_bw
issues its loads at once and waits for the previous read only before its final write).
Prints one JSON line per measurement.
Usage: small_read.py PTX [MB ...] (on the GPU machine; CuPy)."""
import ctypes
import json
import sys

import cupy as cp

ptx = sys.argv[1]
sizes = [float(a) for a in sys.argv[2:]] or [33.0]
mod = cp.RawModule(path=ptx)
read_bw, spin = mod.get_function("read_bw"), mod.get_function("spin")
sms = cp.cuda.Device().attributes["MultiProcessorCount"]
cp.cuda.Stream(non_blocking=True).use()  # a stream of its own (programmatic launches chain on it)
sink = cp.zeros(1, dtype=cp.uint32)
reps = 40


def timed(launch):
    ev = [(cp.cuda.Event(), cp.cuda.Event()) for _ in range(reps)]
    spin((1,), (1,), (cp.uint64(20_000 * max(reps, 50)),))
    for i, (a, b) in enumerate(ev):
        a.record()
        launch(i)
        b.record()
    cp.cuda.Device().synchronize()
    t = sorted(cp.cuda.get_elapsed_time(a, b) * 1e3 for a, b in ev)
    return t[len(t) // 2]


def batched(launch):
    """All reps back to back between one pair of events (llama.cpp's peer times a graph of
    back-to-back calls): time per launch."""
    a, b = cp.cuda.Event(), cp.cuda.Event()
    spin((1,), (1,), (cp.uint64(20_000 * max(reps, 50)),))
    a.record()
    for i in range(reps):
        launch(i)
    b.record()
    b.synchronize()
    return cp.cuda.get_elapsed_time(a, b) * 1e3 / reps


class LaunchConfig(ctypes.Structure):
    _fields_ = [("grid", ctypes.c_uint * 3), ("block", ctypes.c_uint * 3), ("smem", ctypes.c_uint),
                ("stream", ctypes.c_void_p), ("attrs", ctypes.c_void_p), ("nattrs", ctypes.c_uint)]


class LaunchAttr(ctypes.Structure):  # CUlaunchAttribute: id, pad to 8, a 64-byte value union
    _fields_ = [("id", ctypes.c_int), ("pad", ctypes.c_char * 4), ("value", ctypes.c_int * 16)]


libcuda = ctypes.CDLL("libcuda.so.1")
PROGRAMMATIC_STREAM_SERIALIZATION = 6  # CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION


def launch_pdl(fn, grid, block, args):
    """fn<<<grid, block>>>(args) (a RawKernel) on the current stream with programmatic stream serialization;
    args are ctypes values."""
    attr = LaunchAttr(PROGRAMMATIC_STREAM_SERIALIZATION)
    attr.value[0] = 1
    cfg = LaunchConfig((grid, 1, 1), (block, 1, 1), 0, cp.cuda.get_current_stream().ptr,
                       ctypes.addressof(attr), 1)
    params = (ctypes.c_void_p * len(args))(*[ctypes.addressof(a) for a in args])
    rc = libcuda.cuLaunchKernelEx(ctypes.byref(cfg), ctypes.c_void_p(fn.kernel.ptr), params, None)
    if rc != 0:
        raise RuntimeError(f"cuLaunchKernelEx: CUresult {rc}")


def empty_launch(i):
    read_bw((1,), (32,), (sink, cp.uint64(0), cp.uint32(1), sink))


print(json.dumps({"what": "empty launch between events", "median_us": round(timed(empty_launch), 2)}))
print(json.dumps({"what": "empty launch back to back", "mean_us": round(batched(empty_launch), 2)}))
for mb in sizes:
    words = int(mb * 1e6) // 16
    copies = max(4, int(256e6 // (words * 16)) + 1)
    bufs = [cp.random.randint(1, 2**31, size=words * 4, dtype=cp.uint32) for _ in range(copies)]
    for blocks_per_sm in (4, 8, 16):
        us = timed(lambda i: read_bw((sms * blocks_per_sm,), (256,),
                                     (bufs[i % copies], cp.uint64(words), cp.uint32(0x9E3779B9), sink)))
        print(json.dumps({"what": "read", "mb": mb, "blocks_per_sm": blocks_per_sm, "median_us": round(us, 2),
                          "gbs": round(words * 16 / us / 1e3, 1)}))
    us = batched(lambda i: read_bw((sms * 8,), (256,),
                                   (bufs[i % copies], cp.uint64(words), cp.uint32(0x9E3779B9), sink)))
    print(json.dumps({"what": "read back to back", "mb": mb, "blocks_per_sm": 8, "mean_us": round(us, 2),
                      "gbs": round(words * 16 / us / 1e3, 1)}))
    try:
        us = batched(lambda i: launch_pdl(read_bw, sms * 8, 256, [
            ctypes.c_void_p(bufs[i % copies].data.ptr), ctypes.c_uint64(words), ctypes.c_uint32(0x9E3779B9),
            ctypes.c_void_p(sink.data.ptr)]))
        print(json.dumps({"what": "read back to back pdl", "mb": mb, "blocks_per_sm": 8, "mean_us": round(us, 2),
                          "gbs": round(words * 16 / us / 1e3, 1)}))
    except (RuntimeError, AttributeError, OSError) as e:
        print(json.dumps({"what": "read back to back pdl", "mb": mb, "error": str(e)}))
    del bufs
