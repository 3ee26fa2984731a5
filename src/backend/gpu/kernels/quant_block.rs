//! `shaders/quant_<type>.wgsl` (+ the shared `quant_common.wgsl`): block quantization, one
//! invocation per 32-value block (Q8_0, the legacy types, IQ4_NL), or 8 lanes of a subgroup per
//! 256-value super-block for the K-quants, IQ4_XS and the IQ1/IQ2/IQ3 types (`quant_coop.wgsl`,
//! where the device has subgroups of ≥ 8 lanes), bytes identical to
//! `quant::quantize_row` (see `quantize::gpu`). The kernel of each type is its
//! `quant::BlockType` row's `gpu_quantize`. On Vulkan the kernels go to the
//! driver as SPIR-V with every float op `NoContraction` and the float-controls modes the device
//! supports (`spirv.rs`); elsewhere as WGSL. `shaders/quant_arith.wgsl` runs the exact helpers
//! (`div_rn`, `sqrt_rn`, `mul_rn`) one operation per invocation, for the tests.

use super::super::spirv::{self, Guarantees};
use super::super::Ctx;
use crate::gguf::GgmlType;
use crate::quant;
use std::borrow::Cow;
use std::sync::Arc;

pub const COMMON: &str = include_str!("../../../../shaders/quant_common.wgsl");
pub const ARITH: &str = include_str!("../../../../shaders/quant_arith.wgsl");
pub const COOP: &str = include_str!("../../../../shaders/quant_coop.wgsl");

/// Block types with a quantization kernel (the table's rows that have one).
pub const TYPES: [GgmlType; N_TYPES] = super::table_types(false);
const N_TYPES: usize = super::count_table_types(false);

/// How a kernel reaches the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelPath {
    /// naga SPIR-V with NoContraction and float controls, through wgpu's passthrough (Vulkan).
    Spirv,
    /// WGSL through wgpu (every backend).
    Wgsl,
}

impl KernelPath {
    pub fn name(self) -> &'static str {
        match self {
            KernelPath::Spirv => "spirv",
            KernelPath::Wgsl => "wgsl",
        }
    }
}

/// The path with the stronger guarantees on this device: SPIR-V wherever passthrough is enabled,
/// unless the environment sets `WQUANT_QUANT_PATH=wgsl` (an escape hatch should a driver reject
/// the SPIR-V; the canary still guards the WGSL path).
pub fn best_path(ctx: &Ctx) -> KernelPath {
    let forced_wgsl = std::env::var("WQUANT_QUANT_PATH").is_ok_and(|v| v == "wgsl");
    if spirv_available(ctx) && !forced_wgsl {
        KernelPath::Spirv
    } else {
        KernelPath::Wgsl
    }
}

/// Whether the SPIR-V path can run on this device (Vulkan with passthrough enabled).
pub fn spirv_available(ctx: &Ctx) -> bool {
    ctx.dev.info.backend == wgpu::Backend::Vulkan
        && ctx
            .dev
            .features
            .contains(wgpu::Features::PASSTHROUGH_SHADERS)
}

/// What `path` guarantees on this device.
pub fn guarantees(ctx: &Ctx, path: KernelPath) -> Guarantees {
    match path {
        KernelPath::Wgsl => Guarantees::WGSL,
        KernelPath::Spirv => spirv::guarantees(&ctx.dev.adapter, ctx.dev.features),
    }
}

/// The assembled source for type `t` on `path`: the shared helpers (with the cooperative ones for
/// a kernel of 8 lanes per block), quant_common's private arrays sized to what one invocation
/// holds (`PRIV_N`: the block's values over its lanes, 32 or 256: private memory is what limits
/// how many invocations a GPU keeps in flight), whether `opaque` guards against reassociation
/// (`path_consts`), the kernel's constants, the kernel.
pub fn source(t: GgmlType, path: KernelPath) -> Option<String> {
    let g = quant::block_type(t)?.gpu_quantize?;
    let k = g.kernel;
    let priv_n = format!(
        "const PRIV_N: u32 = {}u;",
        t.block_size() / g.lanes_per_block as usize
    );
    let coop = if g.lanes_per_block > 1 { COOP } else { "" };
    Some(super::assemble(&[
        COMMON,
        &priv_n,
        path_consts(path),
        coop,
        k.consts,
        k.source,
    ]))
}

