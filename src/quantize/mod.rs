//! The quantize driver (SPEC §4): type plan, imatrix lookup, rows quantized in parallel with
//! rayon (bytes independent of the thread count), tensors streamed to the output GGUF in
//! llama.cpp's visiting order, metadata as llama-quantize writes it.
//!
//! Each tensor is quantized slab by slab through a [`RowQuantizer`]: [`CpuQuantizer`] (the
//! reference) or [`gpu::GpuQuantizer`] (for the types whose kernel passed its canary).

pub mod canary;
pub mod gptq;
pub mod gpu;
pub mod optimize;
pub mod sensitivity;

use crate::gguf::split::{SplitLayout, SplitWriter};
use crate::gguf::GgmlType;
use crate::gguf::{GgufFile, TensorSpec, Value};
use crate::imatrix::file::Imatrix;
use crate::quant::dequantize_row;
use crate::quant::mix::{self, FileType, MixOptions, ModelFacts, TensorMeta};
use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// Everything `quantize_file` needs besides the input and output paths.
#[derive(Clone, Debug)]
pub struct QuantizeParams {
    pub ftype: FileType,
    pub mix: MixOptions,
    /// Importance matrix file (GGUF or legacy .dat).
    pub imatrix: Option<PathBuf>,
    /// Keep only imatrix entries whose name contains one of these (`--include-weights`).
    pub include_weights: Vec<String>,
    /// Drop imatrix entries whose name contains one of these (`--exclude-weights`).
    pub exclude_weights: Vec<String>,
    pub allow_requantize: bool,
    /// Passed to the imatrix reader; recorded in the metadata only when non-zero.
    pub prior_weight: f32,
    /// Quantize on this GPU the types whose kernel passed the canary (`None`: CPU reference).
    pub gpu: Option<std::sync::Arc<gpu::GpuQuantizer>>,
    /// How the output is split over files.
    pub split: OutputSplit,
    /// Key-values appended to the output's metadata (the mix optimizer's recipe).
    pub extra_kvs: Vec<(String, Value)>,
    /// `--search`/`--weighting` (default: llama.cpp's bytes). A non-llama search runs on the
    /// CPU (the GPU kernels implement llama.cpp's search only).
    pub search: crate::quant::better::SearchOptions,
    /// `--gptq --covariance FILE`: error-feedback rounding for tensors with a covariance.
    pub gptq: Option<gptq::GptqOptions>,
}

/// The output's files: one, the input's parts (`--keep-split`, as llama-quantize), or parts of
/// at most a size (`--split-max-size`, as gguf-split).
#[derive(Clone, Debug, Default, PartialEq)]
pub enum OutputSplit {
    #[default]
    Single,
    KeepInput,
    MaxBytes(u64),
}

impl QuantizeParams {
    pub fn new(ftype: FileType) -> QuantizeParams {
        QuantizeParams {
            ftype,
            mix: MixOptions::default(),
            imatrix: None,
            include_weights: Vec::new(),
            exclude_weights: Vec::new(),
            allow_requantize: false,
            prior_weight: 0.0,
            gpu: None,
            split: OutputSplit::Single,
            extra_kvs: Vec::new(),
            search: Default::default(),
            gptq: None,
        }
    }
}

/// What happened, for the command's summary.
#[derive(Clone, Debug, Default)]
pub struct QuantizeReport {
    pub n_tensors: usize,
    pub n_quantized: usize,
    /// Of the tensors converted to a block type: quantized by the GPU kernels (every row)...
    pub n_on_gpu: usize,
    /// ...and by the CPU reference (no GPU quantizer, no kernel or failed canary with
    /// `--device auto`, rows outside the kernels' exact range, or bytes re-done after a check).
    pub n_on_cpu: usize,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// The files written (one unless the output is split).
    pub outputs: Vec<PathBuf>,
    /// e.g. "did not find weights for X" (llama-quantize's warnings).
    pub warnings: Vec<String>,
    /// With `--gptq`: tensors quantized with error feedback, and the quantized tensors without
    /// a covariance entry (plain quantization).
    pub gptq_tensors: usize,
    /// Of those, the tensors whose error propagation ran on the GPU (their blocks are
    /// quantized on the CPU, so they count as CPU tensors above).
    pub gptq_gpu_updates: usize,
    pub gptq_fallbacks: Vec<String>,
}

