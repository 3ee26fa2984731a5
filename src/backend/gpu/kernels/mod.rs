//! One host module per kernel; each owns exactly one `shaders/<op>.wgsl`. Shared WGSL helpers
//! (`wbytes.wgsl`, each weight type's `dq32` helper from its `quant::BlockType` row) are prepended
//! by `assemble`.

pub mod add;
pub mod add_bias;
pub mod attention;
pub mod attention_flash;
pub mod gather_rows;
pub mod gelu_mul;
pub mod get_rows;
pub mod gptq_update;
pub mod gram;
pub mod matmul;
pub mod matmul_sgemm;
pub mod matmul_unrolled;
pub mod mm_stats;
pub mod nll;
pub mod quant_block;
pub mod rms_norm;
pub mod rope;
pub mod scale;
pub mod scatter_add;
pub mod silu_mul;

use crate::gguf::GgmlType;
use crate::quant;

/// Byte readers over the raw weight words `wq`.
pub const WBYTES: &str = include_str!("../../../../shaders/wbytes.wgsl");

/// Weight types the kernels dequantize: the table's rows with a WGSL dequantization helper.
pub const WEIGHT_TYPES: [GgmlType; N_WEIGHT_TYPES] = table_types(true);
const N_WEIGHT_TYPES: usize = count_table_types(true);

/// How many table rows have a dequantization helper (`dq`) or a quantization kernel.
pub(crate) const fn count_table_types(dq: bool) -> usize {
    let mut n = 0;
    let mut i = 0;
    while i < quant::BLOCK_TYPES.len() {
        let b = quant::BLOCK_TYPES[i];
        if (dq && b.wgsl_dequantize.is_some()) || (!dq && b.gpu_quantize.is_some()) {
            n += 1;
        }
        i += 1;
    }
    n
}

/// Those rows' types, in table order (`N` from `count_table_types`).
pub(crate) const fn table_types<const N: usize>(dq: bool) -> [GgmlType; N] {
    let mut v = [GgmlType::F32; N];
    let mut n = 0;
    let mut i = 0;
    while i < quant::BLOCK_TYPES.len() {
        let b = quant::BLOCK_TYPES[i];
        if (dq && b.wgsl_dequantize.is_some()) || (!dq && b.gpu_quantize.is_some()) {
            v[n] = b.ggml;
            n += 1;
        }
        i += 1;
    }
    v
}

/// The `dq32`/`dq1` helper for a weight type, with the constants that instantiate it.
pub fn dq_helper(t: GgmlType) -> Option<String> {
    let h = quant::block_type(t)?.wgsl_dequantize?;
    Some(assemble(&[h.consts, h.source]))
}

/// Helpers first, then the kernel (WGSL module scope is order-independent; this keeps line
/// numbers of the kernel's own errors readable at the end).
pub fn assemble(parts: &[&str]) -> String {
    let mut s = String::new();
    for p in parts {
        s.push_str(p);
        s.push('\n');
    }
    s
}

/// The assembled source of a kernel that reads weights of type `t`.
pub fn with_weights(t: GgmlType, kernel: &str) -> String {
    assemble(&[
        WBYTES,
        &dq_helper(t).expect("supported weight type"),
        kernel,
    ])
}

/// Every shader as the host assembles it: (label, source), for validation with naga. The KLD
/// kernels are `kld::gpu`'s (`kld::gpu::sources`).
pub fn all_sources() -> Vec<(String, String)> {
    let mut v = Vec::new();
    for t in WEIGHT_TYPES {
        v.push((format!("matmul.wgsl+{t}"), matmul::source(t)));
        // Every tile shape, x read as vec4s and as floats.
        let tiles = matmul_sgemm::MANY_TILES
            .into_iter()
            .chain([matmul_sgemm::FEW_TILE, matmul_sgemm::FALLBACK_TILE]);
        for (i, tile) in tiles.enumerate() {
            use matmul_sgemm::TileElem;
            for elem in [TileElem::F32, TileElem::F16] {
                v.push((
                    format!("matmul_sgemm.wgsl+{t}+{}+tiles-{elem:?}", tile.key()),
                    matmul_sgemm::source(t, tile, i % 2 == 0, elem),
                ));
            }
        }
        v.push((
            format!("matmul_unrolled.wgsl+{t}"),
            matmul_unrolled::source(t),
        ));
        v.push((format!("get_rows.wgsl+{t}"), get_rows::source(t)));
    }
    v.push(("mm_stats.wgsl".into(), mm_stats::SHADER.into()));
    v.push(("gram.wgsl".into(), gram::SHADER.into()));
    v.push(("gptq_update.wgsl".into(), gptq_update::SHADER.into()));
    v.push(("rms_norm.wgsl".into(), rms_norm::SHADER.into()));
    v.push(("rope.wgsl".into(), rope::SHADER.into()));
    v.push(("attention.wgsl".into(), attention::SHADER.into()));
    v.extend(attention_flash::sources());
    v.push(("silu_mul.wgsl".into(), silu_mul::SHADER.into()));
    v.push(("gelu_mul.wgsl".into(), gelu_mul::SHADER.into()));
    v.push(("scale.wgsl".into(), scale::SHADER.into()));
    v.push(("add.wgsl".into(), add::SHADER.into()));
    v.push(("add_bias.wgsl".into(), add_bias::SHADER.into()));
    v.push(("gather_rows.wgsl".into(), gather_rows::SHADER.into()));
    v.push(("scatter_add.wgsl".into(), scatter_add::SHADER.into()));
    v.push(("nll.wgsl".into(), nll::source()));
    for t in quant_block::TYPES {
        for path in [
            quant_block::KernelPath::Wgsl,
            quant_block::KernelPath::Spirv,
        ] {
            v.push((
                format!("quant+{t}@{}", path.name()),
                quant_block::source(t, path).expect("listed type"),
            ));
        }
    }
    v.push(("quant_arith.wgsl".into(), quant_block::arith_source()));
    v
}

/// The `shaders/*.wgsl` file names that `all_sources` covers (kernels and helpers): the
/// type-independent ones and each table row's.
pub fn shader_files() -> Vec<&'static str> {
    let mut v = vec![
        "wbytes.wgsl",
        "matmul.wgsl",
        "matmul_sgemm.wgsl",
        "matmul_unrolled.wgsl",
        "get_rows.wgsl",
        "mm_stats.wgsl",
        "gram.wgsl",
        "gptq_update.wgsl",
        "rms_norm.wgsl",
        "rope.wgsl",
        "attention.wgsl",
        "attention_flash.wgsl",
        "silu_mul.wgsl",
        "gelu_mul.wgsl",
        "scale.wgsl",
        "add.wgsl",
        "add_bias.wgsl",
        "gather_rows.wgsl",
        "scatter_add.wgsl",
        "lse_common.wgsl",
        "nll.wgsl",
        "quant_common.wgsl",
        "quant_coop.wgsl",
        "quant_iq4.wgsl",
        "quant_arith.wgsl",
    ];
    for b in quant::BLOCK_TYPES {
        let dq = b.wgsl_dequantize.map(|w| w.file);
        let q = b.gpu_quantize.map(|g| g.kernel.file);
        for f in [dq, q].into_iter().flatten() {
            if !v.contains(&f) {
                v.push(f);
            }
        }
    }
    v
}
