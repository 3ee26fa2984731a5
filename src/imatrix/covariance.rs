//! Input covariances for GPTQ-style quantization (`imatrix --covariance FILE`,
//! `quantize --gptq`): H = Σ x·xᵀ over the tokens of every *distinct* matmul input (q/k/v share
//! the attention input, gate/up the FFN input; one per expert for MoE), collected during the
//! imatrix's forward pass by [`CovarianceCollector`] and stored as its own GGUF.
//!
//! Accumulators stay on the device for the whole run, one `[cols, cols]` f32 matrix per input
//! (per expert): 3·n_embd² + n_ff² floats per layer of a dense model (SmolLM2-135M: 3.4 M floats,
//! 13 MiB a layer, 400 MiB for its 30 layers). Each sequence of a batch is added by its own
//! `Backend::gram_add`, in chunk order, so the sums do not depend on the batch size. The file is
//! written one matrix at a time (one download, one matrix in host memory), to `NAME.tmp` then
//! renamed.
//!
//! File layout: `general.type = "covariance"`, `covariance.datasets`, `covariance.chunk_count`,
//! `covariance.chunk_size`; per input a tensor `<first weight>.covariance` (f32, `[cols, cols]`,
//! or `[cols, cols, n_expert]`), `<first weight>.counts` (tokens per expert, f32) and a key
//! `covariance.weights.<first weight>` listing every weight that multiplies that input. The
//! diagonal of H is the imatrix's Σx² of those weights (the same tokens).

use crate::backend::Backend;
use crate::gguf::{GgmlType, GgufFile, TensorSpec, Value, ValueType};
use crate::model::observer::{MatmulObserver, SeqRows};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const KEY_DATASETS: &str = "covariance.datasets";
pub const KEY_CHUNK_COUNT: &str = "covariance.chunk_count";
pub const KEY_CHUNK_SIZE: &str = "covariance.chunk_size";
/// Prefix of the per-input keys listing the weights an input serves.
pub const KEY_WEIGHTS_PREFIX: &str = "covariance.weights.";
pub const SUFFIX_COVARIANCE: &str = ".covariance";
pub const SUFFIX_COUNTS: &str = ".counts";

/// One distinct matmul input: its weights, width, and one accumulator per expert.
pub struct CovarianceSet<T> {
    /// Every weight that multiplies this input (graph order); the first names the tensor.
    pub names: Vec<String>,
    pub cols: usize,
    /// One `[cols, cols]` accumulator per expert (one for a dense input), made on first use.
    pub acc: Vec<Option<T>>,
    /// Tokens added, per expert.
    pub counts: Vec<u64>,
}

/// A `MatmulObserver` that adds Σ x·xᵀ of every distinct input, kept across passes.
pub struct CovarianceCollector<T> {
    pub sets: Vec<CovarianceSet<T>>,
    /// Weight name → its set.
    pub by_name: BTreeMap<String, usize>,
    /// Sequences in the pass being observed, and tokens per sequence (set before each pass).
    pub n_seq: usize,
    pub seq_len: usize,
    /// The first problem met (an observer cannot fail), reported after the pass.
    pub error: Option<String>,
}

impl<T> Default for CovarianceCollector<T> {
    fn default() -> Self {
        CovarianceCollector {
            sets: Vec::new(),
            by_name: BTreeMap::new(),
            n_seq: 1,
            seq_len: 0,
            error: None,
        }
    }
}

/// Weights that are never quantized with a covariance (the MoE router stays F32).
fn skipped(names: &[&str]) -> bool {
    names.iter().all(|n| n.contains("ffn_gate_inp"))
}