/// `--include-weights` / `--exclude-weights`: keep the imatrix entries whose names contain one
/// of `include` (when given), then drop those that contain one of `exclude`.
pub fn filter_entries(im: &mut Imatrix, include: &[String], exclude: &[String]) {
    if !include.is_empty() {
        im.entries
            .retain(|k, _| include.iter().any(|s| k.contains(s.as_str())));
    }
    if !exclude.is_empty() {
        im.entries
            .retain(|k, _| !exclude.iter().any(|s| k.contains(s.as_str())));
    }
}

/// The rows of one tensor to quantize: its source bytes and where its importance comes from.
#[derive(Clone, Copy, Debug)]
pub struct TensorRows<'a> {
    pub name: &'a str,
    pub src_type: GgmlType,
    /// The whole tensor's bytes.
    pub data: &'a [u8],
    /// Values per row.
    pub ne0: usize,
    /// Rows per expert: importance entry e covers rows e·rows_per_expert.. (ne1 of the tensor).
    pub rows_per_expert: usize,
    /// Importance, `ne0` values per expert.
    pub importance: Option<&'a [f32]>,
    pub dst_type: GgmlType,
    /// The scale search (`quant::better`); llama.cpp's by default.
    pub search: crate::quant::better::SearchOptions,
}

impl TensorRows<'_> {
    /// Rows `row0..row0 + nr`, in parallel with rayon (bytes independent of the thread count):
    /// each row read as f32 and handed to `f` with its index and its bytes of `out`.
    pub(crate) fn par_rows(
        &self,
        row0: usize,
        nr: usize,
        out: &mut [u8],
        f: impl Fn(usize, &[f32], &mut [u8]) -> Result<()> + Send + Sync,
    ) -> Result<()> {
        let dst_row = out.len() / nr.max(1);
        out.par_chunks_mut(dst_row).enumerate().try_for_each_init(
            || vec![0f32; self.ne0],
            |buf, (k, dst)| -> Result<()> {
                let r = row0 + k;
                self.read_row(r, buf)?;
                f(r, buf, dst)
            },
        )
    }

    fn src_row_bytes(&self) -> usize {
        self.src_type.row_bytes(self.ne0 as u64).unwrap_or(0) as usize
    }

    /// Row r's values, dequantized into `buf` (`ne0` values); non-finite weights are an error
    /// naming the tensor.
    pub(crate) fn read_row(&self, r: usize, buf: &mut [f32]) -> Result<()> {
        let sr = self.src_row_bytes();
        dequantize_row(self.src_type, &self.data[r * sr..(r + 1) * sr], buf)?;
        if let Some(c) = buf.iter().position(|x| !x.is_finite()) {
            bail!(
                "tensor {}: non-finite weight {} at row {r}, column {c}",
                self.name,
                buf[c]
            );
        }
        Ok(())
    }

    /// The importance of row r's expert.
    pub(crate) fn importance_of_row(&self, r: usize) -> Option<&[f32]> {
        let e = r / self.rows_per_expert.max(1);
        self.importance
            .map(|v| &v[e * self.ne0..(e + 1) * self.ne0])
    }
}

/// Where `quantize_file` sends each slab of rows: the CPU reference or a GPU. Every
/// implementation produces `quant::quantize_row`'s bytes.
pub trait RowQuantizer: Sync {
    /// Whether this quantizer takes tensors of output type `t` (the CPU: always; a GPU: its
    /// kernel exists and passed the canary, or an error in strict mode).
    fn accepts(&self, t: GgmlType) -> Result<bool>;

