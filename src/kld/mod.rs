//! KL divergence of a quantized model from its base (SPEC §7): llama-perplexity's base-file
//! format (`logits_file`), the per-token math and statistics (`stats`, the CPU reference), the
//! per-token reductions over a backend's logits (`reduce::KldReduce`; on the GPU, `gpu`), the
//! two modes' passes over the models (`driver`), and what `wquant kld` prints (`output`).

pub mod driver;
pub mod gpu;
pub mod logits_file;
pub mod output;
pub mod reduce;
pub mod stats;

pub use logits_file::{BaseFileReader, BaseFileWriter, BaseHeader, BaseRecord};
pub use output::KldReport;
pub use reduce::KldReduce;
pub use stats::{token_kld_from_logits, token_kld_from_record, KldAccumulator, Summary, TokenKld};
