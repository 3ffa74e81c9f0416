//! `convert`: a Hugging Face folder turned into a llama.cpp GGUF, as `convert_hf_to_gguf.py` does.

pub mod vocab;