impl<T> CovarianceCollector<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Set for a pass of `n_seq` sequences of `seq_len` tokens.
    pub fn begin_pass(&mut self, n_seq: usize, seq_len: usize) {
        self.n_seq = n_seq.max(1);
        self.seq_len = seq_len;
    }

    /// Device bytes the accumulators hold.
    pub fn bytes(&self) -> u64 {
        self.sets
            .iter()
            .map(|s| {
                (s.cols * s.cols * 4) as u64 * s.acc.iter().filter(|a| a.is_some()).count() as u64
            })
            .sum()
    }

    fn set_index<B: Backend<Tensor = T>>(
        &mut self,
        b: &B,
        names: &[&str],
        n_expert: usize,
        cols: usize,
    ) -> Option<usize> {
        if let Some(&i) = names.iter().find_map(|n| self.by_name.get(*n)) {
            if self.sets[i].cols != cols {
                self.error.get_or_insert(format!(
                    "internal: input of {} changed width ({} → {cols})",
                    names[0], self.sets[i].cols
                ));
                return None;
            }
            return Some(i);
        }
        // One accumulator is one buffer binding on a GPU.
        let bytes = (cols * cols * 4) as u64;
        if let Some(m) = b.device_memory() {
            if bytes > m.max_binding_bytes {
                self.error.get_or_insert(format!(
                    "--covariance: the input of {} is {cols} wide; its {cols}×{cols} f32 \
                     covariance ({bytes} bytes) exceeds the adapter's largest buffer binding \
                     ({} bytes); use --device cpu",
                    names[0], m.max_binding_bytes
                ));
                return None;
            }
        }
        let n_expert = n_expert.max(1);
        self.sets.push(CovarianceSet {
            names: names.iter().map(|s| s.to_string()).collect(),
            cols,
            acc: (0..n_expert).map(|_| None).collect(),
            counts: vec![0; n_expert],
        });
        let i = self.sets.len() - 1;
        for n in names {
            self.by_name.insert(n.to_string(), i);
        }
        Some(i)
    }

    /// Add rows `runs` (row0, n) of `x` to expert `e` of set `i`, one `gram_add` per run.
    fn add<B: Backend<Tensor = T>>(
        &mut self,
        b: &B,
        x: &T,
        i: usize,
        e: usize,
        runs: &[(usize, usize)],
    ) {
        let cols = self.sets[i].cols;
        let acc = self.sets[i].acc[e]
            .get_or_insert_with(|| b.upload(&vec![0f32; cols * cols], cols, cols));
        for &(row0, n) in runs {
            if n > 0 {
                b.gram_add(x, row0, n, acc);
            }
        }
        self.sets[i].counts[e] += runs.iter().map(|r| r.1 as u64).sum::<u64>();
    }

    /// Write the covariance GGUF (atomically), one accumulator downloaded at a time.
    pub fn save<B: Backend<Tensor = T>>(
        &self,
        b: &B,
        path: &Path,
        datasets: &[String],
        chunk_count: u32,
        chunk_size: u32,
    ) -> Result<()> {
        let mut kvs = vec![
            ("general.type".to_string(), Value::str("covariance")),
            (KEY_DATASETS.to_string(), Value::str_array(datasets)),
            (KEY_CHUNK_COUNT.to_string(), Value::U32(chunk_count)),
            (KEY_CHUNK_SIZE.to_string(), Value::U32(chunk_size)),
        ];
        let mut specs = Vec::new();
        for s in &self.sets {
            let base = &s.names[0];
            kvs.push((
                format!("{KEY_WEIGHTS_PREFIX}{base}"),
                Value::str_array(&s.names),
            ));
            let c = s.cols as u64;
            let dims: Vec<u64> = if s.acc.len() > 1 {
                vec![c, c, s.acc.len() as u64]
            } else {
                vec![c, c]
            };
            specs.push(TensorSpec::new(
                format!("{base}{SUFFIX_COVARIANCE}"),
                &dims,
                GgmlType::F32,
            ));
            specs.push(TensorSpec::new(
                format!("{base}{SUFFIX_COUNTS}"),
                &[s.acc.len() as u64],
                GgmlType::F32,
            ));
        }
        let mut w = crate::gguf::GgufWriter::create(path, &kvs, specs)
            .with_context(|| format!("creating {}", path.display()))?;
        for s in &self.sets {
            for a in &s.acc {
                let v = match a {
                    Some(t) => b.download(t),
                    None => vec![0f32; s.cols * s.cols],
                };
                if let Some(k) = v.iter().position(|x| !x.is_finite()) {
                    bail!(
                        "--covariance: non-finite sum {} in the input of {} at [{}, {}]",
                        v[k],
                        s.names[0],
                        k / s.cols,
                        k % s.cols
                    );
                }
                w.write_tensor(&f32_bytes(&v))?;
            }
            let counts: Vec<f32> = s.counts.iter().map(|&c| c as f32).collect();
            w.write_tensor(&f32_bytes(&counts))?;
        }
        w.finish()?;
        Ok(())
    }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

