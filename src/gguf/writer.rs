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

/// Check what the reader would reject, so the writer never produces an unreadable file:
/// unique keys, flat arrays whose items match their element type, a valid `general.alignment`,
/// unique tensor names under 64 bytes, 1 to 4 dimensions, whole blocks, no size overflow.
pub fn validate(
    path: &Path,
    kvs: &[(String, Value)],
    tensors: &[TensorSpec],
) -> Result<(), GgufError> {
    let bad = |what: String| GgufError::Write {
        path: path.to_path_buf(),
        what,
    };
    let mut keys = std::collections::HashSet::new();
    for (k, v) in kvs {
        if !keys.insert(k.as_str()) {
            return Err(bad(format!("duplicate key {k}")));
        }
        if let Value::Array(et, items) = v {
            if *et == super::ValueType::Array {
                return Err(bad(format!("key {k}: nested arrays are not supported")));
            }
            if let Some(i) = items.iter().position(|it| it.value_type() != *et) {
                return Err(bad(format!(
                    "key {k}: array item {i} is {}, not {}",
                    items[i].value_type().name(),
                    et.name()
                )));
            }
        }
        if k == "general.alignment" && !matches!(v, Value::U32(a) if *a != 0 && a.is_power_of_two())
        {
            return Err(bad(format!(
                "key general.alignment = {v} must be a non-zero power of two of type UINT32"
            )));
        }
    }
    let mut names = std::collections::HashSet::new();
    for t in tensors {
        if t.name.len() >= 64 {
            return Err(bad(format!(
                "tensor name {:?} is longer than 63 bytes",
                t.name
            )));
        }
        if t.name.contains('\0') {
            return Err(bad(format!("tensor name {:?} holds a NUL byte", t.name)));
        }
        if !names.insert(t.name.as_str()) {
            return Err(bad(format!("duplicate tensor name {}", t.name)));
        }
        if t.dims.is_empty() || t.dims.len() > super::MAX_DIMS {
            return Err(bad(format!(
                "tensor {}: {} dimensions (1 to {} allowed)",
                t.name,
                t.dims.len(),
                super::MAX_DIMS
            )));
        }
        let n = t.dims.iter().try_fold(1u64, |a, &d| {
            a.checked_mul(d).filter(|&n| n < i64::MAX as u64)
        });
        let ok = n.is_some()
            && t.dims[0] % t.ggml_type.block_size() as u64 == 0
            && t.ggml_type.row_bytes(t.dims[0]).is_some()
            && (n.unwrap() / t.ggml_type.block_size() as u64)
                .checked_mul(t.ggml_type.type_size() as u64)
                .is_some();
        if !ok {
            return Err(bad(format!(
                "tensor {}: shape {:?} is not a whole number of {} blocks or overflows",
                t.name, t.dims, t.ggml_type
            )));
        }
    }
    Ok(())
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
        // ggml_n_dims: trailing 1s are not written (SPEC §1.1). A 0 is kept (ggml_n_dims would
        // drop it and turn an empty tensor into a huge one; found by fuzzing).
        let nd = (1..t.dims.len())
            .rev()
            .find(|&i| t.dims[i] != 1)
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

fn write_zeros(out: &mut impl Write, mut n: u64) -> std::io::Result<()> {
    const ZEROS: [u8; 4096] = [0; 4096];
    while n > 0 {
        let k = n.min(ZEROS.len() as u64);
        out.write_all(&ZEROS[..k as usize])?;
        n -= k;
    }
    Ok(())
}

/// Outputs are written to `NAME.tmp` and renamed over `path`: refuse a `path` that is a device,
/// FIFO or directory, which the rename would replace (e.g. `/dev/full`).
pub fn check_replaceable(path: &Path) -> std::io::Result<()> {
    match std::fs::metadata(path) {
        Ok(m) if !m.is_file() => Err(std::io::Error::other(
            "not a regular file; wquant writes NAME.tmp and renames it over the output, so the \
             output must be a regular file or not exist",
        )),
        _ => Ok(()),
    }
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
        validate(&path, kvs, &tensors)?;
        check_replaceable(&path).map_err(|e| GgufError::Write {
            path: path.clone(),
            what: e.to_string(),
        })?;
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
        if let Err(e) = out.write_all(&header) {
            drop(out);
            let _ = std::fs::remove_file(&tmp);
            return Err(io(e));
        }
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
        let out = self.out.as_mut().expect("finish consumes the writer");
        if let Err(e) = out.write_all(data) {
            return Err(self.io(e));
        }
        self.written_in_current += data.len() as u64;
        if self.written_in_current == n_bytes {
            let pad = n_bytes.div_ceil(self.alignment) * self.alignment - n_bytes;
            let out = self.out.as_mut().expect("finish consumes the writer");
            if let Err(e) = write_zeros(out, pad) {
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
        let out = self.out.take().expect("finish consumes the writer");
        let res = out
            .into_inner()
            .map_err(|e| e.into_error())
            .and_then(|f| f.sync_all())
            .and_then(|()| std::fs::rename(&self.tmp, &self.path));
        if let Err(e) = res {
            let _ = std::fs::remove_file(&self.tmp);
            return Err(GgufError::Io {
                path: self.path.clone(),
                source: e,
            });
        }
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
