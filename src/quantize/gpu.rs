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
//! the run fails (`--device gpu[:N]`).
//!
//! Trust policy (`CheckPolicy`): on an adapter whose path is exact (`adapter_is_exact`), each
//! tensor is checked on a deterministic sample of its blocks (1 in `SAMPLE_ONE_IN`, chosen by a
//! hash of tensor name and block index, at least one per call) and on every near tie (the blocks
//! whose bytes change when the kernel's divisions are one ulp off: `near_ties`, two more runs of
//! the kernel), re-quantized on the CPU; a mismatch re-does the tensor on the CPU. Elsewhere
//! `--device auto` checks every block (`--verify-gpu` does everywhere).

use super::canary;
use crate::backend::gpu::device::DeviceSpec;
use crate::backend::gpu::kernels::quant_block::{self, KernelPath, Perturb};
use crate::backend::gpu::GpuBackend;
use crate::gguf::GgmlType;
use crate::quant::{self, RefWeightBound};
use anyhow::{anyhow, bail, Context, Result};
use rayon::prelude::*;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Input values per dispatch: 16 MiB of f32, far under every adapter's binding limit.
const MAX_VALUES_PER_DISPATCH: usize = 4 << 20;

/// Whether a GPU kernel exists for type `t` (its table row has one).
pub fn supports(t: GgmlType) -> bool {
    quant::block_type(t).is_some_and(|b| b.gpu_quantize.is_some())
}

/// Blocks of a tensor checked on the CPU under `CheckPolicy::Sampled`: one in this many.
pub const SAMPLE_ONE_IN: u32 = 64;

/// How much of the GPU's output is re-quantized on the CPU and compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckPolicy {
    /// Nothing beyond the per-type canary.
    CanaryOnly,
    /// The blocks `sampled_blocks` picks (1 in `one_in`) and every near tie (`near_ties`); a
    /// mismatch re-does the tensor on the CPU, also when strict (the output stays the CPU's
    /// bytes; the summary counts it as CPU).
    Sampled { one_in: u32 },
    /// Every block (`--verify-gpu`): a mismatch uses the CPU bytes, or is an error when strict.
    Full,
}

/// A post-processing hook on the kernel's bytes before any check: `(tensor, index of the first
/// block in the tensor, type, bytes)`.
/// Tests inject faults with it (one flipped rounding).
pub type FaultHook = Box<dyn Fn(&str, usize, GgmlType, &mut [u8]) + Send + Sync>;

pub struct GpuQuantizer {
    gpu: GpuBackend,
    /// What is compared with the CPU reference (`choose` sets it from the adapter's guarantees).
    pub check: CheckPolicy,
    #[doc(hidden)]
    pub fault_hook: Option<FaultHook>,
    /// The kernels' divisions as this quantizer runs them: `Perturb::None` in production; the
    /// tests' faulty adapter moves every one by an ulp.
    #[doc(hidden)]
    pub fault: Perturb,
    /// A failed canary is an error instead of a fallback to the CPU.
    pub strict: bool,
    /// Print what the canary decided (stderr).
    pub verbose: bool,
    canary: Mutex<HashMap<GgmlType, bool>>,
    /// Tensors some of whose bytes came from the CPU reference (rows outside the kernels' exact
    /// range, or a tensor re-done after a failed check): the summary's CPU count.
    cpu_touched: Mutex<HashSet<String>>,
    /// Tensors a sampled check caught: their remaining rows are quantized on the CPU.
    distrusted: Mutex<HashSet<String>>,
    /// Blocks the kernels quantized, and of them those the sampled check re-quantized on the
    /// CPU: in the sample, and near ties (a block in both counts in both).
    blocks_on_gpu: AtomicUsize,
    blocks_sampled: AtomicUsize,
    blocks_near_tie: AtomicUsize,
    /// Wall time (µs) in the kernels (uploads, runs, read-backs: with the sampled check, the
    /// near-tie runs too) and in the CPU check (sampled and near-tie blocks, or every block).
    kernel_us: AtomicU64,
    check_us: AtomicU64,
}