impl<B: Backend> MatmulObserver<B> for CovarianceCollector<B::Tensor> {
    fn dense(&mut self, b: &B, x: &B::Tensor, names: &[&str]) {
        if skipped(names) {
            return;
        }
        let (rows, cols) = b.shape(x);
        let Some(i) = self.set_index(b, names, 1, cols) else {
            return;
        };
        let runs: Vec<(usize, usize)> = if self.n_seq <= 1 || self.seq_len == 0 {
            vec![(0, rows)]
        } else {
            (0..rows / self.seq_len)
                .map(|j| (j * self.seq_len, self.seq_len))
                .collect()
        };
        self.add(b, x, i, 0, &runs);
    }

    fn expert(
        &mut self,
        b: &B,
        x: &B::Tensor,
        names: &[&str],
        n_expert: usize,
        expert: usize,
        pieces: &[SeqRows],
    ) {
        let (rows, cols) = b.shape(x);
        let Some(i) = self.set_index(b, names, n_expert, cols) else {
            return;
        };
        let runs: Vec<(usize, usize)> = if pieces.is_empty() {
            vec![(0, rows)]
        } else {
            pieces.iter().map(|p| (p.row0, p.n)).collect()
        };
        self.add(b, x, i, expert, &runs);
    }

    /// The output head is not collected (a model's own output.weight would need an n_embd²
    /// matrix of its own; tied embeddings are never GPTQ'd).
    fn output_head(&mut self, _b: &B, _x: &B::Tensor, _name: &str) {}
}

/// Two observers shown the same inputs (the imatrix statistics and the covariance).
pub struct BothObservers<'a, B: Backend> {
    pub first: &'a mut dyn MatmulObserver<B>,
    pub second: &'a mut dyn MatmulObserver<B>,
}

impl<B: Backend> MatmulObserver<B> for BothObservers<'_, B> {
    fn dense(&mut self, b: &B, x: &B::Tensor, names: &[&str]) {
        self.first.dense(b, x, names);
        self.second.dense(b, x, names);
    }

    fn expert(
        &mut self,
        b: &B,
        x: &B::Tensor,
        names: &[&str],
        n_expert: usize,
        expert: usize,
        pieces: &[SeqRows],
    ) {
        self.first.expert(b, x, names, n_expert, expert, pieces);
        self.second.expert(b, x, names, n_expert, expert, pieces);
    }

    fn output_head(&mut self, b: &B, x: &B::Tensor, name: &str) {
        self.first.output_head(b, x, name);
        self.second.output_head(b, x, name);
    }
}

/// A covariance file opened for quantization: weight name → its input's matrix.
pub struct CovarianceFile {
    pub path: PathBuf,
    file: GgufFile,
    /// Weight name → (covariance tensor name, counts tensor name).
    weights: BTreeMap<String, String>,
    pub datasets: Vec<String>,
    pub chunk_count: u32,
}

/// One weight's input covariance: per expert, `[cols, cols]` row-major f32, and its tokens.
pub struct Covariance {
    pub cols: usize,
    pub per_expert: Vec<Vec<f32>>,
    pub counts: Vec<f32>,
}

