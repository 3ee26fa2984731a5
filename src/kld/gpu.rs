//! The GPU side of `KldReduce`: `shaders/kld.wgsl` (both models' logits) and
//! `shaders/kld_record.wgsl` (quant logits against a llama-perplexity base file), with the
//! reduction they share in `shaders/kld_common.wgsl` (its compensated sums and exp are
//! `shaders/lse_common.wgsl`'s, shared with the NLL kernel): per-token KL(base‖quant) on the device, one
//! workgroup per token row. Only an 8-word record per token comes back; the host finishes nll,
//! Δp and same_top with the CPU reference's own f32 formulas (`kld::stats::token_kld_from_parts`).
//! Written against `backend::gpu`'s public API (`Ctx`: pipelines, pool, dispatch), which knows
//! nothing of KLD.

use super::logits_file::BaseRecord;
use super::reduce::KldReduce;
use super::stats::{token_kld_from_parts, TokenKld};
use crate::backend::gpu::kernels::{assemble, nll::LSE_COMMON};
use crate::backend::gpu::{Ctx, GpuBackend, GpuTensor};

pub const SHADER: &str = include_str!("../../shaders/kld.wgsl");
/// Against base-file records (llama-perplexity's `--kl-divergence`).
pub const RECORD_SHADER: &str = include_str!("../../shaders/kld_record.wgsl");
/// The reduction both kernels share.
pub const COMMON: &str = include_str!("../../shaders/kld_common.wgsl");

pub fn source() -> String {
    assemble(&[LSE_COMMON, COMMON, SHADER])
}

pub fn record_source() -> String {
    assemble(&[LSE_COMMON, COMMON, RECORD_SHADER])
}

/// Both kernels as the host assembles them: (label, source), for validation with naga.
pub fn sources() -> Vec<(String, String)> {
    vec![
        ("kld.wgsl".into(), source()),
        ("kld_record.wgsl".into(), record_source()),
    ]
}

/// The `shaders/*.wgsl` files that `sources` covers.
pub fn shader_files() -> Vec<&'static str> {
    vec!["kld_common.wgsl", "kld.wgsl", "kld_record.wgsl"]
}

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

/// Check shapes and targets; false when there is nothing to do.
fn check(zq: &GpuTensor, base_rows: usize, base_cols: usize, targets: &[u32]) -> bool {
    let (rows, n_vocab) = (zq.rows, zq.cols);
    assert!(
        base_rows == rows && base_cols == n_vocab && targets.len() == rows,
        "kld_tokens: quant logits [{rows}, {n_vocab}], base [{base_rows}, {base_cols}], {} targets",
        targets.len()
    );
    if let Some(&t) = targets.iter().find(|&&t| t as usize >= n_vocab) {
        panic!("kld_tokens: target {t} outside the vocabulary of {n_vocab}");
    }
    rows > 0 && n_vocab > 0
}

/// Dispatch one workgroup per row and read the records back. Both per-row inputs are bound in
/// row ranges when they exceed the binding limit; ranges start at multiples of 64 rows, so byte
/// offsets are multiples of 256 whatever the row width.
fn dispatch_rows(
    ctx: &Ctx,
    pipe: &wgpu::ComputePipeline,
    rec_words: u32,
    zq: &GpuTensor,
    base: (&wgpu::Buffer, u64),
    targets: &[u32],
) -> Vec<KldRecord> {
    let (rows, n_vocab) = (zq.rows, zq.cols);
    let tb = ctx.upload_u32(targets);
    let out = ctx.pool.get((rows * RECORD_WORDS * 4) as u64);
    let maxb = ctx.dev.limits.max_storage_buffer_binding_size;
    let zq_row = (n_vocab * 4) as u64;
    let (base_buf, base_row) = base;
    let widest = zq_row.max(base_row);
    let rows_per = if rows as u64 * widest <= maxb {
        rows
    } else {
        (((maxb / widest) as usize) / 64 * 64).max(64)
    };
    let mut r0 = 0;
    while r0 < rows {
        let m = rows_per.min(rows - r0);
        // kld_common.wgsl's Params.
        let params = [m as u32, n_vocab as u32, r0 as u32, 0, rec_words, 0, 0, 0];
        ctx.dispatch_ranges(
            pipe,
            &params,
            &[
                (zq.buffer(), r0 as u64 * zq_row, m as u64 * zq_row),
                (base_buf, r0 as u64 * base_row, m as u64 * base_row),
                (tb.buffer(), 0, tb.buffer().size()),
                (out.buffer(), 0, out.buffer().size()),
            ],
            [m.min(65535) as u32, m.div_ceil(65535) as u32, 1],
        );
        r0 += m;
    }
    ctx.read_u32(out.buffer(), rows * RECORD_WORDS)
        .chunks_exact(RECORD_WORDS)
        .map(KldRecord::from_words)
        .collect()
}

