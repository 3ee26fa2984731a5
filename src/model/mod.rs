//! The model: hyper-parameters (`config`), tokenizer, and the forward graph over `Backend`.

pub mod config;
pub mod graph;
pub mod stream;
pub mod tokenizer;

pub use config::Config;
pub use graph::{Model, StatsCollector};
pub use tokenizer::Tokenizer;