impl CovarianceFile {
    pub fn open(path: &Path) -> Result<CovarianceFile> {
        let file = GgufFile::open(path)
            .with_context(|| format!("reading covariance file {}", path.display()))?;
        let p = path.display();
        if file.get_str("general.type").ok() != Some("covariance") {
            bail!(
                "{p}: not a covariance file (general.type is not \"covariance\"); make one with \
                 `wquant imatrix --covariance FILE`"
            );
        }
        let mut weights = BTreeMap::new();
        for (k, v) in file.kvs() {
            let Some(base) = k.strip_prefix(KEY_WEIGHTS_PREFIX) else {
                continue;
            };
            let Value::Array(ValueType::String, items) = v else {
                bail!("{p}: key {k} is not an array of strings");
            };
            let tname = format!("{base}{SUFFIX_COVARIANCE}");
            if file.tensor(&tname).is_none()
                || file.tensor(&format!("{base}{SUFFIX_COUNTS}")).is_none()
            {
                bail!("{p}: key {k} names an input without tensors {tname} and its counts");
            }
            for it in items {
                if let Value::String(s) = it {
                    weights.insert(String::from_utf8_lossy(s).into_owned(), base.to_string());
                }
            }
        }
        if weights.is_empty() {
            bail!("{p}: the covariance file lists no weights");
        }
        let datasets = match file.get(KEY_DATASETS) {
            Some(Value::Array(ValueType::String, items)) => items
                .iter()
                .filter_map(|i| match i {
                    Value::String(s) => Some(String::from_utf8_lossy(s).into_owned()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        let chunk_count = file.get_int(KEY_CHUNK_COUNT).unwrap_or(0) as u32;
        Ok(CovarianceFile {
            path: path.to_path_buf(),
            file,
            weights,
            datasets,
            chunk_count,
        })
    }

    /// Every weight name the file has a covariance for.
    pub fn weight_names(&self) -> impl Iterator<Item = &str> {
        self.weights.keys().map(|s| s.as_str())
    }

    /// The input (the covariance tensor's base name) that `weight` multiplies.
    pub fn input_of(&self, weight: &str) -> Option<&str> {
        self.weights.get(weight).map(|s| s.as_str())
    }

    /// (width, experts) of the covariance of input `base`.
    pub fn find_tensor(&self, base: &str) -> Result<(usize, usize)> {
        let t = self
            .file
            .require_tensor(&format!("{base}{SUFFIX_COVARIANCE}"))?;
        Ok((t.ne(0) as usize, t.ne(2).max(1) as usize))
    }

    pub fn has(&self, weight: &str) -> bool {
        self.weights.contains_key(weight)
    }

    /// The covariance of `weight`'s input, checked: f32, square, finite, `n_expert` experts.
    pub fn get(&self, weight: &str) -> Result<Option<Covariance>> {
        let Some(base) = self.weights.get(weight) else {
            return Ok(None);
        };
        let p = self.path.display();
        let t = self
            .file
            .require_tensor(&format!("{base}{SUFFIX_COVARIANCE}"))?;
        let ct = self
            .file
            .require_tensor(&format!("{base}{SUFFIX_COUNTS}"))?;
        if t.ggml_type != GgmlType::F32 || ct.ggml_type != GgmlType::F32 {
            bail!("{p}: covariance of {weight} ({}) is not F32", t.name);
        }
        let cols = t.ne(0) as usize;
        if t.ne(1) as usize != cols || t.n_dims() > 3 {
            bail!(
                "{p}: covariance of {weight} ({}) has shape {:?}, not [cols, cols(, experts)]",
                t.name,
                t.dims
            );
        }
        let n_expert = t.ne(2).max(1) as usize;
        let to_f32 = |b: &[u8]| -> Vec<f32> {
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        };
        let all = to_f32(self.file.tensor_data(t));
        if let Some(k) = all.iter().position(|x| !x.is_finite()) {
            bail!(
                "{p}: covariance of {weight} ({}) has a non-finite value {} at element {k}",
                t.name,
                all[k]
            );
        }
        let counts = to_f32(self.file.tensor_data(ct));
        if counts.len() != n_expert {
            bail!(
                "{p}: {} has {} counts for {n_expert} experts",
                ct.name,
                counts.len()
            );
        }
        Ok(Some(Covariance {
            cols,
            per_expert: all.chunks(cols * cols).map(|c| c.to_vec()).collect(),
            counts,
        }))
    }
}
