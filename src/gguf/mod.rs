//! GGUF container: reader (mmap, validated), writer (atomic, deterministic), value and type ids.

pub mod reader;
pub mod split;
pub mod types;
pub mod value;
pub mod writer;

pub use reader::{GgufFile, Header, TensorInfo};
pub use types::{GgmlType, QK_K};
pub use value::{Value, ValueType};
pub use writer::{write_gguf, GgufWriter, TensorSpec};

use std::path::PathBuf;

pub const GGUF_MAGIC: &[u8; 4] = b"GGUF";
pub const DEFAULT_ALIGNMENT: u64 = 32;
pub const MAX_DIMS: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: malformed GGUF: {what}")]
    Malformed { path: PathBuf, what: String },
    #[error("{path}: missing key {key}")]
    MissingKey { path: PathBuf, key: String },
    #[error("{path}: key {key} has type {got}, expected {want}")]
    WrongKeyType {
        path: PathBuf,
        key: String,
        want: String,
        got: String,
    },
    #[error("{path}: missing tensor {name}")]
    MissingTensor { path: PathBuf, name: String },
    #[error("{path}: {what}")]
    Write { path: PathBuf, what: String },
}
