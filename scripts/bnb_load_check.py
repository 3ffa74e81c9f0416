#!/usr/bin/env python3
"""Load a `qforge quantize --format bnb-safetensors` folder with transformers + bitsandbytes
and compare it with bitsandbytes' own quantization of the original weights.

usage: bnb_load_check.py OUT_DIR ORIGINAL.safetensors
Prints one JSON line: tensors checked, exact byte matches, max abs weight difference.
"""
import json
import sys

import torch
from safetensors.torch import load_file
import bitsandbytes.functional as F
from transformers import AutoModelForCausalLM

out_dir, original = sys.argv[1], sys.argv[2]
model = AutoModelForCausalLM.from_pretrained(out_dir, device_map="cpu", dtype=torch.float16)
orig = load_file(original)
checked = exact = 0
max_diff = 0.0
for name, module in model.named_modules():
    w = getattr(module, "weight", None)
    if w is None or not hasattr(w, "quant_state") or w.quant_state is None:
        continue
    key = name + ".weight"
    qs = w.quant_state
    ref_q, ref_state = F.quantize_4bit(orig[key], blocksize=qs.blocksize, quant_type=qs.quant_type,
                                       compress_statistics=qs.nested)
    same = torch.equal(ref_q.view(-1), w.data.view(-1))
    deq = F.dequantize_4bit(w.data, qs).float()
    ref = F.dequantize_4bit(ref_q, ref_state).float()
    max_diff = max(max_diff, (deq - ref).abs().max().item())
    checked += 1
    exact += int(same)
# The fixture mixes f32 norms with f16 weights: run the kept tensors in f32.
for p in model.parameters():
    if not hasattr(p, "quant_state"):
        p.data = p.data.float()
x = torch.tensor([[1, 2, 3]])
logits = model(x).logits
print(json.dumps({"checked": checked, "exact_codes": exact, "max_dequant_diff": max_diff,
                  "logits_finite": bool(torch.isfinite(logits).all())}))