    /// Quantize rows `row0..row0 + nr` of `tensor` into `out` (`nr` output rows).
    fn quantize_rows(
        &self,
        tensor: &TensorRows,
        row0: usize,
        nr: usize,
        out: &mut [u8],
    ) -> Result<()>;
}

/// The CPU reference: rows in parallel with rayon (bytes independent of the thread count).
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuQuantizer;

impl RowQuantizer for CpuQuantizer {
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
        tensor.par_rows(row0, nr, out, |r, x, dst| {
            crate::quant::better::quantize_row_searched(
                tensor.dst_type,
                x,
                dst,
                tensor.importance_of_row(r),
                tensor.search,
            )?;
            Ok(())
        })
    }
}

impl RowQuantizer for gpu::GpuQuantizer {
    fn accepts(&self, t: GgmlType) -> Result<bool> {
        self.usable(t)
    }

    /// The slab is dequantized on the CPU, then quantized on the GPU one expert's rows at a
    /// time (each expert has its own importance).
    fn quantize_rows(
        &self,
        tensor: &TensorRows,
        row0: usize,
        nr: usize,
        out: &mut [u8],
    ) -> Result<()> {
        let ne0 = tensor.ne0;
        let mut xs = vec![0f32; nr * ne0];
        xs.par_chunks_mut(ne0)
            .enumerate()
            .try_for_each(|(k, buf)| tensor.read_row(row0 + k, buf))?;
        let dst_row = out.len() / nr.max(1);
        let rpe = tensor.rows_per_expert.max(1);
        let mut k = 0;
        while k < nr {
            let e = (row0 + k) / rpe;
            let end = ((e + 1) * rpe - row0).min(nr);
            let w = tensor.importance_of_row(row0 + k);
            let block0 = (row0 + k) * (ne0 / tensor.dst_type.block_size().max(1));
            let bytes = self.quantize_rows_at(
                tensor.name,
                block0,
                tensor.dst_type,
                &xs[k * ne0..end * ne0],
                ne0,
                w,
            )?;
            out[k * dst_row..end * dst_row].copy_from_slice(&bytes);
            k = end;
        }
        Ok(())
    }
}

/// The imatrix of `p` with `--include-weights`/`--exclude-weights` applied; `None` without
/// one or when no entry is left (llama-quantize then runs as without an imatrix).
fn load_imatrix(p: &QuantizeParams) -> Result<Option<Imatrix>> {
    let Some(path) = &p.imatrix else {
        return Ok(None);
    };
    let mut im =
        Imatrix::load(path).with_context(|| format!("loading imatrix {}", path.display()))?;
    filter_entries(&mut im, &p.include_weights, &p.exclude_weights);
    Ok((!im.entries.is_empty()).then_some(im))
}

/// The model facts the mix rules read (llama.cpp's hparams), from the GGUF metadata.
pub fn model_facts(src: &GgufFile, has_imatrix: bool) -> ModelFacts {
    let arch = src.get_str("general.architecture").unwrap_or("llama");
    let n_layer = src.get_int(&format!("{arch}.block_count")).unwrap_or(0);
    let n_expert = src.get_int(&format!("{arch}.expert_count")).unwrap_or(0);
    let n_head = src
        .get_int(&format!("{arch}.attention.head_count"))
        .unwrap_or(0);
    let n_head_kv = src
        .get_int(&format!("{arch}.attention.head_count_kv"))
        .unwrap_or(n_head);
    let n_gqa = if n_head_kv > 0 { n_head / n_head_kv } else { 0 };
    ModelFacts {
        n_layer,
        n_expert,
        has_imatrix,
        n_gqa,
    }
}

fn plan_of(src: &GgufFile, p: &QuantizeParams, has_imatrix: bool) -> Vec<(TensorMeta, GgmlType)> {
    let metas: Vec<TensorMeta> = src
        .tensors()
        .iter()
        .map(|t| TensorMeta {
            name: t.name.clone(),
            dims: t.dims.clone(),
            ggml_type: t.ggml_type,
        })
        .collect();
    mix::plan(&metas, p.ftype, model_facts(src, has_imatrix), &p.mix)
}

