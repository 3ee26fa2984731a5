//! `quantize --gptq --covariance FILE`: the tensors whose input has a covariance in FILE are
//! quantized with error feedback (`quant::gptq`); the others fall back to plain quantization
//! (listed in the summary). On the CPU rows go in parallel tasks (`quantize_rows_gptq`). With a
//! GPU (`--device gpu`, or `auto` on a hardware adapter) the lazy-batch update — the
//! rows × cols² part — runs on the device (`shaders/gptq_update.wgsl`), and each group's blocks
//! are quantized on the CPU, rows in parallel, between two updates ([`quantize_rows_gptq_gpu`]).

use super::{RowQuantizer, TensorRows};
use crate::backend::gpu::kernels::gptq_update::{self, Update};
use crate::backend::gpu::GpuBackend;
use crate::gguf::{GgmlType, GgufFile, Value};
use crate::imatrix::covariance::CovarianceFile;
use crate::quant::better::quantize_row_searched;
use crate::quant::better::SearchOptions;
use crate::quant::gptq::{
    act_order, prepare, quantize_rows_gptq, quantize_rows_gptq_static, static_group, FixedGrid,
    GroupPlan, Prepared, STATIC_GROUP_COLS,
};
use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// What the block quantizer inside GPTQ weighs each column's error by.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum GptqImportance {
    /// The imatrix's importance, as plain quantization (none without --imatrix).
    #[default]
    Imatrix,
    /// The covariance's diagonal over its token count (the imatrix of the covariance's run).
    Diag,
    /// 1/U_ii²: the cost of a column's error after the later columns compensate it.
    Obs,
}

impl GptqImportance {
    pub fn name(self) -> &'static str {
        match self {
            GptqImportance::Imatrix => "imatrix",
            GptqImportance::Diag => "diag",
            GptqImportance::Obs => "obs",
        }
    }
}

/// `--gptq` settings (`QuantizeParams::gptq`).
#[derive(Clone, Debug)]
pub struct GptqOptions {
    pub covariance: PathBuf,
    /// λ of H + λ·mean(diag H)·I.
    pub damp: f64,
    pub importance: GptqImportance,
    /// Re-round columns moved by in-block feedback on the block's fixed grid
    /// (`quant::gptq::FixedGrid`); off: each block as its quantizer leaves it.
    pub reround: bool,
    /// GPTQ on fixed grids in activation order (`quant::gptq::quantize_rows_gptq_static`):
    /// scales from the search on the original rows, columns by decreasing diag H.
    pub act_order: bool,
}

/// The open covariance file, checked against the model, and the factorizations of the layer
/// being quantized (q/k/v and gate/up share theirs).
pub struct GptqState {
    pub file: CovarianceFile,
    pub opts: GptqOptions,
    cache: BTreeMap<String, Arc<Factored>>,
    /// Quantized tensors that had no covariance entry (plain quantization).
    pub fallbacks: Vec<String>,
    pub n_gptq: usize,
    /// Of those, the tensors whose update ran on the GPU.
    pub n_gpu_update: usize,
}

/// "blk.N." of a tensor name (the cache keeps one layer's factorizations).
fn layer_prefix(name: &str) -> &str {
    match name.match_indices('.').nth(1) {
        Some((i, _)) if name.starts_with("blk.") => &name[..=i],
        _ => name,
    }
}

impl GptqState {
    /// Open the covariance and check it belongs to `model`: every weight it names exists, with
    /// the covariance's width as its row length.
    pub fn open(opts: &GptqOptions, model: &GgufFile) -> Result<GptqState> {
        if opts.damp.is_nan() || opts.damp < 0.0 || !opts.damp.is_finite() {
            bail!("--gptq-damp {}: must be a finite number ≥ 0", opts.damp);
        }
        let file = CovarianceFile::open(&opts.covariance)?;
        let p = opts.covariance.display();
        for w in file.weight_names() {
            let Some(t) = model.tensor(w) else {
                bail!(
                    "--covariance {p}: it has an entry for {w}, which the model does not have \
                     (a covariance of another model?)"
                );
            };
            let base = file.input_of(w).unwrap_or(w);
            let ct = file
                .find_tensor(base)
                .with_context(|| format!("--covariance {p}"))?;
            if ct.0 != t.ne(0) as usize {
                bail!(
                    "--covariance {p}: the input of {w} is {} wide in the covariance but the \
                     tensor has {} columns (a covariance of another model?)",
                    ct.0,
                    t.ne(0)
                );
            }
            if ct.1 != t.ne(2).max(1) as usize {
                bail!(
                    "--covariance {p}: {w} has {} experts but the covariance {}",
                    t.ne(2).max(1),
                    ct.1
                );
            }
        }
        Ok(GptqState {
            file,
            opts: opts.clone(),
            cache: BTreeMap::new(),
            fallbacks: Vec::new(),
            n_gptq: 0,
            n_gpu_update: 0,
        })
    }

