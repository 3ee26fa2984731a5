//! `shaders/kld.wgsl`: per-token KL(base‖quant) on the device, one workgroup per token row.
//! Only an 8-word record per token comes back; the host finishes nll, Δp and same_top with the
//! CPU reference's own f32 formulas (`kld::stats::token_kld_from_parts`).

use super::super::{Ctx, GpuTensor};
use crate::kld::stats::token_kld_from_parts;
use crate::kld::TokenKld;

pub const SHADER: &str = include_str!("../../../../shaders/kld.wgsl");

/// Words per token in the kernel's output.
pub const RECORD_WORDS: usize = 8;

/// What the kernel returns for one token row.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KldRecord {
    /// max + log Σ exp of the quant's logits (log p_q(i) = z_q(i) − m_q).
    pub m_q: f32,
    pub m_b: f32,
    /// First index of each row's maximum.
    pub argmax_q: u32,
    pub argmax_b: u32,
    /// KL sum as a compensated f32 pair (value, error).
    pub kl: [f32; 2],
    /// Both rows' logits at the target token.
    pub z_q_target: f32,
    pub z_b_target: f32,
}

impl KldRecord {
    fn from_words(w: &[u32]) -> KldRecord {
        let f = f32::from_bits;
        KldRecord {
            m_q: f(w[0]),
            m_b: f(w[1]),
            argmax_q: w[2],
            argmax_b: w[3],
            kl: [f(w[4]), f(w[5])],
            z_q_target: f(w[6]),
            z_b_target: f(w[7]),
        }
    }

    /// The token's result, with the CPU's f32 operations (nll = m − z[target]).
    pub fn token(&self) -> TokenKld {
        token_kld_from_parts(
            self.kl[0] as f64 + self.kl[1] as f64,
            self.m_q - self.z_q_target,
            self.m_b - self.z_b_target,
            self.argmax_q == self.argmax_b,
        )
    }
}

/// The kernel's records for `targets.len()` rows of both logits matrices.
pub fn records(ctx: &Ctx, zq: &GpuTensor, zb: &GpuTensor, targets: &[u32]) -> Vec<KldRecord> {
    let (rows, n_vocab) = (zq.rows, zq.cols);
    assert!(
        zb.rows == rows && zb.cols == n_vocab && targets.len() == rows,
        "kld_tokens: quant logits [{rows}, {n_vocab}], base logits [{}, {}], {} targets",
        zb.rows,
        zb.cols,
        targets.len()
    );
    if let Some(&t) = targets.iter().find(|&&t| t as usize >= n_vocab) {
        panic!("kld_tokens: target {t} outside the vocabulary of {n_vocab}");
    }
    if rows == 0 || n_vocab == 0 {
        return Vec::new();
    }
    let pipe = ctx.pipeline("kld", || SHADER.to_string());
    let tb = ctx.upload_u32(targets);
    let out = ctx.pool.get((rows * RECORD_WORDS * 4) as u64);
    // Logits past the binding limit are bound in row ranges whose byte offsets are multiples
    // of 256 (64 rows × 4 bytes × any width), as the matmul does.
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
        let (off, size) = (r0 as u64 * row_bytes, m as u64 * row_bytes);
        let groups = [m.min(65535) as u32, m.div_ceil(65535) as u32, 1];
        ctx.dispatch_ranges(
            &pipe,
            &[m as u32, n_vocab as u32, r0 as u32, 0],
            &[
                (zq.buffer(), off, size),
                (zb.buffer(), off, size),
                (tb.buffer(), 0, tb.buffer().size()),
                (out.buffer(), 0, out.buffer().size()),
            ],
            groups,
        );
        r0 += m;
    }
    ctx.read_u32(out.buffer(), rows * RECORD_WORDS)
        .chunks_exact(RECORD_WORDS)
        .map(KldRecord::from_words)
        .collect()
}

/// Per-token results (see `Backend::kld_tokens`).
pub fn run(ctx: &Ctx, zq: &GpuTensor, zb: &GpuTensor, targets: &[u32]) -> Vec<TokenKld> {
    records(ctx, zq, zb, targets)
        .iter()
        .map(KldRecord::token)
        .collect()
}