/// The per-tensor types `quantize_file` would write for `input` and `p`, in output order,
/// without quantizing anything (reads the metadata and the imatrix only).
pub fn plan_types(input: &Path, p: &QuantizeParams) -> Result<Vec<(TensorMeta, GgmlType)>> {
    let src = GgufFile::open(input).with_context(|| format!("reading {}", input.display()))?;
    let imatrix = load_imatrix(p)?;
    Ok(plan_of(&src, p, imatrix.is_some()))
}

/// Whether a tensor of type `nt` cannot be written without its importance: llama-quantize's
/// tensor_requires_imatrix, or a block type whose quantizer needs the weights (ggml asserts
/// there, e.g. for an IQ2_XXS token_embd forced by --token-embedding-type).
fn needs_importance(name: &str, nt: GgmlType, ftype: FileType) -> bool {
    mix::requires_imatrix(name, nt, ftype)
        || crate::quant::block_type(nt).is_some_and(|b| b.requires_importance)
}

/// llama-quantize's refusal ("this quantization requires an imatrix!"): the first tensor of
/// the plan that would need importance data, named with its type and what chose it.
fn refuse_without_imatrix(plan: &[(TensorMeta, GgmlType)], p: &QuantizeParams) -> Result<()> {
    let Some((t, nt)) = plan
        .iter()
        .find(|(t, nt)| *nt != t.ggml_type && needs_importance(&t.name, *nt, p.ftype))
    else {
        return Ok(());
    };
    let forced = match mix::category(&t.name) {
        mix::Category::TokenEmbd if p.mix.token_embedding_type.is_some() => true,
        mix::Category::Output if p.mix.output_tensor_type.is_some() => true,
        _ => p
            .mix
            .tensor_types
            .iter()
            .any(|(re, _)| re.is_match(&t.name)),
    };
    if forced {
        bail!(
            "tensor {}: type {nt} (forced by a type option) requires an importance matrix; \
             pass --imatrix",
            t.name
        );
    }
    bail!(
        "{} requires an importance matrix: pass --imatrix (tensor {} would be {nt}, which \
         llama-quantize refuses to write without one)",
        p.ftype.name(),
        t.name
    );
}

/// Rows processed per parallel slab, so that at most this many output bytes are in memory.
const SLAB_BYTES: usize = 32 << 20;

