//! GGUF v2/v3 reader over mmap (SPEC §1). Every length, count, dimension product and offset is
//! checked against the file size before it is used, so a hostile header can neither panic the
//! reader nor make it allocate more than the file holds.

use super::types::GgmlType;
use super::value::{Value, ValueType};
use super::{GgufError, DEFAULT_ALIGNMENT, GGUF_MAGIC, MAX_DIMS};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One tensor's header entry.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml dimension order: ne[0] is the row length. Always 1..=4 entries as stored.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Offset relative to the data section (of split file `split`).
    pub offset: u64,
    pub n_bytes: u64,
    /// Which file of a split model holds the data (0: the first, or the only one).
    pub split: u16,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
    /// Row length (ne[0]).
    pub fn ne0(&self) -> u64 {
        self.dims[0]
    }
    /// Number of rows (product of ne[1..]).
    pub fn n_rows(&self) -> u64 {
        self.dims[1..].iter().product()
    }
    /// ne[i], 1 past the stored dimensions.
    pub fn ne(&self, i: usize) -> u64 {
        self.dims.get(i).copied().unwrap_or(1)
    }
    /// ggml_n_dims: 1 + index of the last dimension > 1.
    pub fn n_dims(&self) -> usize {
        (1..self.dims.len())
            .rev()
            .find(|&i| self.dims[i] > 1)
            .map_or(1, |i| i + 1)
    }
}

/// Parsed header; the data stays in the byte source.
#[derive(Clone, Debug)]
pub struct Header {
    pub version: u32,
    pub kvs: Vec<(String, Value)>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    /// Absolute file offset of the data section.
    pub data_offset: u64,
}

enum Bytes {
    Mmap(memmap2::Mmap),
    Owned(Vec<u8>),
}

/// An opened GGUF file: validated header plus the mapped bytes. A model split by gguf-split
/// (`NAME-00001-of-0000N.gguf`) opens as one file from its first part: `header` holds the first
/// part's keys and every part's tensors (`TensorInfo::split` says which part holds the data).
pub struct GgufFile {
    pub path: PathBuf,
    pub header: Header,
    bytes: Bytes,
    index: HashMap<String, usize>,
    /// Parts 2..N of a split model: (path, bytes, data offset).
    other_splits: Vec<(PathBuf, Bytes, u64)>,
}

/// llama.cpp's split keys (gguf-split, `llama_split_path`).
pub const KEY_SPLIT_NO: &str = "split.no";
pub const KEY_SPLIT_COUNT: &str = "split.count";
pub const KEY_SPLIT_TENSORS_COUNT: &str = "split.tensors.count";

/// `PREFIX-0000I-of-0000N.gguf`, I counted from 1 (llama.cpp's `llama_split_path`).
pub fn split_path(prefix: &str, split_no: usize, split_count: usize) -> PathBuf {
    PathBuf::from(format!(
        "{prefix}-{:05}-of-{split_count:05}.gguf",
        split_no + 1
    ))
}

/// The prefix of a split file name, if `path` is part `split_no` of `split_count`
/// (llama.cpp's `llama_split_prefix`).
pub fn split_prefix(path: &Path, split_no: usize, split_count: usize) -> Option<String> {
    let s = path.to_str()?;
    let tail = format!("-{:05}-of-{split_count:05}.gguf", split_no + 1);
    s.strip_suffix(&tail).map(str::to_string)
}

