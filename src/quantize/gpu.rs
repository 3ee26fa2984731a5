//! Quantization on the GPU: rows (and the importance of their columns) are uploaded, one kernel
//! invocation quantizes one block (`shaders/quant_<type>.wgsl`), the bytes are read back.
//!
//! The kernels reproduce `quant::quantize_row` operation by operation, exact by construction
//! where the adapter allows it: correctly rounded division and sqrt in integer code, products
//! rounded on their own (quant_common.wgsl), and on Vulkan SPIR-V with every float op
//! NoContraction plus the float-controls modes the device supports (backend::gpu::spirv). An
//! adapter may still flush subnormals (no DenormPreserve) or, without SPIR-V, contract in ways
//! WGSL cannot forbid, so the bytes are only trusted on an adapter after a canary: at the first use of each type, known inputs (edge cases included) are
//! quantized on the GPU and on the CPU, with and without importance, and must agree byte for
//! byte. If they do not, that type is quantized on the CPU (`--device auto`, with a message) or
//! the run fails (`--device gpu[:N]`). `verify` additionally checks every tensor on the CPU.

use super::canary;
use crate::backend::gpu::device::DeviceSpec;
use crate::backend::gpu::kernels::quant_block::{self, KernelPath};
use crate::backend::gpu::GpuBackend;
use crate::gguf::GgmlType;
use crate::quant::{self, RefWeightBound};
use anyhow::{anyhow, bail, Context, Result};
use rayon::prelude::*;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

/// Input values per dispatch: 16 MiB of f32, far under every adapter's binding limit.
const MAX_VALUES_PER_DISPATCH: usize = 4 << 20;

/// Whether a GPU kernel exists for type `t` (its table row has one).
pub fn supports(t: GgmlType) -> bool {
    quant::block_type(t).is_some_and(|b| b.gpu_quantize.is_some())
}

pub struct GpuQuantizer {
    gpu: GpuBackend,
    /// Compare every tensor's bytes with the CPU reference (error on a mismatch).
    pub verify: bool,
    /// A failed canary is an error instead of a fallback to the CPU.
    pub strict: bool,
    /// Print what the canary decided (stderr).
    pub verbose: bool,
    canary: Mutex<HashMap<GgmlType, bool>>,
    /// Tensors some of whose bytes came from the CPU reference (rows outside the kernels' exact
    /// range, or a tensor re-done after a failed check): the summary's CPU count.
    cpu_touched: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for GpuQuantizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuQuantizer({})", self.gpu.adapter_name())
    }
}

/// What `--device` chooses for `wquant quantize` (`backend::select`): `None` is the CPU
/// reference. With auto (a hardware GPU) every tensor is verified against the CPU reference
/// (a mismatch uses the CPU bytes): shader compilers may fuse or reorder float operations
/// (lavapipe reassociated a constant add until shaders/quant_common.wgsl's `opaque()`), and a
/// per-type canary cannot see data-dependent differences. An explicit `gpu[:N]` is strict.
pub fn choose(device: &str, verify: bool, quiet: bool) -> Result<Option<GpuQuantizer>> {
    let auto = DeviceSpec::parse(device)? == DeviceSpec::Auto;
    let gpu = match crate::backend::select::select(device, "quantize", quiet)? {
        crate::backend::select::SelectedBackend::Cpu(_) => return Ok(None),
        crate::backend::select::SelectedBackend::Gpu(g) => g,
    };
    let mut q = GpuQuantizer::from_backend(gpu);
    q.verify = auto || verify;
    q.strict = !auto;
    q.verbose = !quiet;
    if !quiet {
        eprintln!(
            "quantize: GPU adapter {} (kernels: {})",
            q.adapter_name(),
            q.guarantees().describe()
        );
    }
    Ok(Some(q))
}

impl GpuQuantizer {
    /// Open the adapter `device` names (`auto`, `gpu`, `gpu:N`).
    pub fn open(device: &str) -> Result<GpuQuantizer> {
        Ok(Self::from_backend(GpuBackend::new(device)?))
    }

    pub fn from_backend(gpu: GpuBackend) -> GpuQuantizer {
        GpuQuantizer {
            gpu,
            verify: false,
            strict: false,
            verbose: false,
            canary: Mutex::new(HashMap::new()),
            cpu_touched: Mutex::new(HashSet::new()),
        }
    }

    pub fn adapter_name(&self) -> String {
        self.gpu.adapter_name()
    }