/// Quantize `input` to `output` (written atomically). Runs on the current rayon pool.
pub fn quantize_file(
    input: &Path,
    output: &Path,
    p: &QuantizeParams,
    on_tensor: &mut dyn FnMut(&str, u64),
) -> Result<QuantizeReport> {
    if !p.include_weights.is_empty() && !p.exclude_weights.is_empty() {
        bail!("--include-weights and --exclude-weights cannot be used together");
    }
    let src = GgufFile::open(input).with_context(|| format!("reading {}", input.display()))?;
    let mut report = QuantizeReport::default();
    let imatrix = load_imatrix(p)?;
    let plan = plan_of(&src, p, imatrix.is_some());

    // Check the whole plan before writing anything: first, as llama-quantize does, that no
    // tensor needs the imatrix that was not given.
    if imatrix.is_none() {
        refuse_without_imatrix(&plan, p)?;
    }
    for (t, nt) in &plan {
        if t.dims.contains(&0) {
            bail!(
                "tensor {}: shape {:?} has a zero dimension; nothing to quantize or copy",
                t.name,
                t.dims
            );
        }
        if *nt == t.ggml_type {
            continue;
        }
        if !crate::quant::can_quantize(*nt) {
            bail!("tensor {}: cannot quantize to {nt}", t.name);
        }
        if t.ggml_type.is_quantized() && !p.allow_requantize {
            bail!(
                "tensor {}: requantizing from type {} is disabled (use --allow-requantize)",
                t.name,
                t.ggml_type
            );
        }
        if t.dims.len() > 3 && t.dims[3..].iter().any(|&d| d > 1) {
            bail!(
                "tensor {}: 4-D tensors {:?} cannot be quantized",
                t.name,
                t.dims
            );
        }
        if !crate::quant::can_dequantize(t.ggml_type) {
            bail!("tensor {}: cannot read type {}", t.name, t.ggml_type);
        }
        if t.dims[0] % nt.block_size() as u64 != 0 {
            bail!(
                "tensor {}: row length {} is not a multiple of {nt}'s block size {}",
                t.name,
                t.dims[0],
                nt.block_size()
            );
        }
    }

    let mut gptq = p
        .gptq
        .as_ref()
        .map(|o| gptq::GptqState::open(o, &src))
        .transpose()?;
    let mut kvs = output_kvs(&src, p, imatrix.as_ref());
    kvs.extend(gptq.iter().flat_map(|g| g.kvs()));
    let specs: Vec<TensorSpec> = plan
        .iter()
        .map(|(t, nt)| TensorSpec::new(t.name.clone(), &t.dims, *nt))
        .collect();
    let layout = match p.split {
        OutputSplit::Single => SplitLayout::Single,
        // Each tensor stays in the part it came from (llama-quantize --keep-split), even for
        // an input in one file: OUT-00001-of-00001.gguf.
        OutputSplit::KeepInput => SplitLayout::Parts {
            part_of: plan
                .iter()
                .map(|(t, _)| src.require_tensor(&t.name).map(|i| i.split))
                .collect::<std::result::Result<_, _>>()?,
            count: src.split_count(),
        },
        OutputSplit::MaxBytes(max) => SplitLayout::by_max_size(&specs, max),
    };
    let mut w = SplitWriter::create(output, &kvs, specs, &layout)
        .with_context(|| format!("creating {}", output.display()))?;

    for (t, nt) in &plan {
        let info = src.require_tensor(&t.name)?;
        let data = src.tensor_data(info);
        report.n_tensors += 1;
        report.bytes_in += data.len() as u64;
        if *nt == t.ggml_type {
            w.write_tensor(data)?;
            report.bytes_out += data.len() as u64;
            src.release_tensor_pages(info);
            on_tensor(&t.name, info.n_elements());
            continue;
        }
        report.n_quantized += 1;
        let ne0 = t.dims[0] as usize;
        let rows_per_expert = info.ne(1) as usize;
        let importance = imatrix
            .as_ref()
            .map(|im| im.importance(&t.name, p.prior_weight));
        let qw: Option<&Vec<f32>> = match &importance {
            None => None,
            Some(entry) => match entry {
                None => {
                    report
                        .warnings
                        .push(format!("did not find weights for {}", t.name));
                    None
                }
                Some(v) if v.len() != ne0 * info.ne(2) as usize => {
                    if mix::category(&t.name) == mix::Category::TokenEmbd {
                        None
                    } else {
                        bail!(
                            "tensor {}: imatrix entry has {} values but the tensor has {} \
                             columns × {} experts = {}",
                            t.name,
                            v.len(),
                            ne0,
                            info.ne(2),
                            ne0 * info.ne(2) as usize
                        );
                    }
                }
                Some(v) => {
                    if let Some(c) = v.iter().position(|x| !x.is_finite()) {
                        bail!(
                            "imatrix {}: entry {} has a non-finite value {} at column {c}",
                            p.imatrix
                                .as_ref()
                                .map_or(String::new(), |f| f.display().to_string()),
                            t.name,
                            v[c]
                        );
                    }
                    Some(v)
                }
            },
        };
        if qw.is_none() && needs_importance(&t.name, *nt, p.ftype) {
            bail!(
                "tensor {}: missing importance matrix entry for a very low-bit quantization \
                 ({} to {nt})",
                t.name,
                p.ftype.name()
            );
        }
        let dst_row = nt.row_bytes(ne0 as u64).unwrap() as usize;
        let n_rows = info.n_rows() as usize;
        let rows_per_slab = (SLAB_BYTES / dst_row.max(1)).clamp(1, n_rows.max(1));
        let mut out = vec![0u8; rows_per_slab.min(n_rows) * dst_row];
        let gpu = match &p.gpu {
            Some(g) if p.search.is_llama() && g.accepts(*nt)? => Some(g.as_ref()),
            _ => None,
        };
        let with_gptq = match &mut gptq {
            Some(g) => g.quantizer(&t.name, *nt, p.gpu.clone())?,
            None => None,
        };
        let quantizer: &dyn RowQuantizer = match (&with_gptq, gpu) {
            (Some(q), _) => q,
            (None, Some(g)) => g,
            (None, None) => &CpuQuantizer,
        };
        let rows = TensorRows {
            name: &t.name,
            src_type: t.ggml_type,
            data,
            ne0,
            rows_per_expert,
            importance: qw.map(|v| &v[..]),
            dst_type: *nt,
            search: p.search,
        };
        let mut row0 = 0;
        while row0 < n_rows {
            let nr = rows_per_slab.min(n_rows - row0);
            let out = &mut out[..nr * dst_row];
            quantizer.quantize_rows(&rows, row0, nr, out)?;
            w.write_tensor(out)?;
            report.bytes_out += out.len() as u64;
            row0 += nr;
        }
        if let (Some(q), Some(g)) = (&with_gptq, &mut gptq) {
            g.n_gpu_update += q.used_gpu() as usize;
        }
        if nt.is_quantized() {
            if with_gptq.is_none() && gpu.is_some_and(|g| !g.touched_cpu(&t.name)) {
                report.n_on_gpu += 1;
            } else {
                report.n_on_cpu += 1;
            }
        }
        src.release_tensor_pages(info);
        on_tensor(&t.name, info.n_elements());
    }
    if let Some(g) = gptq {
        report.gptq_tensors = g.n_gptq;
        report.gptq_gpu_updates = g.n_gpu_update;
        report.gptq_fallbacks = g.fallbacks;
    }
    report.outputs = w.finish()?;
    Ok(report)
}