/// The kernel's records for `targets.len()` rows of both logits matrices.
pub fn records(ctx: &Ctx, zq: &GpuTensor, zb: &GpuTensor, targets: &[u32]) -> Vec<KldRecord> {
    if !check(zq, zb.rows, zb.cols, targets) {
        return Vec::new();
    }
    let pipe = ctx.pipeline("kld", source);
    dispatch_rows(
        ctx,
        &pipe,
        0,
        zq,
        (zb.buffer(), (zb.cols * 4) as u64),
        targets,
    )
}

/// Words of one base record on the device: scale, min_log_prob, the codes two per word.
pub fn record_words(n_vocab: usize) -> usize {
    2 + n_vocab.div_ceil(2)
}

/// The record kernel's output for quant logits against base-file records (`m_b` is 0 and
/// `z_b_target` holds the base log-prob of the target).
pub fn records_vs_base_file(
    ctx: &Ctx,
    zq: &GpuTensor,
    base: &[BaseRecord],
    targets: &[u32],
) -> Vec<KldRecord> {
    let n_vocab = base.first().map_or(zq.cols, |r| r.n_vocab());
    if let Some(r) = base.iter().find(|r| r.n_vocab() != n_vocab) {
        panic!(
            "kld_tokens_from_records: records of {} and {} tokens",
            n_vocab,
            r.n_vocab()
        );
    }
    if !check(zq, base.len(), n_vocab, targets) {
        return Vec::new();
    }
    let w = record_words(n_vocab);
    let mut words = Vec::with_capacity(base.len() * w);
    for r in base {
        words.push(r.scale.to_bits());
        words.push(r.min_log_prob.to_bits());
        words.extend(
            r.q.chunks(2)
                .map(|c| c[0] as u32 | (c.get(1).copied().unwrap_or(0) as u32) << 16),
        );
    }
    let rb = ctx.upload_u32(&words);
    let pipe = ctx.pipeline("kld_record", record_source);
    dispatch_rows(
        ctx,
        &pipe,
        w as u32,
        zq,
        (rb.buffer(), (w * 4) as u64),
        targets,
    )
}

/// Per-token results against base-file records (see `KldReduce::kld_tokens_from_records`).
pub fn run_vs_base_file(
    ctx: &Ctx,
    zq: &GpuTensor,
    base: &[BaseRecord],
    targets: &[u32],
) -> Vec<TokenKld> {
    records_vs_base_file(ctx, zq, base, targets)
        .iter()
        .map(|r| {
            token_kld_from_parts(
                r.kl[0] as f64 + r.kl[1] as f64,
                r.m_q - r.z_q_target,
                -r.z_b_target,
                r.argmax_q == r.argmax_b,
            )
        })
        .collect()
}

/// Per-token results (see `KldReduce::kld_tokens`).
pub fn run(ctx: &Ctx, zq: &GpuTensor, zb: &GpuTensor, targets: &[u32]) -> Vec<TokenKld> {
    records(ctx, zq, zb, targets)
        .iter()
        .map(KldRecord::token)
        .collect()
}

impl KldReduce for GpuBackend {
    fn kld_tokens(
        &self,
        quant_logits: &GpuTensor,
        base_logits: &GpuTensor,
        targets: &[u32],
    ) -> Vec<TokenKld> {
        run(&self.ctx, quant_logits, base_logits, targets)
    }

    fn kld_tokens_from_records(
        &self,
        quant_logits: &GpuTensor,
        base: &[BaseRecord],
        targets: &[u32],
    ) -> Vec<TokenKld> {
        run_vs_base_file(&self.ctx, quant_logits, base, targets)
    }
}