/// quant_common.wgsl's `OPAQUE_GUARD`: on the SPIR-V path every float op is NoContraction,
/// which in SPIR-V also forbids reassociation, so `opaque` is the identity there (the
/// regression `gpuquant_blocks::synth_moe_blocks_that_once_differed` runs on that path); WGSL
/// (Metal, DX12, or Vulkan without passthrough) has no such decoration and keeps the guard.
fn path_consts(path: KernelPath) -> &'static str {
    match path {
        KernelPath::Spirv => "const OPAQUE_GUARD = false;",
        KernelPath::Wgsl => "const OPAQUE_GUARD = true;",
    }
}

/// quant_common.wgsl's private arrays for the arithmetic test kernel.
const PRIV_N_BLOCK: &str = "const PRIV_N: u32 = 256u;";

/// Lanes of kernel `t` per block (1 or 8).
fn lanes_per_block(t: GgmlType) -> usize {
    quant::block_type(t)
        .and_then(|b| b.gpu_quantize)
        .map_or(1, |g| g.lanes_per_block as usize)
}

/// Whether kernel `t` can run on this device: those of 8 lanes per block need subgroups of at
/// least 8 lanes, and `WQUANT_QUANT_SUBGROUPS=0` turns them off (an escape hatch should a driver
/// mishandle them, as `WQUANT_QUANT_PATH=wgsl` is for the SPIR-V path). `Err` says why not.
pub fn runnable(ctx: &Ctx, t: GgmlType) -> Result<(), String> {
    if lanes_per_block(t) == 1 {
        return Ok(());
    }
    if std::env::var("WQUANT_QUANT_SUBGROUPS").is_ok_and(|v| v == "0") {
        return Err("its subgroup kernel is turned off by WQUANT_QUANT_SUBGROUPS=0".into());
    }
    subgroups_fit(ctx.dev.features, &ctx.dev.info)
}

/// Whether an adapter with `features` and `info` can run the 8-lane kernels: subgroup
/// operations with at least 8 lanes (`wquant devices` reports it). `Err` says why not.
pub fn subgroups_fit(features: wgpu::Features, info: &wgpu::AdapterInfo) -> Result<(), String> {
    if !features.contains(wgpu::Features::SUBGROUP) {
        return Err("the adapter has no subgroup operations".into());
    }
    if info.subgroup_min_size < 8 {
        return Err(format!(
            "the adapter's subgroups may have {} lanes, fewer than the kernel's 8",
            info.subgroup_min_size
        ));
    }
    Ok(())
}

/// The assembled arithmetic test kernel (it calls no `opaque`).
pub fn arith_source() -> String {
    super::assemble(&[COMMON, PRIV_N_BLOCK, path_consts(KernelPath::Wgsl), ARITH])
}

/// Words of a block's bytes in its output slot (the bytes rounded up to 4).
pub fn slot_words(t: GgmlType) -> usize {
    t.type_size().div_ceil(4)
}

/// Every `div_rn` result of a kernel moved by one ulp (`Params.perturb`), as on an adapter whose
/// division is not correctly rounded: the near-tie detector (`quantize::gpu::near_ties`) and the
/// tests' faulty adapter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Perturb {
    #[default]
    None = 0,
    DivUp = 1,
    DivDown = 2,
}

/// The pipeline of `key` (assembled `src`) on `path`. The SPIR-V one has an explicit layout
/// (passthrough modules carry no reflection): binding 0 the uniform parameters, 1–3 read-only
/// storage, 4 the read-write output, as quant_common.wgsl declares them, and 5 the read-only
/// constant tables of the kernels whose row has `tables`.
fn pipeline(
    ctx: &Ctx,
    key: &str,
    path: KernelPath,
    src: impl FnOnce() -> String,
) -> Arc<wgpu::ComputePipeline> {
    match path {
        KernelPath::Wgsl => ctx.pipeline(&format!("{key}@wgsl"), src),
        KernelPath::Spirv => {
            assert!(
                spirv_available(ctx),
                "the SPIR-V path needs Vulkan with PASSTHROUGH_SHADERS"
            );
            let g = guarantees(ctx, path);
            let label = format!("{key}@spirv");
            ctx.pipeline_with(&label, |d| {
                // The sources are validated by naga in tests (kernels::all_sources): a failure
                // here is a bug, not bad input.
                let src_text = src();
                let words = spirv::compile(&src_text, &g).expect("quant kernel compiles to SPIR-V");
                // SAFETY: the module is naga's own output for a validated WGSL module, changed
                // only by decorations and execution modes the device supports (spirv.rs); its
                // interface matches the explicit layout below.
                let module = unsafe {
                    d.create_shader_module_passthrough(wgpu::ShaderModuleDescriptorPassthrough {
                        label: Some(&label),
                        entry_points: Cow::Owned(vec![wgpu::PassthroughShaderEntryPoint {
                            name: "main".into(),
                            workgroup_size: (64, 1, 1),
                        }]),
                        spirv: Some(Cow::Owned(words)),
                        ..Default::default()
                    })
                };
                // The layout every kernel gets from its WGSL (record.rs): dynamic-offset
                // uniform at 0, storage by access.
                let entries = super::super::record::layout_entries(&label, &src_text);
                let bgl = d.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                    label: Some(&label),
                    entries: &entries,
                });
                let layout = d.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                    label: Some(&label),
                    bind_group_layouts: &[Some(&bgl)],
                    immediate_size: 0,
                });
                d.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(&label),
                    layout: Some(&layout),
                    module: &module,
                    entry_point: Some("main"),
                    compilation_options: Default::default(),
                    cache: None,
                })
            })
        }
    }
}