fn map_file(path: &Path) -> Result<Bytes, GgufError> {
    let file = std::fs::File::open(path).map_err(|e| GgufError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    // SAFETY: the file is opened read-only; wquant never writes to files it reads, and
    // outputs are written to NAME.tmp and renamed, so a mapped input is not modified by us.
    let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| GgufError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    Ok(Bytes::Mmap(mmap))
}

fn bytes_of(b: &Bytes) -> &[u8] {
    match b {
        Bytes::Mmap(m) => m,
        Bytes::Owned(v) => v,
    }
}

/// A split key as an integer, if present and integral.
fn split_key(h: &Header, key: &str) -> Option<i64> {
    h.kvs
        .iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| v.as_i64())
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn err(&self, what: String) -> GgufError {
        GgufError::Malformed {
            path: self.path.to_path_buf(),
            what,
        }
    }
    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], GgufError> {
        let rem = (self.buf.len() - self.pos) as u64;
        if n > rem {
            return Err(self.err(format!(
                "{what}: needs {n} bytes at offset {} but only {rem} remain (truncated file?)",
                self.pos
            )));
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }
    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().unwrap()))
    }
    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().unwrap()))
    }
    fn string(&mut self, what: &str) -> Result<Vec<u8>, GgufError> {
        let len = self.u64(what)?;
        Ok(self.take(len, what)?.to_vec())
    }
    fn value(&mut self, t: ValueType, what: &str) -> Result<Value, GgufError> {
        Ok(match t {
            ValueType::U8 => Value::U8(self.take(1, what)?[0]),
            ValueType::I8 => Value::I8(self.take(1, what)?[0] as i8),
            ValueType::U16 => {
                Value::U16(u16::from_le_bytes(self.take(2, what)?.try_into().unwrap()))
            }
            ValueType::I16 => {
                Value::I16(i16::from_le_bytes(self.take(2, what)?.try_into().unwrap()))
            }
            ValueType::U32 => Value::U32(self.u32(what)?),
            ValueType::I32 => Value::I32(self.u32(what)? as i32),
            ValueType::F32 => Value::F32(f32::from_bits(self.u32(what)?)),
            ValueType::Bool => {
                let b = self.take(1, what)?[0];
                if b > 1 {
                    return Err(self.err(format!("{what}: bool value {b} is neither 0 nor 1")));
                }
                Value::Bool(b == 1)
            }
            ValueType::String => Value::String(self.string(what)?),
            ValueType::U64 => Value::U64(self.u64(what)?),
            ValueType::I64 => Value::I64(self.u64(what)? as i64),
            ValueType::F64 => Value::F64(f64::from_bits(self.u64(what)?)),
            ValueType::Array => {
                let et_id = self.u32(what)?;
                let et = ValueType::from_id(et_id).ok_or_else(|| {
                    self.err(format!("{what}: unknown array element type {et_id}"))
                })?;
                if et == ValueType::Array {
                    return Err(self.err(format!("{what}: nested arrays are not supported")));
                }
                let n = self.u64(what)?;
                // Every element takes at least its fixed size (8 bytes for a string's length).
                let min = et.fixed_size().unwrap_or(8) as u64;
                if n.checked_mul(min).is_none_or(|b| b > self.remaining()) {
                    return Err(self.err(format!(
                        "{what}: array of {n} {} elements does not fit in the {} bytes left",
                        et.name(),
                        self.remaining()
                    )));
                }
                // Reserve only a bounded head start: the items themselves are bounded by the file.
                let mut items = Vec::with_capacity(n.min(1 << 16) as usize);
                for _ in 0..n {
                    items.push(self.value(et, what)?);
                }
                Value::Array(et, items)
            }
        })
    }
}

