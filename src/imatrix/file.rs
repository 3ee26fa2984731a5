//! Importance-matrix files (SPEC §4.3, §5): llama.cpp's GGUF imatrix and the legacy `.dat`.
//!
//! One in-memory form, [`Imatrix`], holds either kind:
//! - **GGUF** (`format == ImatrixFormat::Gguf`): per entry the raw Σx² per column (`in_sum2`),
//!   optionally the raw Σx (`in_sum`, wquant's extension as in llama.cpp PR #14891), and the
//!   number of token rows accumulated per matrix (`counts`, one per expert).
//! - **Legacy** (`format == ImatrixFormat::Legacy`): exactly what a `.dat` stores: `in_sum2`
//!   holds the stored values (mean·ncall) and `counts` holds the single `ncall`. This is how
//!   llama.cpp's `common_imatrix_load` keeps it too, so `importance()` reproduces llama-quantize
//!   for both kinds. To merge a legacy file into token-count form use `merge::Collector`.

use crate::gguf::{GgmlType, GgufFile, TensorSpec, Value, ValueType};
use anyhow::{anyhow, bail, Context, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// A GGUF file's KVs and its tensors with their bytes, as `gguf::write` takes them.
pub type GgufParts = (Vec<(String, Value)>, Vec<(TensorSpec, Vec<u8>)>);

pub const KEY_DATASETS: &str = "imatrix.datasets";
pub const KEY_CHUNK_COUNT: &str = "imatrix.chunk_count";
pub const KEY_CHUNK_SIZE: &str = "imatrix.chunk_size";
pub const SUFFIX_IN_SUM2: &str = ".in_sum2";
pub const SUFFIX_COUNTS: &str = ".counts";
pub const SUFFIX_IN_SUM: &str = ".in_sum";

/// Which file layout the data came from; it decides how `counts` are to be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImatrixFormat {
    /// Raw sums and token counts per matrix.
    Gguf,
    /// Legacy `.dat`: values are mean·ncall, `counts == [ncall]` (in chunks, not tokens).
    Legacy,
}

/// Statistics of one weight matrix (or one 3-D expert tensor: `counts.len()` experts).
#[derive(Clone, Debug, PartialEq)]
pub struct ImatrixEntry {
    /// Σx² per input column, matrix after matrix (`counts.len()` blocks of ne0 values).
    pub in_sum2: Vec<f32>,
    /// Σx per input column (same layout as `in_sum2`), when the file has `<name>.in_sum`.
    pub in_sum: Option<Vec<f32>>,
    /// Token rows accumulated per matrix (GGUF), or `[ncall]` (legacy).
    pub counts: Vec<i64>,
}

