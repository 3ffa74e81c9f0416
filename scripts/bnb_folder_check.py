#!/usr/bin/env python3
"""Load a `qforge quantize --format bnb-safetensors` folder with transformers + bitsandbytes
next to the Hugging Face folder it came from (directly, or through a GGUF).

usage: bnb_folder_check.py OUT_DIR SOURCE_DIR
Prints one JSON line: whether AutoTokenizer loads from OUT_DIR and encodes as the source's
tokenizer does (null when OUT_DIR has no tokenizer), whether the 4-bit model's logits are
finite, and their relative error against the source model's.

usage: bnb_folder_check.py --make-tiny TOKENIZER_DIR DEST
Writes a random-weight bf16 Llama folder (hidden size 128: bitsandbytes' CPU kernels refuse
the 32-wide fixture) with TOKENIZER_DIR's tokenizer and generation files.
"""
import json
import os
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

if sys.argv[1] == "--make-tiny":
    import shutil
    from transformers import LlamaConfig, LlamaForCausalLM

    tok_dir, dest = sys.argv[2], sys.argv[3]
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=320, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      bos_token_id=1, eos_token_id=2)
    LlamaForCausalLM(cfg).to(torch.bfloat16).save_pretrained(dest, safe_serialization=True)
    for f in os.listdir(tok_dir):
        if f.startswith(("tokenizer", "special_tokens", "generation_config")):
            shutil.copy(os.path.join(tok_dir, f), os.path.join(dest, f))
    sys.exit(0)

out_dir, source_dir = sys.argv[1], sys.argv[2]
text = "Hello world, the quick brown fox."
tokenizer_matches = None
if any(os.path.exists(os.path.join(out_dir, f)) for f in ("tokenizer.json", "tokenizer.model")):
    ours = AutoTokenizer.from_pretrained(out_dir)
    theirs = AutoTokenizer.from_pretrained(source_dir)
    tokenizer_matches = ours(text)["input_ids"] == theirs(text)["input_ids"]
model = AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float32)
ref = AutoModelForCausalLM.from_pretrained(source_dir, dtype=torch.float32)
x = torch.tensor([[1, 5, 9, 17, 33, 2]])
with torch.no_grad():
    a = model(x).logits.float()
    b = ref(x).logits.float()
print(json.dumps({
    "tokenizer_matches": tokenizer_matches,
    "logits_finite": bool(torch.isfinite(a).all()),
    "logits_rel_err": float((a - b).norm() / b.norm()),
}))