    /// What the kernels' path guarantees on this adapter (`quant_block::best_path`).
    pub fn guarantees(&self) -> crate::backend::gpu::spirv::Guarantees {
        quant_block::guarantees(&self.gpu.ctx, quant_block::best_path(&self.gpu.ctx))
    }

    /// Quantize `x` (rows of `ne0` values) to `t` with importance `qw` (one per column): the
    /// kernel, then the CPU reference for the rows outside `row_is_gpu_exact` (where f32
    /// intermediates overflow; GPU compilers may not keep IEEE Inf/NaN semantics). No canary,
    /// no finiteness check.
    pub fn quantize_rows_raw(
        &self,
        t: GgmlType,
        x: &[f32],
        ne0: usize,
        qw: Option<&[f32]>,
    ) -> Result<Vec<u8>> {
        Ok(self.quantize_rows_counted(t, x, ne0, qw)?.0)
    }

    /// As `quantize_rows_raw`, with the number of rows the CPU quantized.
    fn quantize_rows_counted(
        &self,
        t: GgmlType,
        x: &[f32],
        ne0: usize,
        qw: Option<&[f32]>,
    ) -> Result<(Vec<u8>, usize)> {
        let mut out = self.kernel_rows(t, x, ne0, qw)?;
        let rb = out.len() / (x.len() / ne0).max(1);
        let mut n_cpu = 0;
        for (r, row) in x.chunks_exact(ne0).enumerate() {
            if !row_is_gpu_exact(t, row, qw) {
                quant::quantize_row(t, row, &mut out[r * rb..(r + 1) * rb], qw)?;
                n_cpu += 1;
            }
        }
        Ok((out, n_cpu))
    }

    /// Whether some bytes of tensor `name` came from the CPU reference.
    pub fn touched_cpu(&self, name: &str) -> bool {
        self.cpu_touched.lock().expect("cpu set").contains(name)
    }

    fn mark_cpu(&self, name: &str) {
        self.cpu_touched
            .lock()
            .expect("cpu set")
            .insert(name.to_string());
    }

    /// The kernel alone over every row (no CPU fallback).
    pub fn kernel_rows(
        &self,
        t: GgmlType,
        x: &[f32],
        ne0: usize,
        qw: Option<&[f32]>,
    ) -> Result<Vec<u8>> {
        kernel_rows(&self.gpu, t, x, ne0, qw)
    }

    /// Quantize rows of tensor `name`: non-finite input is an error naming the tensor; with
    /// `verify`, the bytes are compared with the CPU reference.
    pub fn quantize_rows(
        &self,
        name: &str,
        t: GgmlType,
        x: &[f32],
        ne0: usize,
        qw: Option<&[f32]>,
    ) -> Result<Vec<u8>> {
        if let Some(i) = x.iter().position(|v| !v.is_finite()) {
            bail!(
                "tensor {name}: non-finite weight {} at row {}, column {}",
                x[i],
                i / ne0.max(1),
                i % ne0.max(1)
            );
        }
        if let Some(c) = qw.and_then(|w| w.iter().position(|v| !v.is_finite())) {
            bail!("tensor {name}: non-finite importance at column {c}");
        }
        let (bytes, n_cpu_rows) = self
            .quantize_rows_counted(t, x, ne0, qw)
            .with_context(|| format!("tensor {name}: GPU quantization to {t}"))?;
        if n_cpu_rows > 0 {
            self.mark_cpu(name);
        }
        if self.verify {
            let cpu = cpu_quantize(t, x, ne0, qw)?;
            if let Some(b) = first_mismatch(t, &bytes, &cpu) {
                if !self.strict {
                    // The safety net: a block the GPU got wrong never reaches the output.
                    eprintln!(
                        "quantize: tensor {name}: GPU bytes differ from the CPU reference at \
                         block {b} of {t} (adapter {}); using the CPU bytes",
                        self.adapter_name()
                    );
                    self.mark_cpu(name);
                    return Ok(cpu);
                }
                bail!(
                    "tensor {name}: GPU bytes differ from the CPU reference at block {b} of {t} \
                     (adapter {}); rerun with --device cpu",
                    self.adapter_name()
                );
            }
        }
        Ok(bytes)
    }