impl ImatrixEntry {
    /// A zeroed entry for `n_mat` matrices of `ne0` columns.
    pub fn zeros(ne0: usize, n_mat: usize, with_in_sum: bool) -> ImatrixEntry {
        ImatrixEntry {
            in_sum2: vec![0.0; ne0 * n_mat],
            in_sum: with_in_sum.then(|| vec![0.0; ne0 * n_mat]),
            counts: vec![0; n_mat],
        }
    }
    /// Columns per matrix.
    pub fn ne0(&self) -> usize {
        if self.counts.is_empty() {
            0
        } else {
            self.in_sum2.len() / self.counts.len()
        }
    }
    pub fn n_mat(&self) -> usize {
        self.counts.len()
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Imatrix {
    /// Entries by weight name (sorted, as llama.cpp writes them).
    pub entries: BTreeMap<String, ImatrixEntry>,
    /// Calibration data set names, oldest first.
    pub datasets: Vec<String>,
    /// Number of chunks the data was computed with (`imatrix.chunk_count`, legacy trailer).
    pub chunk_count: u32,
    /// Tokens per chunk (`imatrix.chunk_size`; 0 for legacy files, which do not store it).
    pub chunk_size: u32,
    pub format: ImatrixFormat,
}

impl Imatrix {
    /// An empty GGUF-form imatrix for chunks of `chunk_size` tokens.
    pub fn new(chunk_size: u32) -> Imatrix {
        Imatrix {
            entries: BTreeMap::new(),
            datasets: Vec::new(),
            chunk_count: 0,
            chunk_size,
            format: ImatrixFormat::Gguf,
        }
    }

    /// Load as llama-quantize does: GGUF first, else legacy `.dat`. A GGUF must carry
    /// `imatrix.datasets`, `imatrix.chunk_count` and `imatrix.chunk_size`.
    pub fn load(path: impl AsRef<Path>) -> Result<Imatrix> {
        Self::load_with(path.as_ref(), true)
    }

    /// Load as llama-imatrix's `--in-file` does: GGUF metadata keys are optional.
    pub fn load_lenient(path: impl AsRef<Path>) -> Result<Imatrix> {
        Self::load_with(path.as_ref(), false)
    }

    fn load_with(path: &Path, require_metadata: bool) -> Result<Imatrix> {
        let bytes =
            std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
        // llama.cpp tries GGUF and falls back to legacy when that fails. A file with the GGUF
        // magic that does not parse is reported as a broken GGUF (a clearer error than the
        // garbage a legacy parse of it would give).
        let im = if bytes.starts_with(crate::gguf::GGUF_MAGIC) {
            let g = GgufFile::from_vec(path, bytes)?;
            Self::from_gguf(&g, require_metadata)?
        } else {
            Self::from_dat(path, &bytes)?
        };
        im.check_values(path)?;
        Ok(im)
    }

    /// Sums of squares and counts are ≥ 0 and every value is finite: anything else cannot come
    /// from a collection and would turn into NaN importances.
    pub fn check_values(&self, path: &Path) -> Result<()> {
        let p = path.display();
        for (name, e) in &self.entries {
            if let Some(i) = e.in_sum2.iter().position(|v| !(v.is_finite() && *v >= 0.0)) {
                bail!(
                    "{p}: entry {name}: Σx² value {} at index {i} is not a finite number ≥ 0",
                    e.in_sum2[i]
                );
            }
            if let Some(s) = &e.in_sum {
                if let Some(i) = s.iter().position(|v| !v.is_finite()) {
                    bail!(
                        "{p}: entry {name}: Σx value {} at index {i} is not finite",
                        s[i]
                    );
                }
            }
            if let Some(i) = e.counts.iter().position(|&c| c < 0) {
                bail!(
                    "{p}: entry {name}: count {} of matrix {i} is negative",
                    e.counts[i]
                );
            }
        }
        Ok(())
    }

    /// Read the GGUF form (common_imatrix_load): `<name>.in_sum2` / `<name>.counts` pairs (F32),
    /// plus wquant's optional `<name>.in_sum`; other tensors are ignored.
    pub fn from_gguf(g: &GgufFile, require_metadata: bool) -> Result<Imatrix> {
        let p = g.path.display();
        if g.tensors().is_empty() {
            bail!("{p}: no data in imatrix file (no tensors)");
        }
        let mut datasets = Vec::new();
        if let Some(Value::Array(ValueType::String, items)) = g.get(KEY_DATASETS) {
            for v in items {
                datasets.push(
                    String::from_utf8_lossy(match v {
                        Value::String(b) => b,
                        _ => unreachable!("string array holds strings"),
                    })
                    .into_owned(),
                );
            }
        }
        let u32_key = |key: &str| -> Result<Option<u32>> {
            match g.get(key) {
                None => Ok(None),
                Some(Value::U32(v)) => Ok(Some(*v)),
                Some(v) => bail!(
                    "{p}: key {key} has type {}, expected u32",
                    v.value_type().name()
                ),
            }
        };
        let chunk_count = u32_key(KEY_CHUNK_COUNT)?;
        let chunk_size = u32_key(KEY_CHUNK_SIZE)?;
        let has_metadata =
            g.get(KEY_DATASETS).is_some() && chunk_count.is_some() && chunk_size.is_some();
        if require_metadata && !has_metadata {
            bail!(
                "{p}: missing imatrix metadata (needs {KEY_DATASETS}, {KEY_CHUNK_COUNT} and \
                 {KEY_CHUNK_SIZE})"
            );
        }

        #[derive(Default)]
        struct Parts<'a> {
            in_sum2: Option<&'a crate::gguf::TensorInfo>,
            counts: Option<&'a crate::gguf::TensorInfo>,
            in_sum: Option<&'a crate::gguf::TensorInfo>,
        }
        let mut parts: BTreeMap<&str, Parts> = BTreeMap::new();
        for t in g.tensors() {
            let n = t.name.as_str();
            if let Some(base) = n.strip_suffix(SUFFIX_IN_SUM2) {
                parts.entry(base).or_default().in_sum2 = Some(t);
            } else if let Some(base) = n.strip_suffix(SUFFIX_COUNTS) {
                parts.entry(base).or_default().counts = Some(t);
            } else if let Some(base) = n.strip_suffix(SUFFIX_IN_SUM) {
                parts.entry(base).or_default().in_sum = Some(t);
            }
        }
        let read_f32 = |t: &crate::gguf::TensorInfo| -> Result<Vec<f32>> {
            if t.ggml_type != GgmlType::F32 {
                bail!(
                    "{p}: tensor {} has type {}, expected F32",
                    t.name,
                    t.ggml_type.name()
                );
            }
            Ok(g.tensor_data(t)
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect())
        };
        let mut entries = BTreeMap::new();
        for (name, pt) in parts {
            let (Some(s2), Some(c)) = (pt.in_sum2, pt.counts) else {
                // An in_sum without its pair is wquant's extension only: same rule.
                bail!("{p}: mismatched sums and counts for {name} (needs both {name}{SUFFIX_IN_SUM2} and {name}{SUFFIX_COUNTS})");
            };
            let in_sum2 = read_f32(s2)?;
            let raw_counts = read_f32(c)?;
            if let Some(v) = raw_counts.iter().find(|v| !v.is_finite()) {
                bail!("{p}: tensor {}: count {v} is not finite", c.name);
            }
            let counts: Vec<i64> = raw_counts
                .into_iter()
                // lround: half away from zero, as f32::round does.
                .map(|v| v.round() as i64)
                .collect();
            if counts.is_empty() || in_sum2.len() % counts.len() != 0 {
                bail!(
                    "{p}: tensor {}: {} sums do not split into {} matrices",
                    s2.name,
                    in_sum2.len(),
                    counts.len()
                );
            }
            let in_sum = match pt.in_sum {
                None => None,
                Some(t) => {
                    let v = read_f32(t)?;
                    if v.len() != in_sum2.len() {
                        bail!(
                            "{p}: tensor {} has {} values but {} has {}",
                            t.name,
                            v.len(),
                            s2.name,
                            in_sum2.len()
                        );
                    }
                    Some(v)
                }
            };
            entries.insert(
                name.to_string(),
                ImatrixEntry {
                    in_sum2,
                    in_sum,
                    counts,
                },
            );
        }
        if entries.is_empty() {
            bail!(
                "{p}: not an imatrix file: none of its {} tensors is a <name>{SUFFIX_IN_SUM2} / \
                 <name>{SUFFIX_COUNTS} pair",
                g.tensors().len()
            );
        }
        Ok(Imatrix {
            entries,
            datasets,
            chunk_count: chunk_count.unwrap_or(0),
            chunk_size: chunk_size.unwrap_or(0),
            format: ImatrixFormat::Gguf,
        })
    }

    /// Read the legacy `.dat` layout (SPEC §5.2; the trailer is optional).
    pub fn from_dat(path: &Path, bytes: &[u8]) -> Result<Imatrix> {
        let p = path.display();
        let mut pos = 0usize;
        let i32_at = |pos: &mut usize, what: &dyn Fn() -> String| -> Result<i32> {
            let b = bytes
                .get(*pos..*pos + 4)
                .ok_or_else(|| anyhow!("{p}: truncated legacy imatrix reading {}", what()))?;
            *pos += 4;
            Ok(i32::from_le_bytes(b.try_into().unwrap()))
        };
        let n_entries = i32_at(&mut pos, &|| "the entry count".into())
            .with_context(|| format!("{p}: neither a GGUF nor a legacy imatrix file"))?;
        if n_entries < 1 {
            bail!("{p}: no data in legacy imatrix file (entry count {n_entries})");
        }
        let mut entries = BTreeMap::new();
        for i in 0..n_entries {
            let len = i32_at(&mut pos, &|| format!("the name length of entry {}", i + 1))?;
            if len < 0 || pos + len as usize > bytes.len() {
                bail!(
                    "{p}: failed reading name for entry {} (length {len})",
                    i + 1
                );
            }
            let raw = &bytes[pos..pos + len as usize];
            pos += len as usize;
            // llama.cpp builds the name from a C string: it ends at the first NUL.
            let raw = raw.split(|&b| b == 0).next().unwrap_or(&[]);
            let name = String::from_utf8_lossy(raw).into_owned();
            let ncall = i32_at(&mut pos, &|| format!("ncall of entry {name}"))?;
            let nval = i32_at(&mut pos, &|| format!("nval of entry {name}"))?;
            if nval < 1 {
                bail!("{p}: entry {name}: number of values is {nval}, needs at least 1");
            }
            let n_bytes = nval as usize * 4;
            let data = bytes.get(pos..pos + n_bytes).ok_or_else(|| {
                anyhow!("{p}: entry {name}: {nval} values run past the end of the file")
            })?;
            pos += n_bytes;
            let in_sum2 = data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            // Like llama.cpp's std::map, a repeated name keeps the last data.
            entries.insert(
                name,
                ImatrixEntry {
                    in_sum2,
                    in_sum: None,
                    counts: vec![ncall as i64],
                },
            );
        }
        let mut chunk_count = 0u32;
        let mut datasets = Vec::new();
        if pos < bytes.len() {
            if let Some(b) = bytes.get(pos..pos + 4) {
                chunk_count = i32::from_le_bytes(b.try_into().unwrap()).max(0) as u32;
                pos += 4;
                if let Some(b) = bytes.get(pos..pos + 4) {
                    let len = i32::from_le_bytes(b.try_into().unwrap());
                    pos += 4;
                    if len > 0 {
                        if let Some(name) = bytes.get(pos..pos + len as usize) {
                            let name = name.split(|&b| b == 0).next().unwrap_or(&[]);
                            datasets.push(String::from_utf8_lossy(name).into_owned());
                        }
                    }
                }
            }
        }
        Ok(Imatrix {
            entries,
            datasets,
            chunk_count,
            chunk_size: 0,
            format: ImatrixFormat::Legacy,
        })
    }

    /// Per-column importance of weight `name` as llama-quantize computes it (SPEC §4.3), or
    /// None when the file has no such entry.
    ///
    /// - GGUF: per matrix j, `in_sum2 / (f32)count_j`; a matrix with count 0 gets 1.0.
    /// - Legacy: `stored / (f32)ncall` when ncall > 0, else the stored values.
    ///
    /// `prior_weight` W > 0 adds a pseudo-count prior (wquant's `--prior-weight`):
    /// `(in_sum2 + W) / (count + W)` per column, in f32. It is the posterior mean when W
    /// pseudo-tokens with x² = 1 are added to every matrix, so rarely seen matrices (MoE
    /// experts with few tokens) are pulled toward equal weights, and count 0 still gives 1.0
    /// exactly. For legacy files the counts are ncall (chunks), so W counts chunks there.
    /// W = 0 is llama.cpp's behaviour, value for value.
    pub fn importance(&self, name: &str, prior_weight: f32) -> Option<Vec<f32>> {
        let e = self.entries.get(name)?;
        let w = prior_weight;
        let mut out = Vec::with_capacity(e.in_sum2.len());
        match self.format {
            ImatrixFormat::Gguf => {
                let ne0 = e.ne0();
                for (j, &c) in e.counts.iter().enumerate() {
                    let sums = &e.in_sum2[j * ne0..(j + 1) * ne0];
                    let count = c as f32;
                    if w > 0.0 {
                        out.extend(sums.iter().map(|&s| (s + w) / (count + w)));
                    } else if count > 0.0 {
                        out.extend(sums.iter().map(|&s| s / count));
                    } else {
                        out.extend(std::iter::repeat_n(1.0f32, ne0));
                    }
                }
            }
            ImatrixFormat::Legacy => {
                let ncall = e.counts.first().copied().unwrap_or(0);
                let nc = ncall as f32;
                if w > 0.0 {
                    out.extend(e.in_sum2.iter().map(|&s| (s + w) / (nc + w)));
                } else if ncall > 0 {
                    out.extend(e.in_sum2.iter().map(|&s| s / nc));
                } else {
                    out.extend_from_slice(&e.in_sum2);
                }
            }
        }
        Some(out)
    }

    fn require_gguf_form(&self, what: &str) -> Result<()> {
        if self.format == ImatrixFormat::Legacy {
            bail!(
                "{what}: this imatrix holds legacy .dat data; merge it into a collector \
                 (imatrix::merge) to convert it to token counts first"
            );
        }
        Ok(())
    }

    /// The GGUF KVs and tensors llama-imatrix writes (SPEC §5.1): entries in byte order of
    /// their names, `<name>.in_sum2` [ne0, n_mat], `<name>.counts` [1, n_mat], then
    /// `<name>.in_sum` when present (where llama.cpp PR #14891 puts it). Trailing dims of 1 are
    /// dropped on disk, so dense entries are 1-D, as in llama.cpp's files.
    pub fn to_gguf_parts(&self) -> GgufParts {
        let kvs = vec![
            ("general.type".to_string(), Value::str("imatrix")),
            (KEY_DATASETS.to_string(), Value::str_array(&self.datasets)),
            (KEY_CHUNK_COUNT.to_string(), Value::U32(self.chunk_count)),
            (KEY_CHUNK_SIZE.to_string(), Value::U32(self.chunk_size)),
        ];
        let f32_bytes = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
        let mut tensors = Vec::new();
        for (name, e) in &self.entries {
            let nval = e.in_sum2.len() as u64;
            let nmat = e.counts.len() as u64;
            if nval == 0 || nmat == 0 {
                continue;
            }
            let counts: Vec<f32> = e.counts.iter().map(|&c| c as f32).collect();
            tensors.push((
                TensorSpec::new(
                    format!("{name}{SUFFIX_IN_SUM2}"),
                    &[nval / nmat, nmat],
                    GgmlType::F32,
                ),
                f32_bytes(&e.in_sum2),
            ));
            tensors.push((
                TensorSpec::new(format!("{name}{SUFFIX_COUNTS}"), &[1, nmat], GgmlType::F32),
                f32_bytes(&counts),
            ));
            if let Some(s) = &e.in_sum {
                tensors.push((
                    TensorSpec::new(
                        format!("{name}{SUFFIX_IN_SUM}"),
                        &[s.len() as u64 / nmat, nmat],
                        GgmlType::F32,
                    ),
                    f32_bytes(s),
                ));
            }
        }
        (kvs, tensors)
    }

    /// Write the GGUF imatrix atomically (NAME.tmp, then rename).
    pub fn save_gguf(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        self.require_gguf_form(&path.display().to_string())?;
        let (kvs, tensors) = self.to_gguf_parts();
        crate::gguf::write_gguf(path, &kvs, &tensors)?;
        Ok(())
    }

    /// The legacy `.dat` bytes llama-imatrix `--output-format dat` writes (SPEC §5.2), using
    /// `self.chunk_size` for ncall and the last dataset as the trailer's file name.
    pub fn to_dat_bytes(&self) -> Result<Vec<u8>> {
        if self.chunk_size == 0 {
            bail!("cannot write a legacy imatrix: chunk size is 0");
        }
        let chunk_size = self.chunk_size as i64;
        let stored: Vec<(&String, &ImatrixEntry)> = self
            .entries
            .iter()
            .filter(|(_, e)| !e.counts.is_empty() && e.counts.iter().any(|&c| c != 0))
            .collect();
        if stored.is_empty() {
            bail!("cannot write a legacy imatrix: no matrix has data (every count is 0)");
        }
        if let Some((name, _)) = stored.iter().find(|(n, _)| n.as_bytes().contains(&0)) {
            bail!(
                "cannot write a legacy imatrix: entry name {name:?} holds a NUL byte, which the \
                 format's C-string names cut short"
            );
        }
        let mut out = Vec::new();
        out.extend_from_slice(&(stored.len() as i32).to_le_bytes());
        for (name, e) in stored {
            out.extend_from_slice(&(name.len() as i32).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            let max = e.counts.iter().copied().max().unwrap_or(0);
            // Ceiling division, as llama.cpp does, so that partial chunks do not give 0.
            let ncall = ((max + (chunk_size - 1)) / chunk_size) as i32;
            out.extend_from_slice(&ncall.to_le_bytes());
            let nval = e.in_sum2.len();
            out.extend_from_slice(&(nval as i32).to_le_bytes());
            let ne0 = e.ne0();
            for (i, &v) in e.in_sum2.iter().enumerate() {
                let mut count = e.counts[i / ne0] as f32;
                let mut value = v;
                if count == 0.0 {
                    // llama.cpp stores 1 (times ncall) for matrices that saw no data.
                    value = 1.0;
                    count = 1.0;
                }
                out.extend_from_slice(&((value / count) * ncall as f32).to_le_bytes());
            }
        }
        out.extend_from_slice(&(self.chunk_count as i32).to_le_bytes());
        match self.datasets.last() {
            Some(d) => {
                out.extend_from_slice(&(d.len() as i32).to_le_bytes());
                out.extend_from_slice(d.as_bytes());
            }
            None => out.extend_from_slice(&0i32.to_le_bytes()),
        }
        Ok(out)
    }

    /// Write the legacy `.dat` atomically.
    pub fn save_dat(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let p = path.display().to_string();
        self.require_gguf_form(&p)?;
        let bytes = self.to_dat_bytes().with_context(|| p.clone())?;
        crate::util::write_atomic(path, &bytes).with_context(|| format!("{p}: cannot write"))?;
        Ok(())
    }

    /// Save as `.dat` when `dat` is true, else GGUF.
    pub fn save(&self, path: impl AsRef<Path>, dat: bool) -> Result<()> {
        if dat {
            self.save_dat(path)
        } else {
            self.save_gguf(path)
        }
    }

    /// Largest count over every matrix of every entry (GGUF form).
    pub fn max_count(&self) -> i64 {
        self.entries
            .values()
            .flat_map(|e| e.counts.iter().copied())
            .max()
            .unwrap_or(0)
    }
}