/// Parse and validate a GGUF header from `buf` (the whole file). `path` only names errors.
pub fn parse_header(buf: &[u8], path: &Path) -> Result<Header, GgufError> {
    let mut c = Cursor { buf, pos: 0, path };
    let magic = c.take(4, "magic")?;
    if magic != GGUF_MAGIC {
        return Err(c.err(format!("bad magic {magic:02x?}, expected \"GGUF\"")));
    }
    let version = c.u32("version")?;
    if version != 2 && version != 3 {
        return Err(c.err(format!(
            "unsupported GGUF version {version} (supported: 2, 3)"
        )));
    }
    let n_tensors = c.u64("tensor count")?;
    let n_kv = c.u64("KV count")?;
    // A KV needs at least 8 (key length) + 4 (type) + 1 bytes; a tensor info at least
    // 8 (name length) + 4 (n_dims) + 4 (type) + 8 (offset) bytes.
    if n_kv.checked_mul(13).is_none_or(|b| b > c.remaining()) {
        return Err(c.err(format!(
            "KV count {n_kv} cannot fit in the {} bytes left",
            c.remaining()
        )));
    }
    if n_tensors
        .checked_mul(24)
        .and_then(|b| b.checked_add(n_kv * 13))
        .is_none_or(|b| b > c.remaining())
    {
        return Err(c.err(format!(
            "tensor count {n_tensors} cannot fit in the {} bytes left",
            c.remaining()
        )));
    }
    let mut kvs: Vec<(String, Value)> = Vec::with_capacity(n_kv as usize);
    let mut seen_keys = std::collections::HashSet::new();
    for i in 0..n_kv {
        let kb = c.string(&format!("key of KV #{i}"))?;
        let key =
            String::from_utf8(kb).map_err(|_| c.err(format!("key of KV #{i} is not UTF-8")))?;
        let tid = c.u32(&format!("type of key {key}"))?;
        let t = ValueType::from_id(tid)
            .ok_or_else(|| c.err(format!("key {key}: unknown value type {tid}")))?;
        let v = c.value(t, &format!("key {key}"))?;
        if !seen_keys.insert(key.clone()) {
            return Err(c.err(format!("duplicate key {key}")));
        }
        kvs.push((key, v));
    }
    let alignment = match kvs.iter().find(|(k, _)| k == "general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some((_, Value::U32(a))) if *a != 0 && a.is_power_of_two() => *a as u64,
        Some((_, v)) => {
            return Err(c.err(format!(
                "key general.alignment = {v} must be a non-zero power of two of type UINT32"
            )))
        }
    };
    let mut tensors: Vec<TensorInfo> = Vec::with_capacity(n_tensors as usize);
    let mut names = std::collections::HashSet::new();
    for i in 0..n_tensors {
        let nb = c.string(&format!("name of tensor #{i}"))?;
        let name = String::from_utf8(nb)
            .map_err(|_| c.err(format!("name of tensor #{i} is not UTF-8")))?;
        if name.len() >= 64 {
            return Err(c.err(format!("tensor name {name:?} is longer than 63 bytes")));
        }
        // ggml names are C strings: a NUL would cut the name short (llama.cpp refuses it).
        if name.contains('\0') {
            return Err(c.err(format!("tensor name {name:?} holds a NUL byte")));
        }
        let n_dims = c.u32(&format!("tensor {name}: n_dims"))?;
        if n_dims as usize > MAX_DIMS {
            return Err(c.err(format!(
                "tensor {name}: {n_dims} dimensions (at most {MAX_DIMS})"
            )));
        }
        let mut dims = Vec::with_capacity(n_dims.max(1) as usize);
        for d in 0..n_dims {
            let ne = c.u64(&format!("tensor {name}: ne[{d}]"))? as i64;
            if ne < 0 {
                return Err(c.err(format!("tensor {name}: negative dimension ne[{d}] = {ne}")));
            }
            dims.push(ne as u64);
        }
        if dims.is_empty() {
            dims.push(1);
        }
        let tid = c.u32(&format!("tensor {name}: type"))?;
        let ggml_type = GgmlType::from_id(tid)
            .ok_or_else(|| c.err(format!("tensor {name}: unknown ggml type id {tid}")))?;
        let offset = c.u64(&format!("tensor {name}: offset"))?;
        // Like llama.cpp: the element count must stay below INT64_MAX.
        let mut n_elem: u64 = 1;
        for &d in &dims {
            n_elem = n_elem
                .checked_mul(d)
                .filter(|&n| n < i64::MAX as u64)
                .ok_or_else(|| {
                    c.err(format!(
                        "tensor {name}: dimensions {dims:?} overflow when multiplied"
                    ))
                })?;
        }
        if dims[0] % ggml_type.block_size() as u64 != 0 {
            return Err(c.err(format!(
                "tensor {name}: row length {} is not a multiple of {}'s block size {}",
                dims[0],
                ggml_type,
                ggml_type.block_size()
            )));
        }
        let n_bytes = (n_elem / ggml_type.block_size() as u64)
            .checked_mul(ggml_type.type_size() as u64)
            .ok_or_else(|| c.err(format!("tensor {name}: byte size overflows")))?;
        if !names.insert(name.clone()) {
            return Err(c.err(format!("duplicate tensor name {name}")));
        }
        tensors.push(TensorInfo {
            name,
            dims,
            ggml_type,
            offset,
            n_bytes,
            split: 0,
        });
    }
    let data_offset = (c.pos as u64).div_ceil(alignment) * alignment;
    let file_len = buf.len() as u64;
    if n_tensors > 0 && data_offset > file_len {
        return Err(c.err(format!(
            "data section starts at {data_offset}, past the end of the {file_len}-byte file"
        )));
    }
    // Tensors must sit in order at aligned offsets without overlap, inside the file
    // (llama.cpp demands offset == running sum of padded sizes).
    let mut expected: u64 = 0;
    for t in &tensors {
        if t.offset % alignment != 0 {
            return Err(c.err(format!(
                "tensor {}: offset {} is not a multiple of the alignment {alignment}",
                t.name, t.offset
            )));
        }
        if t.offset != expected {
            return Err(c.err(format!(
                "tensor {}: offset {} overlaps or leaves a gap (expected {expected})",
                t.name, t.offset
            )));
        }
        let end = data_offset
            .checked_add(t.offset)
            .and_then(|o| o.checked_add(t.n_bytes))
            .ok_or_else(|| c.err(format!("tensor {}: offset overflows", t.name)))?;
        if end > file_len {
            return Err(c.err(format!(
                "tensor {}: data [{}, {end}) runs past the end of the {file_len}-byte file",
                t.name,
                data_offset + t.offset
            )));
        }
        expected = t
            .offset
            .checked_add(t.n_bytes.div_ceil(alignment) * alignment)
            .ok_or_else(|| c.err(format!("tensor {}: size overflows", t.name)))?;
    }
    Ok(Header {
        version,
        kvs,
        tensors,
        alignment,
        data_offset,
    })
}