/// The uniform parameters (quant_common.wgsl's `Params`): `neg_zero` is −0.0, `_pad` 0.
fn params(n: u32, blocks_per_row: u32, has_w: u32, perturb: Perturb) -> [u32; 8] {
    [
        n,
        blocks_per_row,
        has_w,
        0,
        0x8000_0000,
        perturb as u32,
        0,
        0,
    ]
}

/// Quantize `n_blocks` blocks of `x` (`blocks_per_row` per row, `bs` values each). `w` holds one
/// importance per column (bound but unread when `has_w` is false), `sigma2` one σ² per row.
/// Writes `n_blocks · slot_words(t)` words to `out`. The kernel runs on `best_path`.
#[allow(clippy::too_many_arguments)]
pub fn run(
    ctx: &Ctx,
    t: GgmlType,
    x: &wgpu::Buffer,
    w: &wgpu::Buffer,
    sigma2: &wgpu::Buffer,
    out: &wgpu::Buffer,
    n_blocks: usize,
    blocks_per_row: usize,
    has_w: bool,
) {
    run_on(
        ctx,
        best_path(ctx),
        Perturb::None,
        t,
        x,
        w,
        sigma2,
        out,
        n_blocks,
        blocks_per_row,
        has_w,
    )
}

/// As `run`, on `path`, with the fault `perturb` injected.
#[allow(clippy::too_many_arguments)]
pub fn run_on(
    ctx: &Ctx,
    path: KernelPath,
    perturb: Perturb,
    t: GgmlType,
    x: &wgpu::Buffer,
    w: &wgpu::Buffer,
    sigma2: &wgpu::Buffer,
    out: &wgpu::Buffer,
    n_blocks: usize,
    blocks_per_row: usize,
    has_w: bool,
) {
    if n_blocks == 0 {
        return;
    }
    let key = format!("quant_{t}");
    let pipe = pipeline(ctx, &key, path, || {
        source(t, path).expect("type with a quant kernel")
    });
    let tables = quant::block_type(t)
        .and_then(|b| b.gpu_quantize)
        .and_then(|g| g.tables)
        .map(|build| ctx.table_u32(&format!("{key}_tables"), build));
    let mut buffers = vec![x, w, sigma2, out];
    buffers.extend(tables.as_ref());
    ctx.dispatch(
        &pipe,
        &params(
            n_blocks as u32,
            blocks_per_row as u32,
            has_w as u32,
            perturb,
        ),
        &buffers,
        Ctx::groups_1d(n_blocks * lanes_per_block(t)),
    );
}

/// An operation of `quant_arith.wgsl`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArithOp {
    /// `div_rn(a, b)`.
    Div = 0,
    /// `sqrt_rn(a)`.
    Sqrt = 1,
    /// `mul_rn(a, b)`.
    Mul = 2,
}

/// The bits of `op` applied on the device (on `path`) to each `(a[i], b[i])`.
pub fn arith(ctx: &Ctx, path: KernelPath, op: ArithOp, a: &[f32], b: &[f32]) -> Vec<u32> {
    assert_eq!(a.len(), b.len(), "one b per a");
    if a.is_empty() {
        return Vec::new();
    }
    let pipe = pipeline(ctx, "quant_arith", path, arith_source);
    let abuf = ctx.upload_f32(a);
    let bbuf = ctx.upload_f32(b);
    let sbuf = ctx.upload_f32(&[0.0]);
    let obuf = ctx.pool.get((a.len() * 4) as u64);
    ctx.dispatch(
        &pipe,
        &params(a.len() as u32, 1, op as u32, Perturb::None),
        &[abuf.buffer(), bbuf.buffer(), sbuf.buffer(), obuf.buffer()],
        Ctx::groups_1d(a.len()),
    );
    ctx.read_u32(obuf.buffer(), a.len())
}
