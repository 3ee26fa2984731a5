//! The model: hyper-parameters (`config`), tokenizer, the forward graph over `Backend`
//! (`graph`: one layer's weights and `layer_forward`), the observer it shows every matmul's
//! input to (`observer`), the memory plan of a run (`plan`), and the one driver that runs the
//! graph over batches of sequences under a plan (`runner::ModelRunner`).

pub mod config;
pub mod graph;
pub mod observer;
pub mod plan;
pub mod runner;
pub mod tokenizer;

pub use config::Config;
pub use observer::MatmulObserver;
pub use runner::ModelRunner;
pub use tokenizer::Tokenizer;

/// Per-token NLL on the host (the CPU reference; `Backend::token_nlls` runs it on a device).
pub use crate::backend::cpu::nll::{token_nll, token_nlls};
