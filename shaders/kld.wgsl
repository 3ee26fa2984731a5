// Per-token KL divergence of a quantized model from its base (llama-perplexity's definitions, as
// kld/stats.rs `token_kld_from_logits`), one workgroup per token row:
//   m_q = max_q + log Σ exp(z_q − max_q), m_b likewise (log-softmax offsets),
//   KL  = Σ_{lp_b > −16} exp(lp_b)·((lp_b − z_q) + m_q) with lp_b = z_b − m_b,
//   first argmax of each row, and both rows' logits at the target token.
// The host finishes nll, Δp and same_top from this record with the CPU's own f32 formulas.
//
// Precision (WGSL has no f64, the CPU reference sums in f64): Σexp and the KL sum are kept as
// compensated (sum, error) pairs of f32 (TwoSum), per invocation and through the tree, so the
// sums carry ~48 bits; exp and log Σexp are evaluated in kld_common.wgsl to ~1 ulp rather than
// with the built-ins (lavapipe's exp: up to 17 ulp and biased; the WGSL spec allows log 2^-21
// absolute error on [0.5, 2]). Every per-element f32 operation is the CPU's, in its order.
// Determinism: each invocation walks its elements in index order and the reduction tree is fixed.
// The bindings, entry point and reduction are kld_common.wgsl's; this file supplies the base
// side, the base model's logits.

@group(0) @binding(2) var<storage, read> zb: array<f32>;

// Both sides are logits.
const BASE_LOGITS: bool = true;
// Offset of this workgroup's row in zb.
var<private> base_row: u32;

fn begin_row(row: u32) {
    base_row = row * p.n_vocab;
}

fn base_value(i: u32) -> f32 {
    return zb[base_row + i];
}
