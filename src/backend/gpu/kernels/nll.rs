//! `shaders/nll.wgsl` (with `shaders/lse_common.wgsl`'s helpers): per-token negative
//! log-likelihood of logits against targets, one workgroup per row. The kernel returns
//! (max, Σexp as a compensated pair, z[target]) per token — 16 bytes instead of the row's
//! logits — and the host finishes nll = log Σ + max − z[target] in f64 like the CPU reference
//! (`backend::cpu::nll`).

use super::super::{Ctx, GpuTensor};
use super::assemble;

pub const SHADER: &str = include_str!("../../../../shaders/nll.wgsl");
/// The compensated sums and exp shared with the KL-divergence kernels.
pub const LSE_COMMON: &str = include_str!("../../../../shaders/lse_common.wgsl");

pub fn source() -> String {
    assemble(&[LSE_COMMON, SHADER])
}

/// Words per token in the kernel's output (`max`, Σ value, Σ error, z[target]).
pub const RECORD_WORDS: usize = 4;

/// The host's part: nll from one record, with the CPU reference's f64 operations (a NaN `max`
/// marks a row that holds a non-finite logit).
pub fn nll_from_record(w: &[u32]) -> f64 {
    let f = f32::from_bits;
    let (max, hi, lo, zt) = (f(w[0]), f(w[1]), f(w[2]), f(w[3]));
    if max.is_nan() {
        return f64::NAN;
    }
    ((hi as f64) + (lo as f64)).ln() - (zt - max) as f64
}

/// The raw records of `targets.len()` rows of `logits`, `RECORD_WORDS` words per row.
pub fn records(ctx: &Ctx, logits: &GpuTensor, targets: &[u32]) -> Vec<u32> {
    let (rows, n_vocab) = (logits.rows, logits.cols);
    assert_eq!(
        targets.len(),
        rows,
        "token_nlls: logits [{rows}, {n_vocab}] against {} targets",
        targets.len()
    );
    if let Some(&t) = targets.iter().find(|&&t| t as usize >= n_vocab) {
        panic!("token_nlls: target {t} outside the vocabulary of {n_vocab}");
    }
    if rows == 0 {
        return Vec::new();
    }
    let pipe = ctx.pipeline("nll", source);
    let tb = ctx.upload_u32(targets);
    let out = ctx.pool.get((rows * RECORD_WORDS * 4) as u64);
    // Logits over the binding limit are bound in row ranges that start at multiples of 64 rows,
    // so byte offsets are multiples of 256 whatever the row width.
    let maxb = ctx.dev.limits.max_storage_buffer_binding_size;
    let row_bytes = (n_vocab * 4) as u64;
    let rows_per = if rows as u64 * row_bytes <= maxb {
        rows
    } else {
        (((maxb / row_bytes) as usize) / 64 * 64).max(64)
    };
    let mut r0 = 0;
    while r0 < rows {
        let m = rows_per.min(rows - r0);
        // nll.wgsl's Params: rows, n_vocab, row0, zero.
        let params = [m as u32, n_vocab as u32, r0 as u32, 0];
        ctx.dispatch_ranges(
            &pipe,
            &params,
            &[
                (logits.buffer(), r0 as u64 * row_bytes, m as u64 * row_bytes),
                (tb.buffer(), 0, tb.buffer().size()),
                (out.buffer(), 0, out.buffer().size()),
            ],
            [m.min(65535) as u32, m.div_ceil(65535) as u32, 1],
        );
        r0 += m;
    }
    ctx.read_u32(out.buffer(), rows * RECORD_WORDS)
}

/// Per-token nll (see `Backend::token_nlls`).
pub fn run(ctx: &Ctx, logits: &GpuTensor, targets: &[u32]) -> Vec<f64> {
    records(ctx, logits, targets)
        .chunks_exact(RECORD_WORDS)
        .map(nll_from_record)
        .collect()
}
