//! What qforge knows about a model beyond its tensors: the hyperparameters of a Hugging
//! Face `config.json` or of GGUF metadata ([`config::ModelConfig`]).

pub mod config;

pub use config::ModelConfig;
