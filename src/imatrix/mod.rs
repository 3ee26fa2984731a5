//! Importance matrices: files (GGUF and legacy .dat), merging, collection, statistics.

pub mod collect;
pub mod collector;
pub mod covariance;
pub mod file;
pub mod merge;

pub use file::{Imatrix, ImatrixEntry, ImatrixFormat};
pub mod metrics;
pub mod plot;
