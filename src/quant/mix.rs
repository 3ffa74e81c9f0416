//! Temporary: replaced by the llama.cpp mix port.