impl GgufFile {
    /// Open and validate a GGUF file (memory-mapped). The first part of a split model opens
    /// the whole model: every part must be present, numbered, and agree on the split count
    /// and the total tensor count.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile, GgufError> {
        let path = path.as_ref().to_path_buf();
        let mut f = Self::from_bytes_inner(path.clone(), map_file(&path)?)?;
        f.open_other_splits()?;
        Ok(f)
    }

    fn open_other_splits(&mut self) -> Result<(), GgufError> {
        let bad = |p: &Path, what: String| GgufError::Malformed {
            path: p.to_path_buf(),
            what,
        };
        let Some(count) = split_key(&self.header, KEY_SPLIT_COUNT) else {
            return Ok(());
        };
        let no = split_key(&self.header, KEY_SPLIT_NO).unwrap_or(0);
        if count <= 1 && no == 0 {
            return Ok(());
        }
        if !(1..=9999).contains(&count) {
            return Err(bad(
                &self.path,
                format!("{KEY_SPLIT_COUNT} = {count} is out of range"),
            ));
        }
        if no != 0 {
            return Err(bad(
                &self.path,
                format!(
                    "this is part {} of a {count}-part split model: open the first part \
                     (…-00001-of-{count:05}.gguf)",
                    no + 1
                ),
            ));
        }
        let count = count as usize;
        let prefix = split_prefix(&self.path, 0, count).ok_or_else(|| {
            bad(
                &self.path,
                format!(
                    "a {count}-part split model's first part must be named \
                     PREFIX-00001-of-{count:05}.gguf"
                ),
            )
        })?;
        let total = split_key(&self.header, KEY_SPLIT_TENSORS_COUNT);
        for i in 1..count {
            let p = split_path(&prefix, i, count);
            if !p.is_file() {
                return Err(bad(
                    &self.path,
                    format!(
                        "split part {} of {count} is missing: {}",
                        i + 1,
                        p.display()
                    ),
                ));
            }
            let bytes = map_file(&p)?;
            let h = parse_header(bytes_of(&bytes), &p)?;
            let (pno, pcount) = (split_key(&h, KEY_SPLIT_NO), split_key(&h, KEY_SPLIT_COUNT));
            if pno != Some(i as i64) || pcount != Some(count as i64) {
                return Err(bad(
                    &p,
                    format!(
                        "split keys say part {:?} of {:?}, expected part {i} (0-based) of {count}",
                        pno, pcount
                    ),
                ));
            }
            if split_key(&h, KEY_SPLIT_TENSORS_COUNT) != total {
                return Err(bad(
                    &p,
                    format!("{KEY_SPLIT_TENSORS_COUNT} differs from the first part's"),
                ));
            }
            for mut t in h.tensors {
                if self.index.contains_key(&t.name) {
                    return Err(bad(
                        &p,
                        format!("tensor {} is also in an earlier part", t.name),
                    ));
                }
                t.split = i as u16;
                self.index.insert(t.name.clone(), self.header.tensors.len());
                self.header.tensors.push(t);
            }
            self.other_splits.push((p, bytes, h.data_offset));
        }
        if let Some(total) = total {
            if total != self.header.tensors.len() as i64 {
                return Err(bad(
                    &self.path,
                    format!(
                        "{KEY_SPLIT_TENSORS_COUNT} = {total}, but the {count} parts hold {} tensors",
                        self.header.tensors.len()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Number of files the model is stored in (1 unless split).
    pub fn split_count(&self) -> usize {
        1 + self.other_splits.len()
    }

    /// Paths of every part (just `path` unless split).
    pub fn split_paths(&self) -> Vec<&Path> {
        std::iter::once(self.path.as_path())
            .chain(self.other_splits.iter().map(|(p, _, _)| p.as_path()))
            .collect()
    }

    /// Parse a GGUF held in memory (tests, fuzzing).
    pub fn from_vec(path: impl AsRef<Path>, bytes: Vec<u8>) -> Result<GgufFile, GgufError> {
        Self::from_bytes_inner(path.as_ref().to_path_buf(), Bytes::Owned(bytes))
    }

    fn from_bytes_inner(path: PathBuf, bytes: Bytes) -> Result<GgufFile, GgufError> {
        let buf: &[u8] = match &bytes {
            Bytes::Mmap(m) => m,
            Bytes::Owned(v) => v,
        };
        let header = parse_header(buf, &path)?;
        let index = header
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(GgufFile {
            path,
            header,
            bytes,
            index,
            other_splits: Vec::new(),
        })
    }

    pub fn bytes(&self) -> &[u8] {
        match &self.bytes {
            Bytes::Mmap(m) => m,
            Bytes::Owned(v) => v,
        }
    }

    pub fn tensors(&self) -> &[TensorInfo] {
        &self.header.tensors
    }

    pub fn kvs(&self) -> &[(String, Value)] {
        &self.header.kvs
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.index.get(name).map(|&i| &self.header.tensors[i])
    }

    /// Let the OS drop the resident pages of a tensor read once (quantize visits each tensor
    /// once: without this the whole mapped model stays in the process's RSS). Only a hint: the
    /// bytes stay readable, re-read from the file on the next access.
    pub fn release_tensor_pages(&self, t: &TensorInfo) {
        let (_, start) = self.tensor_location(t);
        let bytes = if t.split == 0 {
            &self.bytes
        } else {
            match self.other_splits.get(t.split as usize - 1) {
                Some((_, b, _)) => b,
                None => return,
            }
        };
        #[cfg(unix)]
        if let Bytes::Mmap(m) = bytes {
            // SAFETY: a read-only private mapping of a file nobody writes (see map_file):
            // MADV_DONTNEED drops clean pages only, and the next access faults the same bytes
            // back in from the file, so every outstanding slice keeps its contents.
            let _ = unsafe {
                m.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    start,
                    t.n_bytes as usize,
                )
            };
        }
        #[cfg(not(unix))]
        let _ = (bytes, start);
    }

    /// The tensor's stored bytes (bounds were checked at open).
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        let (bytes, start) = self.tensor_location(t);
        &bytes[start..start + t.n_bytes as usize]
    }

    /// All bytes of part `split` of the model (0: the first or only file).
    pub fn split_bytes(&self, split: u16) -> &[u8] {
        match split {
            0 => self.bytes(),
            i => bytes_of(&self.other_splits[i as usize - 1].1),
        }
    }

    /// The bytes of the file holding `t` (the part of a split model) and the tensor's
    /// absolute offset in them.
    pub fn tensor_location(&self, t: &TensorInfo) -> (&[u8], usize) {
        match t.split {
            0 => (self.bytes(), (self.header.data_offset + t.offset) as usize),
            i => {
                let (_, b, data_offset) = &self.other_splits[i as usize - 1];
                (bytes_of(b), (data_offset + t.offset) as usize)
            }
        }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.header
            .kvs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    fn missing(&self, key: &str, want: &str) -> GgufError {
        match self.get(key) {
            None => GgufError::MissingKey {
                path: self.path.clone(),
                key: key.to_string(),
            },
            Some(v) => GgufError::WrongKeyType {
                path: self.path.clone(),
                key: key.to_string(),
                want: want.to_string(),
                got: v.value_type().name().to_string(),
            },
        }
    }

    /// An integer key of any integer type.
    pub fn get_int(&self, key: &str) -> Result<i64, GgufError> {
        self.get(key)
            .and_then(|v| v.as_i64())
            .ok_or_else(|| self.missing(key, "integer"))
    }

    pub fn get_f64(&self, key: &str) -> Result<f64, GgufError> {
        self.get(key)
            .and_then(|v| v.as_f64())
            .ok_or_else(|| self.missing(key, "number"))
    }

    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        self.get(key)
            .and_then(|v| v.as_str())
            .ok_or_else(|| self.missing(key, "string"))
    }

    pub fn get_bool(&self, key: &str) -> Result<bool, GgufError> {
        self.get(key)
            .and_then(|v| v.as_bool())
            .ok_or_else(|| self.missing(key, "bool"))
    }

    /// A tensor that must exist.
    pub fn require_tensor(&self, name: &str) -> Result<&TensorInfo, GgufError> {
        self.tensor(name).ok_or_else(|| GgufError::MissingTensor {
            path: self.path.clone(),
            name: name.to_string(),
        })
    }
}
