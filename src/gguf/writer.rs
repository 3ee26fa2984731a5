//! GGUF v3 writer (SPEC §1.1, §4.5): KVs in the order given, tensors in info order, each padded
//! with zeros to the alignment. Streams tensor data to `NAME.tmp`, fsyncs and renames, so an
//! interrupted write never leaves a torn output.

use super::types::GgmlType;
use super::value::Value;
use super::{GgufError, DEFAULT_ALIGNMENT, GGUF_MAGIC};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// A tensor to be written: name, ggml dims (ne[0] first) and type.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
}

impl TensorSpec {
    pub fn new(name: impl Into<String>, dims: &[u64], ggml_type: GgmlType) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            dims: dims.to_vec(),
            ggml_type,
        }
    }
    pub fn n_bytes(&self) -> u64 {
        let n: u64 = self.dims.iter().product();
        n / self.ggml_type.block_size() as u64 * self.ggml_type.type_size() as u64
    }
}

/// Build the header bytes (through the padding before the data section) and the tensor offsets.
pub fn encode_header(kvs: &[(String, Value)], tensors: &[TensorSpec]) -> (Vec<u8>, Vec<u64>) {
    let alignment = kvs
        .iter()
        .find(|(k, _)| k == "general.alignment")
        .and_then(|(_, v)| match v {
            Value::U32(a) if *a != 0 && a.is_power_of_two() => Some(*a as u64),
            _ => None,
        })
        .unwrap_or(DEFAULT_ALIGNMENT);
    let mut out = Vec::new();
    out.extend_from_slice(GGUF_MAGIC);
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(kvs.len() as u64).to_le_bytes());
    for (k, v) in kvs {
        out.extend_from_slice(&(k.len() as u64).to_le_bytes());
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(&v.value_type().id().to_le_bytes());
        v.encode(&mut out);
    }
    let mut offsets = Vec::with_capacity(tensors.len());
    let mut off = 0u64;
    for t in tensors {
        out.extend_from_slice(&(t.name.len() as u64).to_le_bytes());
        out.extend_from_slice(t.name.as_bytes());
        // ggml_n_dims: trailing 1s are not written (SPEC §1.1).
        let nd = (1..t.dims.len())
            .rev()
            .find(|&i| t.dims[i] > 1)
            .map_or(1, |i| i + 1);
        out.extend_from_slice(&(nd as u32).to_le_bytes());
        for d in &t.dims[..nd] {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&t.ggml_type.id().to_le_bytes());
        out.extend_from_slice(&off.to_le_bytes());
        offsets.push(off);
        off += t.n_bytes().div_ceil(alignment) * alignment;
    }
    let padded = (out.len() as u64).div_ceil(alignment) * alignment;
    out.resize(padded as usize, 0);
    (out, offsets)
}

/// Streaming writer: create with the full header, then `write_tensor` each tensor's bytes in
/// order (in one or several pieces), then `finish` (fsync + rename). Dropping it unfinished
/// removes the temporary file.
pub struct GgufWriter {
    path: PathBuf,
    tmp: PathBuf,
    out: Option<BufWriter<File>>,
    tensors: Vec<TensorSpec>,
    alignment: u64,
    current: usize,
    written_in_current: u64,
}

/// `NAME.tmp` next to `path`.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

impl GgufWriter {
    pub fn create(
        path: impl AsRef<Path>,
        kvs: &[(String, Value)],
        tensors: Vec<TensorSpec>,
    ) -> Result<GgufWriter, GgufError> {
        let path = path.as_ref().to_path_buf();
        let tmp = tmp_path(&path);
        let io = |e| GgufError::Io {
            path: tmp.clone(),
            source: e,
        };
        let (header, _) = encode_header(kvs, &tensors);
        let alignment = kvs
            .iter()
            .find(|(k, _)| k == "general.alignment")
            .and_then(|(_, v)| match v {
                Value::U32(a) if *a != 0 && a.is_power_of_two() => Some(*a as u64),
                _ => None,
            })
            .unwrap_or(DEFAULT_ALIGNMENT);
        let f = File::create(&tmp).map_err(io)?;
        let mut out = BufWriter::with_capacity(1 << 20, f);
        out.write_all(&header).map_err(io)?;
        Ok(GgufWriter {
            path,
            tmp,
            out: Some(out),
            tensors,
            alignment,
            current: 0,
            written_in_current: 0,
        })
    }

    fn io(&self, e: std::io::Error) -> GgufError {
        GgufError::Io {
            path: self.tmp.clone(),
            source: e,
        }
    }

    /// Append bytes of the current tensor; moves to the next tensor when this one is complete.
    pub fn write_tensor(&mut self, data: &[u8]) -> Result<(), GgufError> {
        let Some(t) = self.tensors.get(self.current) else {
            return Err(GgufError::Write {
                path: self.path.clone(),
                what: "more tensor data than tensors declared".into(),
            });
        };
        let need = t.n_bytes() - self.written_in_current;
        if data.len() as u64 > need {
            return Err(GgufError::Write {
                path: self.path.clone(),
                what: format!(
                    "tensor {}: {} bytes given, {need} expected",
                    t.name,
                    data.len()
                ),
            });
        }
        let n_bytes = t.n_bytes();
        let out = self.out.as_mut().expect("writer used after finish");
        if let Err(e) = out.write_all(data) {
            return Err(self.io(e));
        }
        self.written_in_current += data.len() as u64;
        if self.written_in_current == n_bytes {
            let pad = n_bytes.div_ceil(self.alignment) * self.alignment - n_bytes;
            let out = self.out.as_mut().expect("writer used after finish");
            if let Err(e) = out.write_all(&vec![0u8; pad as usize]) {
                return Err(self.io(e));
            }
            self.current += 1;
            self.written_in_current = 0;
        }
        Ok(())
    }

    /// Name of the tensor the next bytes belong to.
    pub fn next_tensor(&self) -> Option<&TensorSpec> {
        self.tensors.get(self.current)
    }

    /// Flush, fsync and atomically rename to the final name.
    pub fn finish(mut self) -> Result<(), GgufError> {
        if self.current != self.tensors.len() {
            let name = self.tensors[self.current].name.clone();
            return Err(GgufError::Write {
                path: self.path.clone(),
                what: format!("tensor {name} was not completely written"),
            });
        }
        let out = self.out.take().expect("finish called twice");
        let f = out.into_inner().map_err(|e| GgufError::Io {
            path: self.tmp.clone(),
            source: e.into_error(),
        })?;
        f.sync_all().map_err(|e| self.io(e))?;
        drop(f);
        std::fs::rename(&self.tmp, &self.path).map_err(|e| self.io(e))?;
        Ok(())
    }
}

impl Drop for GgufWriter {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Write a whole GGUF from in-memory tensors (small files: imatrix, tests).
pub fn write_gguf(
    path: impl AsRef<Path>,
    kvs: &[(String, Value)],
    tensors: &[(TensorSpec, Vec<u8>)],
) -> Result<(), GgufError> {
    let mut w = GgufWriter::create(path, kvs, tensors.iter().map(|(s, _)| s.clone()).collect())?;
    for (_, d) in tensors {
        w.write_tensor(d)?;
    }
    w.finish()
}