/// What the checks of a `GpuQuantizer` did so far (`GpuQuantizer::check_counts`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckCounts {
    /// Blocks from the kernels.
    pub blocks: usize,
    /// Blocks in the sampled check's hash sample.
    pub sampled: usize,
    /// Near ties, all checked on the CPU.
    pub near_ties: usize,
    /// Wall time in the kernels and in the CPU check, µs.
    pub kernel_us: u64,
    pub check_us: u64,
}

impl std::fmt::Debug for GpuQuantizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuQuantizer({})", self.gpu.adapter_name())
    }
}

/// What `--device` chooses for `wquant quantize` (`backend::select`): `None` is the CPU
/// reference. The check follows `trust_policy`; an explicit `gpu[:N]` is strict.
pub fn choose(device: &str, verify: bool, quiet: bool) -> Result<Option<GpuQuantizer>> {
    let auto = DeviceSpec::parse(device)? == DeviceSpec::Auto;
    let gpu = match crate::backend::select::select(device, Default::default(), "quantize", quiet)? {
        crate::backend::select::SelectedBackend::Cpu(_) => return Ok(None),
        crate::backend::select::SelectedBackend::Gpu(g) => g,
    };
    let mut q = GpuQuantizer::from_backend(gpu);
    q.check = q.trust_policy(auto, verify);
    q.strict = !auto;
    q.verbose = !quiet;
    if !quiet {
        eprintln!(
            "quantize: GPU adapter {} (kernels: {}; check: {})",
            q.adapter_name(),
            q.guarantees().describe(),
            match q.check {
                CheckPolicy::CanaryOnly => "canary".to_string(),
                CheckPolicy::Sampled { one_in } => format!("canary + 1 block in {one_in}"),
                CheckPolicy::Full => "every block on the CPU".to_string(),
            }
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
            check: CheckPolicy::CanaryOnly,
            fault_hook: None,
            fault: Perturb::None,
            strict: false,
            verbose: false,
            canary: Mutex::new(HashMap::new()),
            cpu_touched: Mutex::new(HashSet::new()),
            distrusted: Mutex::new(HashSet::new()),
            blocks_on_gpu: AtomicUsize::new(0),
            blocks_sampled: AtomicUsize::new(0),
            blocks_near_tie: AtomicUsize::new(0),
            kernel_us: AtomicU64::new(0),
            check_us: AtomicU64::new(0),
        }
    }

    /// What the checks did so far.
    pub fn check_counts(&self) -> CheckCounts {
        CheckCounts {
            blocks: self.blocks_on_gpu.load(Ordering::Relaxed),
            sampled: self.blocks_sampled.load(Ordering::Relaxed),
            near_ties: self.blocks_near_tie.load(Ordering::Relaxed),
            kernel_us: self.kernel_us.load(Ordering::Relaxed),
            check_us: self.check_us.load(Ordering::Relaxed),
        }
    }

    /// The device (for other kernels run during quantization, e.g. GPTQ's update).
    pub fn backend(&self) -> &GpuBackend {
        &self.gpu
    }

    pub fn adapter_name(&self) -> String {
        self.gpu.adapter_name()
    }

    /// Whether the kernels' path has exact semantics here: SPIR-V passthrough (every float op
    /// NoContraction) with RoundingModeRTE declared. Subnormals: DenormPreserve when declared,
    /// else (lavapipe) each type's canary, whose rows include subnormal and tiny blocks, must
    /// pass before the type is used at all (`usable`) and stands in for the declaration.
    pub fn adapter_is_exact(&self) -> bool {
        let g = self.guarantees();
        g.spirv && g.rte
    }

    /// The check for `--device auto` (`auto`) or `gpu[:N]`, with or without `--verify-gpu`:
    /// full with `--verify-gpu`; sampled on an exact adapter; otherwise full for auto (a
    /// per-type canary cannot see data-dependent differences) and canary only for `gpu[:N]`.
    pub fn trust_policy(&self, auto: bool, verify: bool) -> CheckPolicy {
        if verify {
            CheckPolicy::Full
        } else if self.adapter_is_exact() {
            CheckPolicy::Sampled {
                one_in: SAMPLE_ONE_IN,
            }
        } else if auto {
            CheckPolicy::Full
        } else {
            CheckPolicy::CanaryOnly
        }
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
        Ok(self.quantize_rows_counted(t, x, ne0, qw, false)?.0)
    }

    /// As `quantize_rows_raw`, with the number of rows the CPU quantized and, with `ties`, the
    /// near ties of the bytes (`near_ties`; the three kernel runs share one upload of `x`).
    fn quantize_rows_counted(
        &self,
        t: GgmlType,
        x: &[f32],
        ne0: usize,
        qw: Option<&[f32]>,
        ties: bool,
    ) -> Result<(Vec<u8>, usize, Vec<usize>)> {
        let path = quant_block::best_path(&self.gpu.ctx);
        let mut perturbs = vec![self.fault];
        if ties {
            perturbs.extend(self.other_perturbs());
        }
        let mut runs = kernel_rows_variants(&self.gpu, path, &perturbs, t, x, ne0, qw)?;
        let moved = runs.split_off(1);
        let mut out = runs.pop().expect("one kernel run per variant");
        let rb = out.len() / (x.len() / ne0).max(1);
        let mut n_cpu = 0;
        for (r, row) in x.chunks_exact(ne0).enumerate() {
            if !row_is_gpu_exact(t, row, qw) {
                quant::quantize_row(t, row, &mut out[r * rb..(r + 1) * rb], qw)?;
                n_cpu += 1;
            }
        }
        let near = differing_blocks(t, &out, &moved);
        Ok((out, n_cpu, near))
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
        let path = quant_block::best_path(&self.gpu.ctx);
        kernel_rows_perturbed(&self.gpu, path, self.fault, t, x, ne0, qw)
    }

    /// The near ties of `bytes`, this quantizer's kernel output for `x`: the blocks where the
    /// kernel with exact division and with division one ulp up and one ulp down do not all
    /// agree (the two runs other than this quantizer's own).
    pub fn near_ties(
        &self,
        t: GgmlType,
        x: &[f32],
        ne0: usize,
        qw: Option<&[f32]>,
        bytes: &[u8],
    ) -> Result<Vec<usize>> {
        let path = quant_block::best_path(&self.gpu.ctx);
        let others = self.other_perturbs();
        let moved = kernel_rows_variants(&self.gpu, path, &others, t, x, ne0, qw)?;
        Ok(differing_blocks(t, bytes, &moved))
    }

    /// The two division variants other than this quantizer's own (`fault`).
    fn other_perturbs(&self) -> Vec<Perturb> {
        [Perturb::None, Perturb::DivUp, Perturb::DivDown]
            .into_iter()
            .filter(|&p| p != self.fault)
            .collect()
    }

    /// Quantize rows of tensor `name` (the whole tensor, or the rows from its block `block0` on):
    /// non-finite input is an error naming the tensor; the bytes are checked per `check`.
    pub fn quantize_rows(
        &self,
        name: &str,
        t: GgmlType,
        x: &[f32],
        ne0: usize,
        qw: Option<&[f32]>,
    ) -> Result<Vec<u8>> {
        self.quantize_rows_at(name, 0, t, x, ne0, qw)
    }

    /// As `quantize_rows`, for rows starting at block `block0` of the tensor (the sample is a
    /// function of the tensor's block indices, whatever the slab or expert split).
    pub fn quantize_rows_at(
        &self,
        name: &str,
        block0: usize,
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
        if self
            .distrusted
            .lock()
            .expect("distrusted set")
            .contains(name)
        {
            // An earlier part of this tensor failed its sample: the rest is the CPU's too.
            return cpu_quantize(t, x, ne0, qw);
        }
        // Near ties of the kernel's own bytes (before any injected fault).
        let sampled = matches!(self.check, CheckPolicy::Sampled { .. });
        let t0 = Instant::now();
        let (bytes, n_cpu_rows, near) = self
            .quantize_rows_counted(t, x, ne0, qw, sampled)
            .with_context(|| format!("tensor {name}: GPU quantization to {t}"))?;
        add_elapsed(&self.kernel_us, t0);
        if n_cpu_rows > 0 {
            self.mark_cpu(name);
        }
        let t0 = Instant::now();
        let checked = self.check_rows(name, block0, t, x, ne0, qw, bytes, &near);
        add_elapsed(&self.check_us, t0);
        checked
    }

    /// `quantize_rows_at`'s check of the kernel's `bytes` (with near ties `near`) per
    /// `self.check`: the bytes, or the CPU's where the check failed.
    #[allow(clippy::too_many_arguments)]
    fn check_rows(
        &self,
        name: &str,
        block0: usize,
        t: GgmlType,
        x: &[f32],
        ne0: usize,
        qw: Option<&[f32]>,
        mut bytes: Vec<u8>,
        near: &[usize],
    ) -> Result<Vec<u8>> {
        if let Some(hook) = &self.fault_hook {
            hook(name, block0, t, &mut bytes);
        }
        match self.check {
            CheckPolicy::CanaryOnly => {}
            CheckPolicy::Sampled { one_in } => {
                let n_blocks = bytes.len() / t.type_size();
                self.blocks_on_gpu.fetch_add(n_blocks, Ordering::Relaxed);
                self.blocks_sampled.fetch_add(
                    sampled_blocks(name, block0, n_blocks, one_in).len(),
                    Ordering::Relaxed,
                );
                self.blocks_near_tie
                    .fetch_add(near.len(), Ordering::Relaxed);
                if let Some(b) =
                    sampled_mismatch(name, block0, one_in, t, x, ne0, qw, &bytes, near)?
                {
                    eprintln!(
                        "quantize: tensor {name}: checked block {b} of {t} differs from the CPU \
                         reference (adapter {}); re-doing the tensor on the CPU",
                        self.adapter_name()
                    );
                    self.mark_cpu(name);
                    self.distrusted
                        .lock()
                        .expect("distrusted set")
                        .insert(name.to_string());
                    return cpu_quantize(t, x, ne0, qw);
                }
            }
            CheckPolicy::Full => {
                let cpu = cpu_quantize(t, x, ne0, qw)?;
                if let Some(b) = first_mismatch(t, &bytes, &cpu) {
                    let b = block0 + b;
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
                        "tensor {name}: GPU bytes differ from the CPU reference at block {b} of \
                         {t} (adapter {}); rerun with --device cpu",
                        self.adapter_name()
                    );
                }
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
        if let Err(msg) = runnable(&self.gpu, t) {
            if self.strict {
                bail!("--device gpu: {msg}; use --device auto or --device cpu");
            }
            if self.verbose {
                eprintln!("quantize: {msg}; quantizing {t} on the CPU");
            }
            self.canary.lock().expect("canary cache").insert(t, false);
            return Ok(false);
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

    /// Mark `t`'s canary as passed without running it: the tests' way to put a faulty adapter's
    /// kernels past the canary, so that only the sampled check stands in their way.
    #[doc(hidden)]
    pub fn assume_canary_passed(&self, t: GgmlType) {
        self.canary.lock().expect("canary cache").insert(t, true);
    }

    /// Quantize the canary inputs (reference and importance paths) on both sides. `Ok(None)`:
    /// identical; `Ok(Some(why))`: a mismatch.
    pub fn run_canary(&self, t: GgmlType) -> std::result::Result<Option<String>, String> {
        let ne0 = 512;
        let x = canary::edge_case_rows(0xC0FFEE ^ t.type_size() as u64, 12, ne0);
        let qw = canary::edge_case_importance(0xBEEF, ne0);
        // Types that need importance (IQ2_XXS, IQ2_XS, IQ1_S) have no reference path to check.
        let needs_w = quant::block_type(t).is_some_and(|b| b.requires_importance);
        let paths = if needs_w {
            vec![Some(&qw[..])]
        } else {
            vec![None, Some(&qw[..])]
        };
        for w in paths {
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

/// Whether `t`'s kernel can run on this adapter (`quant_block::runnable`); `Err`: the message.
fn runnable(gpu: &GpuBackend, t: GgmlType) -> std::result::Result<(), String> {
    quant_block::runnable(&gpu.ctx, t).map_err(|why| {
        format!(
            "the GPU kernel for {t} cannot run on {} ({why})",
            gpu.adapter_name()
        )
    })
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
    kernel_rows_perturbed(gpu, path, Perturb::None, t, x, ne0, qw)
}

/// As `kernel_rows_on`, with every division moved by one ulp as `perturb` says.
pub fn kernel_rows_perturbed(
    gpu: &GpuBackend,
    path: KernelPath,
    perturb: Perturb,
    t: GgmlType,
    x: &[f32],
    ne0: usize,
    qw: Option<&[f32]>,
) -> Result<Vec<u8>> {
    let mut runs = kernel_rows_variants(gpu, path, &[perturb], t, x, ne0, qw)?;
    Ok(runs.pop().expect("one kernel run per variant"))
}

fn add_elapsed(total_us: &AtomicU64, since: Instant) {
    total_us.fetch_add(since.elapsed().as_micros() as u64, Ordering::Relaxed);
}

/// The blocks of `bytes` that differ in any of `moved` (same length each).
fn differing_blocks(t: GgmlType, bytes: &[u8], moved: &[Vec<u8>]) -> Vec<usize> {
    let ts = t.type_size();
    (0..bytes.len() / ts)
        .filter(|&b| {
            let r = b * ts..(b + 1) * ts;
            moved.iter().any(|m| m[r.clone()] != bytes[r.clone()])
        })
        .collect()
}

/// The kernel's bytes for each of `perturbs` (one list per variant), every variant running on
/// the same uploaded input: the near-tie check's three runs cost one upload.
pub fn kernel_rows_variants(
    gpu: &GpuBackend,
    path: KernelPath,
    perturbs: &[Perturb],
    t: GgmlType,
    x: &[f32],
    ne0: usize,
    qw: Option<&[f32]>,
) -> Result<Vec<Vec<u8>>> {
    if path == KernelPath::Spirv && !quant_block::spirv_available(&gpu.ctx) {
        bail!(
            "no SPIR-V passthrough on adapter {} (Vulkan only)",
            gpu.adapter_name()
        );
    }
    if !supports(t) {
        bail!("no GPU quantization kernel for type {t}");
    }
    runnable(gpu, t).map_err(|msg| anyhow!("{msg}"))?;
    // As quant::quantize_row: the kernel would write zeros where the CPU refuses.
    if qw.is_none() && quant::block_type(t).is_some_and(|b| b.requires_importance) {
        return Err(quant::QuantError::NeedsImportance(t).into());
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
    let mut outs = vec![vec![0u8; n_rows * bpr * ts]; perturbs.len()];
    if n_rows == 0 {
        return Ok(outs);
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
        for (&perturb, out) in perturbs.iter().zip(outs.iter_mut()) {
            let obuf = ctx.pool.get((n_blocks * slot * 4) as u64);
            quant_block::run_on(
                ctx,
                path,
                perturb,
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
        }
        r0 += nr;
    }
    Ok(outs)
}

/// Whether the kernel's f32 intermediates stay finite for this row (then its bytes are exact):
/// with A = max|x| and W a bound on the effective weights, the largest sums the searches form
/// are ~(32·W·A·127)² (IQ4's levels) and (32·W)²·32⁴; W·A ≤ 1e15 and W ≤ 1e15 keep them below
/// f32's max. Real weights (|x| ≲ 1e3, importance ≲ 1e8) are always inside. (Importance 1e30
/// is outside for every weighted type: there the sums overflow, and on lavapipe the IQ4_XS
/// kernel's bytes differed in 13 of 24 edge-case blocks; the conformance rows' `w=1e30` cases
/// check that such rows go to the CPU.)
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

/// The blocks `block0 .. block0 + n_blocks` of tensor `name` that a sampled check compares
/// (indices from `block0`): stratified, one block in each aligned group of `one_in` tensor
/// blocks, at the offset a hash of (name, group) picks, so any block is in the sample with
/// probability 1/`one_in` over the hash and no run of `one_in` blocks goes unchecked; when no
/// picked block falls in the range, the one a hash of (name, `block0`) picks (at least one per
/// call). Deterministic: a function of its arguments only, whatever the split into calls.
pub fn sampled_blocks(name: &str, block0: usize, n_blocks: usize, one_in: u32) -> Vec<usize> {
    if n_blocks == 0 {
        return Vec::new();
    }
    let h_name = fnv1a(name.as_bytes());
    let g = one_in.max(1) as usize;
    let end = block0 + n_blocks;
    let picked: Vec<usize> = (block0 / g..end.div_ceil(g))
        .map(|group| group * g + (splitmix64(h_name ^ group as u64) % g as u64) as usize)
        .filter(|b| (block0..end).contains(b))
        .map(|b| b - block0)
        .collect();
    if picked.is_empty() {
        let h = splitmix64(h_name ^ 0x5EED_0000_0000 ^ block0 as u64);
        return vec![(h % n_blocks as u64) as usize];
    }
    picked
}

/// The sampled check (`sampled_blocks`, plus the blocks `near`, indices from `block0`) of `gpu`,
/// the bytes of rows `x` (blocks from `block0` of tensor `name`): the first checked block
/// (tensor index) whose bytes differ from the CPU reference's. Each sampled block is re-quantized alone (the k-quants' blocks are independent;
/// with importance, the legacy types' σ² needs its whole row, so that row is re-quantized).
#[allow(clippy::too_many_arguments)]
pub fn sampled_mismatch(
    name: &str,
    block0: usize,
    one_in: u32,
    t: GgmlType,
    x: &[f32],
    ne0: usize,
    qw: Option<&[f32]>,
    gpu: &[u8],
    near: &[usize],
) -> Result<Option<usize>> {
    let bs = t.block_size();
    let ts = t.type_size();
    let bpr = ne0 / bs;
    let n_blocks = x.len() / bs;
    if gpu.len() != n_blocks * ts {
        bail!(
            "tensor {name}: {} GPU bytes for {n_blocks} blocks of {t}",
            gpu.len()
        );
    }
    let row_sigma = qw.is_some()
        && quant::block_type(t)
            .and_then(|b| b.gpu_quantize)
            .is_some_and(|k| k.row_sigma2);
    let mut check = sampled_blocks(name, block0, n_blocks, one_in);
    check.extend(near.iter().copied().filter(|&b| b < n_blocks));
    check.sort_unstable();
    check.dedup();
    // On every core (near ties can be a fifth of a tensor's blocks); the first mismatch in block
    // order, as a sequential scan would report it.
    let differs = check
        .par_iter()
        .map_init(
            || vec![0u8; ts],
            |want, &b| -> Result<bool> {
                let got = &gpu[b * ts..(b + 1) * ts];
                let (r, c) = (b / bpr, b % bpr);
                let xb = &x[b * bs..(b + 1) * bs];
                let wb = qw.map(|w| &w[c * bs..(c + 1) * bs]);
                match wb {
                    // The legacy types' importance path reads the whole row's σ²: the block
                    // alone with it gives the bytes it has inside the row.
                    Some(wb) if row_sigma => {
                        let sigma2 = quant::row_sigma2(&x[r * ne0..(r + 1) * ne0]);
                        quant::legacy::quantize_blocks_with_sigma2(t, xb, want, wb, sigma2)
                            .ok_or_else(|| anyhow!("{t}: no row-σ² quantizer"))?;
                    }
                    _ => quant::quantize_row(t, xb, want, wb)?,
                }
                Ok(got != want.as_slice())
            },
        )
        .collect::<Result<Vec<bool>>>()?;
    Ok(check
        .iter()
        .zip(&differs)
        .find(|(_, &d)| d)
        .map(|(&b, _)| block0 + b))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