    /// The quantizer for tensor `name` of type `t`, or None (no covariance: plain quantization,
    /// recorded in `fallbacks`; or an unquantized output type). With `gpu`, the update runs on
    /// it where the block quantizer allows ([`quantize_rows_gptq_gpu`]).
    pub fn quantizer(
        &mut self,
        name: &str,
        t: GgmlType,
        gpu: Option<Arc<super::gpu::GpuQuantizer>>,
    ) -> Result<Option<GptqQuantizer>> {
        if !t.is_quantized() {
            return Ok(None);
        }
        if self.opts.act_order && FixedGrid::of(t).is_none() {
            // Rounding element by element needs the type's grid (not the IQ lattices).
            self.fallbacks.push(name.to_string());
            return Ok(None);
        }
        let Some(base) = self.file.input_of(name).map(str::to_string) else {
            self.fallbacks.push(name.to_string());
            return Ok(None);
        };
        let prefix = layer_prefix(name).to_string();
        self.cache.retain(|k, _| layer_prefix(k) == prefix);
        let factored = match self.cache.get(&base) {
            Some(p) => p.clone(),
            None => {
                let p = self.opts.covariance.display();
                let cov = self
                    .file
                    .get(name)?
                    .with_context(|| format!("--covariance {p}: no entry for {name}"))?;
                let act = self.opts.act_order;
                let perms: Vec<Vec<usize>> = if act {
                    cov.per_expert
                        .iter()
                        .map(|h| act_order(h, cov.cols).0)
                        .collect()
                } else {
                    Vec::new()
                };
                let prepared = cov
                    .per_expert
                    .iter()
                    .enumerate()
                    .map(|(e, h)| {
                        let permuted;
                        let h = if act {
                            permuted = act_order(h, cov.cols).1;
                            &permuted[..]
                        } else {
                            &h[..]
                        };
                        prepare(h, cov.cols, self.opts.damp).with_context(|| {
                            format!(
                                "--covariance {p}: tensor {name}{}",
                                if cov.per_expert.len() > 1 {
                                    format!(", expert {e}")
                                } else {
                                    String::new()
                                }
                            )
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                let diag: Vec<Vec<f32>> = cov
                    .per_expert
                    .iter()
                    .zip(&cov.counts)
                    .map(|(h, &c)| {
                        (0..cov.cols)
                            .map(|i| h[i * cov.cols + i] / c.max(1.0))
                            .collect()
                    })
                    .collect();
                let p = Arc::new(Factored {
                    prepared,
                    perms,
                    diag,
                });
                self.cache.insert(base.clone(), p.clone());
                p
            }
        };
        self.n_gptq += 1;
        let importance = match self.opts.importance {
            GptqImportance::Imatrix => None,
            GptqImportance::Diag => Some(factored.diag.clone()),
            GptqImportance::Obs => Some(
                factored
                    .prepared
                    .iter()
                    .map(|p| p.obs_importance())
                    .collect(),
            ),
        };
        Ok(Some(GptqQuantizer {
            reround: self.opts.reround,
            factored,
            importance,
            gpu,
            used_gpu: AtomicBool::new(false),
        }))
    }

    /// The `quantize.gptq.*` metadata of the output.
    pub fn kvs(&self) -> Vec<(String, Value)> {
        let mut file = self
            .opts
            .covariance
            .to_string_lossy()
            .into_owned()
            .into_bytes();
        file.truncate(127);
        let mut kvs = vec![
            (
                "quantize.gptq.damp".to_string(),
                Value::F32(self.opts.damp as f32),
            ),
            (
                "quantize.gptq.importance".to_string(),
                Value::str(self.opts.importance.name()),
            ),
            (
                "quantize.gptq.order".to_string(),
                Value::str(if self.opts.act_order {
                    "act-static"
                } else {
                    "natural"
                }),
            ),
            (
                "quantize.gptq.covariance.file".to_string(),
                Value::String(file),
            ),
        ];
        if let Some(d) = self.file.datasets.first() {
            kvs.push((
                "quantize.gptq.covariance.dataset".to_string(),
                Value::str(d),
            ));
        }
        kvs.push((
            "quantize.gptq.covariance.chunks_count".to_string(),
            Value::U32(self.file.chunk_count),
        ));
        kvs
    }
}

/// An input's factorization per expert (of H permuted to the activation order with
/// `--gptq-act-order`, `perms` then holding each expert's order), and its covariance's diagonal
/// over the token count.
struct Factored {
    prepared: Vec<Prepared>,
    perms: Vec<Vec<usize>>,
    diag: Vec<Vec<f32>>,
}

/// One tensor's GPTQ: a factorization per expert and, unless the imatrix is used, the block
/// quantizer's importance per expert.
pub struct GptqQuantizer {
    factored: Arc<Factored>,
    importance: Option<Vec<Vec<f32>>>,
    reround: bool,
    gpu: Option<Arc<super::gpu::GpuQuantizer>>,
    /// Some rows' update ran on the GPU.
    used_gpu: AtomicBool,
}

impl GptqQuantizer {
    /// Whether the update of some of the tensor's rows ran on the GPU.
    pub fn used_gpu(&self) -> bool {
        self.used_gpu.load(Ordering::Relaxed)
    }
}

impl RowQuantizer for GptqQuantizer {
    fn accepts(&self, t: GgmlType) -> Result<bool> {
        Ok(crate::quant::can_quantize(t))
    }

    fn quantize_rows(
        &self,
        tensor: &TensorRows,
        row0: usize,
        nr: usize,
        out: &mut [u8],
    ) -> Result<()> {
        let n = tensor.ne0;
        let mut xs = vec![0f32; nr * n];
        xs.par_chunks_mut(n)
            .enumerate()
            .try_for_each(|(k, buf)| tensor.read_row(row0 + k, buf))?;
        let rb = out.len() / nr.max(1);
        let rpe = tensor.rows_per_expert.max(1);
        // Runs of rows of one expert (one factorization, one importance) at a time.
        let mut r = row0;
        while r < row0 + nr {
            let e = r / rpe;
            let end = ((e + 1) * rpe).min(row0 + nr);
            let qw = match &self.importance {
                Some(v) => Some(&v[e][..]),
                None => tensor.importance_of_row(r),
            };
            let (a, b) = (r - row0, end - row0);
            let (p, x, dst) = (
                &self.factored.prepared[e],
                &xs[a * n..b * n],
                &mut out[a * rb..b * rb],
            );
            let (t, search) = (tensor.dst_type, tensor.search);
            let at = || format!("tensor {}, rows {r}..{end}", tensor.name);
            let perm = self.factored.perms.get(e).map(|v| &v[..]);
            match (&self.gpu, perm) {
                (Some(g), _) => {
                    let b = g.backend();
                    quantize_rows_gptq_gpu(b, t, p, perm, x, dst, qw, self.reround, search)
                        .with_context(at)?;
                    self.used_gpu.store(true, Ordering::Relaxed);
                }
                (None, Some(perm)) => {
                    quantize_rows_gptq_static(t, p, perm, x, dst, qw, search).with_context(at)?
                }
                (None, None) => {
                    quantize_rows_gptq(t, p, x, dst, qw, self.reround, search).with_context(at)?
                }
            }
            r = end;
        }
        Ok(())
    }
}

/// [`quantize_rows_gptq`] with the lazy-batch update on the GPU: the rows' weights live on the
/// device in slabs of one group's columns; for each group its slab comes back, each row's
/// blocks are quantized on the CPU with the in-group feedback (`GroupPlan::quantize_group`,
/// f64, as the CPU path), and the group's errors go up to reach every later column in one
/// dispatch (f32, k in order). Where the block quantizer reads the whole row as it stands
/// (`GroupPlan::whole_row`: a legacy type's σ² with an importance, a wide search's row-level
/// weights), groups are one block and every later slab comes back with the group's: the row is
/// the values the quantized columns had when quantized followed by the later ones as updated.
///
/// With `perm` (`--gptq-act-order`; `p` factors H permuted to it) this is
/// `quant::gptq::quantize_rows_gptq_static` instead: the rows are first quantized by the search,
/// the slabs hold the columns in activation order, and each group's columns are rounded on
/// their blocks' fixed grids (`quant::gptq::static_group`).
///
/// Not the CPU path's bytes: the update is f32 on the device rather than f64, so a weight near
/// a rounding boundary can land on the other side. Conformance (`verify::gptq`) bounds the
/// difference. A row's bits depend only on its values (rows are independent, every sum has a
/// fixed order), never on how many rows go together.
#[allow(clippy::too_many_arguments)]
pub fn quantize_rows_gptq_gpu(
    gpu: &GpuBackend,
    t: GgmlType,
    p: &Prepared,
    perm: Option<&[usize]>,
    x: &[f32],
    dst: &mut [u8],
    qw: Option<&[f32]>,
    in_block_rounding: bool,
    search: SearchOptions,
) -> Result<()> {
    let n = p.cols;
    let bs = t.block_size();
    if n == 0 || !n.is_multiple_of(bs) || !x.len().is_multiple_of(n) {
        bail!(
            "gptq: {} values are not whole {n}-column rows of {t}",
            x.len()
        );
    }
    let row_bytes = n / bs * t.type_size();
    if dst.len() != x.len() / n * row_bytes {
        bail!(
            "gptq: output of {} bytes for {} rows",
            dst.len(),
            x.len() / n
        );
    }
    let plan = GroupPlan::new(t, qw, in_block_rounding, search);
    let fixed = match perm {
        Some(perm) if perm.len() == n => Some(
            FixedGrid::of(t).with_context(|| format!("gptq act-order: {t} has no fixed grid"))?,
        ),
        Some(perm) => bail!("gptq: an order of {} columns for {n}", perm.len()),
        None => None,
    };
    let whole = plan.whole_row && fixed.is_none();
    let g = if fixed.is_some() {
        STATIC_GROUP_COLS
    } else {
        plan.group
    };
    // Column of the row at position i of the processing order.
    let col = |i: usize| perm.map_or(i, |p| p[i]);
    let n_slabs = n.div_ceil(g);
    let ctx = &gpu.ctx;
    // Rows per pass: the weight buffer under the binding limit, the grid under 65,535 groups.
    let max_binding = ctx.dev.limits.max_storage_buffer_binding_size as usize;
    let per_row = n_slabs * g * 4;
    if per_row > max_binding {
        bail!(
            "gptq: a {n}-column row ({per_row} bytes on the device) exceeds the adapter's \
             max_storage_buffer_binding_size ({max_binding}); use --device cpu"
        );
    }
    let rows_per_pass = (max_binding / per_row).min(65_535 * 64);
    for (xs, ds) in x
        .chunks(rows_per_pass * n)
        .zip(dst.chunks_mut(rows_per_pass * row_bytes))
    {
        let m = xs.len() / n;
        let mut slabs = vec![0f32; m * g * n_slabs];
        for (r, row) in xs.chunks(n).enumerate() {
            for j in 0..n {
                slabs[(j / g) * m * g + r * g + j % g] = row[col(j)];
            }
        }
        if fixed.is_some() {
            // The fixed grids: the search on the original rows.
            xs.par_chunks(n)
                .zip(ds.par_chunks_mut(row_bytes))
                .try_for_each(|(xr, out)| quantize_row_searched(t, xr, out, qw, search))
                .context("gptq: the search before the fixed-grid rounding")?;
        }
        let w = ctx.upload_f32(&slabs);
        drop(slabs);
        let e = ctx.zeroed((m * g * 4) as u64);
        let mut errs = vec![0f32; m * g];
        // With `whole`, each row as it stands: quantized columns as they were when quantized.
        let row_len = if whole { n } else { 1 };
        let mut rows_now = vec![0f32; m * row_len];
        for gi in 0..n_slabs {
            let (g0, g1) = (gi * g, ((gi + 1) * g).min(n));
            let slabs_read = if whole { n_slabs - gi } else { 1 };
            let words = ctx
                .read_many(&[(w.buffer(), (gi * m * g * 4) as u64, slabs_read * m * g)])
                .pop()
                .expect("one range read");
            let value =
                |r: usize, j: usize| f32::from_bits(words[(j / g - gi) * m * g + r * g + j % g]);
            ds.par_chunks_mut(row_bytes)
                .zip(errs.par_chunks_mut(g))
                .zip(rows_now.par_chunks_mut(row_len))
                .enumerate()
                .try_for_each(|(r, ((out_row, es), now))| {
                    let mut wg: Vec<f64> = (g0..g1).map(|j| value(r, j) as f64).collect();
                    if whole {
                        for (j, d) in now.iter_mut().enumerate().skip(g0) {
                            *d = value(r, j);
                        }
                    }
                    let row: &[f32] = if whole { now } else { &[] };
                    let mut er = vec![0f64; g1 - g0];
                    match (fixed, perm) {
                        (Some(grid), Some(perm)) => {
                            static_group(t, grid, p, perm, g0, &mut wg, &mut er, out_row)
                        }
                        _ => plan.quantize_group(p, g0, &mut wg, row, &mut er, out_row)?,
                    }
                    for (d, &v) in es.iter_mut().zip(&er) {
                        *d = v as f32;
                    }
                    if whole {
                        for (d, &v) in now[g0..g1].iter_mut().zip(&wg) {
                            *d = v as f32;
                        }
                    }
                    Ok::<(), crate::quant::gptq::GptqError>(())
                })
                .with_context(|| format!("gptq: columns {g0}..{g1}"))?;
            if g1 < n {
                ctx.write(e.buffer(), 0, bytemuck::cast_slice(&errs));
                let mut u = Vec::with_capacity((g1 - g0) * (n - g1));
                for k in g0..g1 {
                    u.extend(p.u[k * n + g1..(k + 1) * n].iter().map(|&v| v as f32));
                }
                let u = ctx.upload_f32(&u);
                gptq_update::run(
                    ctx,
                    w.buffer(),
                    e.buffer(),
                    u.buffer(),
                    Update {
                        rows: m,
                        n,
                        g,
                        gw: g1 - g0,
                        j0: g1,
                    },
                );
            }
        }
    }
    Ok(())
}