    /// Whether `t` is quantized on this adapter: the canary (run once per type) must pass.
    /// A failure falls back to the CPU with a message, or is an error when `strict`; so is a
    /// block type without a GPU kernel (F32/F16/BF16 conversions are the CPU's in both modes).
    pub fn usable(&self, t: GgmlType) -> Result<bool> {
        if self.strict && t.is_quantized() && !supports(t) {
            let have: Vec<&str> = quant_block::TYPES.iter().map(|k| k.name()).collect();
            bail!(
                "--device gpu: no GPU quantization kernel for type {t} (GPU kernels: {}); use \
                 --device auto (the CPU quantizes {t}) or --device cpu",
                have.join(", ")
            );
        }
        if !supports(t) {
            // No kernel for this type (yet): the CPU reference quantizes it, said once.
            let first = self
                .canary
                .lock()
                .expect("canary cache")
                .insert(t, false)
                .is_none();
            if first && self.verbose && t.is_quantized() {
                eprintln!("quantize: no GPU kernel for {t}; quantizing it on the CPU");
            }
            return Ok(false);
        }
        if let Some(&ok) = self.canary.lock().expect("canary cache").get(&t) {
            return Ok(ok);
        }
        let outcome = self.run_canary(t);
        let ok = match outcome {
            Ok(None) => true,
            Ok(Some(why)) | Err(why) => {
                let msg = format!(
                    "GPU canary for {t} failed on {} ({why})",
                    self.adapter_name()
                );
                if self.strict {
                    return Err(anyhow!("{msg}; use --device cpu or --device auto"));
                }
                eprintln!("quantize: {msg}; quantizing {t} on the CPU");
                false
            }
        };
        self.canary.lock().expect("canary cache").insert(t, ok);
        Ok(ok)
    }

    /// Quantize the canary inputs (reference and importance paths) on both sides. `Ok(None)`:
    /// identical; `Ok(Some(why))`: a mismatch.
    pub fn run_canary(&self, t: GgmlType) -> std::result::Result<Option<String>, String> {
        let ne0 = 512;
        let x = canary::edge_case_rows(0xC0FFEE ^ t.type_size() as u64, 12, ne0);
        let qw = canary::edge_case_importance(0xBEEF, ne0);
        for w in [None, Some(&qw[..])] {
            let gpu = self
                .quantize_rows_raw(t, &x, ne0, w)
                .map_err(|e| format!("{e:#}"))?;
            let cpu = cpu_quantize(t, &x, ne0, w).map_err(|e| format!("{e:#}"))?;
            if let Some(b) = first_mismatch(t, &gpu, &cpu) {
                let path = if w.is_some() {
                    "importance"
                } else {
                    "reference"
                };
                return Ok(Some(format!("{path} path, block {b} differs")));
            }
        }
        Ok(None)
    }
}

/// The quantization kernel for type `t` over rows of `ne0` values on `gpu` (no CPU fallback,
/// no canary, no finiteness check), on the device's best path (`quant_block::best_path`).
pub fn kernel_rows(
    gpu: &GpuBackend,
    t: GgmlType,
    x: &[f32],
    ne0: usize,
    qw: Option<&[f32]>,
) -> Result<Vec<u8>> {
    kernel_rows_on(gpu, quant_block::best_path(&gpu.ctx), t, x, ne0, qw)
}

