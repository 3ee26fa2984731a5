//! wquant: importance-matrix LLM quantization on any GPU.
//!
//! Module map (see DESIGN.md): `gguf` (container), `quant` (block types), `model` (config,
//! tokenizer, forward graph), `backend` (cpu reference, gpu), `imatrix`, `kld`, `cli`.

pub mod backend;
pub mod bench;
pub mod cli;
pub mod convert;
pub mod gguf;
pub mod imatrix;
pub mod kld;
pub mod model;
pub mod pipeline;
pub mod quant;
pub mod quantize;
pub mod util;
pub mod verify;
