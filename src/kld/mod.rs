//! KL divergence of a quantized model from its base (SPEC §7): llama-perplexity's base-file
//! format, the per-token math and statistics, and the report.

pub mod driver;
pub mod logits_file;
pub mod report;
pub mod stats;

pub use logits_file::{BaseFileReader, BaseFileWriter, BaseHeader, BaseRecord};
pub use report::KldReport;
pub use stats::{token_kld_from_logits, token_kld_from_record, KldAccumulator, Summary, TokenKld};