/// As `kernel_rows`, on `path`.
pub fn kernel_rows_on(
    gpu: &GpuBackend,
    path: KernelPath,
    t: GgmlType,
    x: &[f32],
    ne0: usize,
    qw: Option<&[f32]>,
) -> Result<Vec<u8>> {
    if path == KernelPath::Spirv && !quant_block::spirv_available(&gpu.ctx) {
        bail!(
            "no SPIR-V passthrough on adapter {} (Vulkan only)",
            gpu.adapter_name()
        );
    }
    if !supports(t) {
        bail!("no GPU quantization kernel for type {t}");
    }
    let bs = t.block_size();
    if ne0 == 0 || !ne0.is_multiple_of(bs) || !x.len().is_multiple_of(ne0) {
        bail!(
            "{} values in rows of {ne0}: not whole rows of {t} blocks of {bs}",
            x.len()
        );
    }
    if qw.is_some_and(|w| w.len() != ne0) {
        bail!(
            "importance has {} values for rows of {ne0}",
            qw.unwrap().len()
        );
    }
    let n_rows = x.len() / ne0;
    let bpr = ne0 / bs;
    let ts = t.type_size();
    let slot = quant_block::slot_words(t);
    let mut out = vec![0u8; n_rows * bpr * ts];
    if n_rows == 0 {
        return Ok(out);
    }
    // The legacy types' σ² is a sequential sum over the whole row: done here, in the CPU's
    // order, rather than by one invocation per block.
    let kernel = quant::block_type(t).and_then(|b| b.gpu_quantize);
    let legacy_w = qw.is_some() && kernel.is_some_and(|k| k.row_sigma2);
    let ctx = &gpu.ctx;
    let wbuf = ctx.upload_f32(qw.unwrap_or(&[0.0]));
    let rows_per_chunk = (MAX_VALUES_PER_DISPATCH / ne0).max(1);
    let mut r0 = 0;
    while r0 < n_rows {
        let nr = rows_per_chunk.min(n_rows - r0);
        let xs = &x[r0 * ne0..(r0 + nr) * ne0];
        let sig: Vec<f32> = if legacy_w {
            xs.chunks_exact(ne0).map(quant::row_sigma2).collect()
        } else {
            vec![0.0]
        };
        let xbuf = ctx.upload_f32(xs);
        let sbuf = ctx.upload_f32(&sig);
        let n_blocks = nr * bpr;
        let obuf = ctx.pool.get((n_blocks * slot * 4) as u64);
        quant_block::run_on(
            ctx,
            path,
            t,
            xbuf.buffer(),
            wbuf.buffer(),
            sbuf.buffer(),
            obuf.buffer(),
            n_blocks,
            bpr,
            qw.is_some(),
        );
        let words = ctx.read_u32(obuf.buffer(), n_blocks * slot);
        let bytes: &[u8] = bytemuck::cast_slice(&words);
        let dst = &mut out[r0 * bpr * ts..(r0 + nr) * bpr * ts];
        for (d, s) in dst.chunks_exact_mut(ts).zip(bytes.chunks_exact(slot * 4)) {
            d.copy_from_slice(&s[..ts]);
        }
        r0 += nr;
    }
    Ok(out)
}

/// Whether the kernel's f32 intermediates stay finite for this row (then its bytes are exact):
/// with A = max|x| and W a bound on the effective weights, the largest sums the searches form
/// are ~(32·W·A·64)² and (32·W)²·32⁴; W·A ≤ 1e15 and W ≤ 1e15 keep them far below f32's max.
/// Real weights (|x| ≲ 1e3, importance ≲ 1e8) are always inside.
pub fn row_is_gpu_exact(t: GgmlType, row: &[f32], qw: Option<&[f32]>) -> bool {
    let a = row.iter().fold(0f64, |m, v| m.max(v.abs() as f64));
    let Some(b) = quant::block_type(t) else {
        return false;
    };
    let bound = b
        .gpu_quantize
        .map_or(RefWeightBound::One, |k| k.ref_weight_bound);
    let w = match qw {
        // Q8_0 ignores the importance; the legacy reference paths have no weights.
        Some(q) if b.uses_importance => q.iter().fold(0f64, |m, v| m.max(v.abs() as f64)) * 2.0 * a,
        _ => match bound {
            RefWeightBound::One => 1.0,
            RefWeightBound::TwoAbsMax => 2.0 * a,
            RefWeightBound::AbsMaxSquared => a * a,
        },
    };
    a <= 1e15 && w <= 1e15 && w * a <= 1e15
}

/// The CPU reference over whole rows (rayon; bytes do not depend on the thread count).
pub fn cpu_quantize(t: GgmlType, x: &[f32], ne0: usize, qw: Option<&[f32]>) -> Result<Vec<u8>> {
    let rb = t
        .row_bytes(ne0 as u64)
        .ok_or_else(|| anyhow!("rows of {ne0} are not whole {t} blocks"))? as usize;
    let mut out = vec![0u8; x.len() / ne0 * rb];
    out.par_chunks_mut(rb)
        .zip(x.par_chunks(ne0))
        .try_for_each(|(d, r)| quant::quantize_row(t, r, d, qw))?;
    Ok(out)
}

/// Index of the first block whose bytes differ.
pub fn first_mismatch(t: GgmlType, a: &[u8], b: &[u8]) -> Option<usize> {
    let ts = t.type_size();
    if a.len() != b.len() {
        return Some(a.len().min(b.len()) / ts);
    }
    a.chunks(ts).zip(b.chunks(ts)).position(|(x, y)| x != y)
}
