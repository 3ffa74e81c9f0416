#!/usr/bin/env python3
"""Compare every 4-bit tensor of a `qforge quantize --format bnb-safetensors` folder with
bitsandbytes' own quantization of the original weights.

usage: bnb_compare.py OUT_DIR/model.safetensors ORIGINAL.safetensors
Prints one JSON object: per tensor, whether the codes are identical, and the relative RMSE
of bitsandbytes' dequantized weights and of ours against the original.
"""
import json
import sys

import torch
import bitsandbytes.functional as F
from safetensors.torch import load_file

ours = load_file(sys.argv[1])
orig = load_file(sys.argv[2])
out = {}
for key, state_bytes in ours.items():
    if ".quant_state.bitsandbytes__" not in key:
        continue
    name = key.split(".quant_state.")[0]
    qs = json.loads(bytes(state_bytes.tolist()).decode())
    x = orig[name]
    nested = "nested_offset" in qs
    ref_q, ref_state = F.quantize_4bit(x, blocksize=qs["blocksize"], quant_type=qs["quant_type"],
                                       compress_statistics=nested)
    state = F.QuantState.from_dict({k[len(name) + 1:]: v for k, v in ours.items()
                                    if k.startswith(name + ".")}, device=torch.device("cpu"))
    mine = F.dequantize_4bit(ours[name], state).float()
    ref = F.dequantize_4bit(ref_q, ref_state).float()
    xf = x.float()
    rel = lambda y: ((y - xf).pow(2).sum() / xf.pow(2).sum()).sqrt().item()
    out[name] = {"exact": bool(torch.equal(ref_q.view(-1), ours[name].view(-1))),
                 "rel_rmse_ref": rel(ref), "rel_rmse_ours": rel(mine)}
print(json.dumps(out))
