#!/usr/bin/env python3
"""Greedy per-layer, per-role codec allocation of a KV profile from the CALIBRATION text.

1. Measures each stream's sensitivity with examples/kv_study: the mean KL divergence from the
   fp16 run when only that layer's keys (or values) are coded with the base profile.
2. Models a codec of rate b bits/value as sensitivity x ratio(b), ratio = 4^-(b - base) (every
   bit quarters the MSE; k4 N4096 at 3.25 bits measured 3.2x the k2 N256 base), and upgrades
   the stream with the best KL saved per bit until the mean nominal rate reaches --bits.
3. Prints the `kv-profile build` flags (--tier ... --key-codecs ... --value-codecs ...).

usage: scripts/kv_allocate.py MODEL CAL_TEXT BASE_PROFILE.json LAYERS [--bits 4.28] [--tokens 512]
                              [--window R]
--window R measures the sensitivities with a recent window of R fp16 tokens (the profile's
--protect-last R); --bits is the nominal codec rate, before the window's raw tokens.
--save FILE keeps the measured sensitivities (kv_study's output) for --sensitivities.
--norm-bits 8: the tiers' rates with 8-bit norms (1/8 bit per value less each, head_dim 64).
--base-codec BxK: the base profile's codec (codec 0; default 2x8, k2 N256, 4.25 bits); --ladder: the
codecs a stream may get, BLOCK_DIMxBITS, cheapest first (default 4x12,2x8,2x10,2x12); every one
but the base is a --tier, numbered in ladder order (default: 1 = 4x12 (3.25), 2 = 2x10 (5.25),
3 = 2x12 (6.25)). Every stream starts on the cheapest. Needs `cargo build --example kv_study` first.
"""
import argparse, os, subprocess, tempfile

ap = argparse.ArgumentParser()
ap.add_argument("model"); ap.add_argument("text"); ap.add_argument("base"); ap.add_argument("layers", type=int)
ap.add_argument("--bits", type=float, default=4.28); ap.add_argument("--tokens", type=int, default=512)
ap.add_argument("--window", type=int, default=0)
ap.add_argument("--study", default="target/debug/examples/kv_study")
ap.add_argument("--sensitivities", help="reuse a kv_study output instead of running it")
ap.add_argument("--save", help="write the kv_study output (the sensitivities) to this file")
ap.add_argument("--norm-bits", type=int, default=16, help="the profile's --norm-bits (8 saves 8/64 bits per tier)")
ap.add_argument("--base-codec", default="2x8", help="the base profile's codec, BLOCK_DIMxBITS")
ap.add_argument("--ladder", default="4x12,2x8,2x10,2x12", help="the codecs to allocate, cheapest first")
a = ap.parse_args()
L = a.layers
if a.sensitivities:
    out = open(a.sensitivities).read()
else:
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        for l in range(L):
            one = "".join("0" if m == l else "-" for m in range(L))
            f.write(f"K{l} {one} {'-' * L} {a.window}\nV{l} {'-' * L} {one} {a.window}\n")
    out = subprocess.run([a.study, a.model, a.text, str(a.tokens), "1", f.name, a.base],
                         check=True, capture_output=True, text=True).stdout
    os.unlink(f.name)
if a.save:
    open(a.save, "w").write(out)
S = {}
for line in out.splitlines():
    f = line.split()
    if len(f) >= 3 and f[0][0] in "KV" and f[0][1:].isdigit():
        S[(f[0][0], int(f[0][1:]))] = float(f[2])
# (profile codec index, bits/value, loss ratio against the base), cheapest first. A codec's
# loss is modelled at 4^-bits, but k4 N4096 (4x12), measured 3.3x k2 N256 where the model says 4x.
MEASURED = {"4x12": 3.3 / 4}
rate = lambda c: int(c.split("x")[1]) / int(c.split("x")[0]) + a.norm_bits / 64
loss = lambda c: 4.0 ** -rate(c) * MEASURED.get(c, 1.0)
ladder = a.ladder.split(",")
assert a.base_codec in ladder, f"--base-codec {a.base_codec} is not in --ladder {a.ladder}"
extra = [c for c in ladder if c != a.base_codec]
index = {c: 0 if c == a.base_codec else 1 + extra.index(c) for c in ladder}
tiers = [(index[c], rate(c), loss(c) / loss(a.base_codec)) for c in ladder]
streams = sorted(S)
level = {s: 0 for s in streams}
bits = lambda: sum(tiers[level[s]][1] for s in streams) / len(streams)
while True:
    best = None
    for s in streams:
        if level[s] + 1 < len(tiers):
            lo, hi = tiers[level[s]], tiers[level[s] + 1]
            db = hi[1] - lo[1]
            gain = S[s] * (lo[2] - hi[2]) / db
            if bits() + db / len(streams) <= a.bits + 1e-9 and (best is None or gain > best[0]):
                best = (gain, s)
    if best is None:
        break
    level[best[1]] += 1
codecs = lambda r: ",".join(str(tiers[level[(r, l)]][0]) for l in range(L))
print(f"{' '.join('--tier ' + c for c in extra)} --key-codecs {codecs('K')} --value-codecs {codecs('V')}")
print(f"# nominal {bits():.4f} bits/value, modelled KL {sum(S[s] * tiers[level[s]][2] for s in streams):.5f}"
      f" (all at the base: {sum(S.values()):.5f})")