/// Output metadata (SPEC §4.5): the input KVs in order; quantization_version and file_type moved
/// to the end; split keys dropped; then the imatrix keys.
pub(crate) fn output_kvs(
    src: &GgufFile,
    p: &QuantizeParams,
    imatrix: Option<&Imatrix>,
) -> Vec<(String, Value)> {
    let drop = [
        "general.quantization_version",
        "general.file_type",
        "split.no",
        "split.count",
        "split.tensors.count",
    ];
    let mut kvs: Vec<(String, Value)> = src
        .kvs()
        .iter()
        .filter(|(k, _)| !drop.contains(&k.as_str()))
        .cloned()
        .collect();
    kvs.push(("general.quantization_version".into(), Value::U32(2)));
    kvs.push(("general.file_type".into(), Value::U32(p.ftype.id())));
    if !p.search.is_llama() {
        kvs.push(("quantize.search".into(), Value::str(p.search.search.name())));
    }
    if p.search.weighting != crate::quant::better::Weighting::Llama {
        kvs.push((
            "quantize.weighting".into(),
            Value::str(p.search.weighting.name()),
        ));
    }
    if let (Some(im), Some(path)) = (imatrix, &p.imatrix) {
        let mut file = path.to_string_lossy().into_owned().into_bytes();
        file.truncate(127);
        kvs.push(("quantize.imatrix.file".into(), Value::String(file)));
        if let Some(d) = im.datasets.first() {
            kvs.push(("quantize.imatrix.dataset".into(), Value::str(d)));
        }
        kvs.push((
            "quantize.imatrix.entries_count".into(),
            Value::U32(im.entries.len() as u32),
        ));
        if im.chunk_count > 0 {
            kvs.push((
                "quantize.imatrix.chunks_count".into(),
                Value::U32(im.chunk_count),
            ));
        }
        if p.prior_weight != 0.0 {
            kvs.push((
                "quantize.imatrix.prior_weight".into(),
                Value::F32(p.prior_weight),
            ));
        }
    }
    kvs.extend(p.extra_kvs.iter().cloned());
    kvs
}
