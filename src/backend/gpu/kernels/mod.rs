//! One host module per kernel; each owns exactly one `shaders/<op>.wgsl`. Shared WGSL helpers
//! (`wbytes.wgsl`, `dq_<type>.wgsl`) are prepended by `assemble`.

pub mod add;
pub mod attention;
pub mod gather_rows;
pub mod get_rows;
pub mod matmul;
pub mod matmul_tiled;
pub mod matmul_unrolled;
pub mod mm_stats;
pub mod quant_block;
pub mod rms_norm;
pub mod rope;
pub mod scatter_add;
pub mod silu_mul;

use crate::gguf::GgmlType;

/// Byte readers over the raw weight words `wq`.
pub const WBYTES: &str = include_str!("../../../../shaders/wbytes.wgsl");

/// Weight types the kernels dequantize.
pub const WEIGHT_TYPES: [GgmlType; 11] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
];

/// The `dq32` helper for a weight type.
pub fn dq_helper(t: GgmlType) -> Option<&'static str> {
    Some(match t {
        GgmlType::F32 => include_str!("../../../../shaders/dq_f32.wgsl"),
        GgmlType::F16 => include_str!("../../../../shaders/dq_f16.wgsl"),
        GgmlType::BF16 => include_str!("../../../../shaders/dq_bf16.wgsl"),
        GgmlType::Q8_0 => include_str!("../../../../shaders/dq_q8_0.wgsl"),
        GgmlType::Q4_0 => include_str!("../../../../shaders/dq_q4_0.wgsl"),
        GgmlType::Q4_1 => include_str!("../../../../shaders/dq_q4_1.wgsl"),
        GgmlType::Q5_0 => include_str!("../../../../shaders/dq_q5_0.wgsl"),
        GgmlType::Q5_1 => include_str!("../../../../shaders/dq_q5_1.wgsl"),
        GgmlType::Q4K => include_str!("../../../../shaders/dq_q4_k.wgsl"),
        GgmlType::Q5K => include_str!("../../../../shaders/dq_q5_k.wgsl"),
        GgmlType::Q6K => include_str!("../../../../shaders/dq_q6_k.wgsl"),
        _ => return None,
    })
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
    assemble(&[WBYTES, dq_helper(t).expect("supported weight type"), kernel])
}

/// Every shader as the host assembles it: (label, source), for validation with naga. The KLD
/// kernels are `kld::gpu`'s (`kld::gpu::sources`).
pub fn all_sources() -> Vec<(String, String)> {
    let mut v = Vec::new();
    for t in WEIGHT_TYPES {
        v.push((format!("matmul.wgsl+{t}"), matmul::source(t)));
        v.push((format!("matmul_tiled.wgsl+{t}"), matmul_tiled::source(t)));
        v.push((
            format!("matmul_unrolled.wgsl+{t}"),
            matmul_unrolled::source(t),
        ));
        v.push((format!("get_rows.wgsl+{t}"), get_rows::source(t)));
    }
    v.push(("mm_stats.wgsl".into(), mm_stats::SHADER.into()));
    v.push(("rms_norm.wgsl".into(), rms_norm::SHADER.into()));
    v.push(("rope.wgsl".into(), rope::SHADER.into()));
    v.push(("attention.wgsl".into(), attention::SHADER.into()));
    v.push(("silu_mul.wgsl".into(), silu_mul::SHADER.into()));
    v.push(("add.wgsl".into(), add::SHADER.into()));
    v.push(("gather_rows.wgsl".into(), gather_rows::SHADER.into()));
    v.push(("scatter_add.wgsl".into(), scatter_add::SHADER.into()));
    for t in quant_block::TYPES {
        v.push((
            format!("quant+{t}"),
            quant_block::source(t).expect("listed type"),
        ));
    }
    v
}

/// The `shaders/*.wgsl` file names that `all_sources` covers (kernels and helpers).
pub fn shader_files() -> Vec<&'static str> {
    vec![
        "wbytes.wgsl",
        "dq_f32.wgsl",
        "dq_f16.wgsl",
        "dq_bf16.wgsl",
        "dq_q8_0.wgsl",
        "dq_q4_0.wgsl",
        "dq_q4_1.wgsl",
        "dq_q5_0.wgsl",
        "dq_q5_1.wgsl",
        "dq_q4_k.wgsl",
        "dq_q5_k.wgsl",
        "dq_q6_k.wgsl",
        "matmul.wgsl",
        "matmul_tiled.wgsl",
        "matmul_unrolled.wgsl",
        "get_rows.wgsl",
        "mm_stats.wgsl",
        "rms_norm.wgsl",
        "rope.wgsl",
        "attention.wgsl",
        "silu_mul.wgsl",
        "add.wgsl",
        "gather_rows.wgsl",
        "scatter_add.wgsl",
        "quant_common.wgsl",
        "quant_q8_0.wgsl",
        "quant_q4_0.wgsl",
        "quant_q4_1.wgsl",
        "quant_q5_0.wgsl",
        "quant_q5_1.wgsl",
        "quant_q4_k.wgsl",
        "quant_q5_k.wgsl",
        "quant_q6_k.wgsl",
    ]
}
