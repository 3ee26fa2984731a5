// Per-token KL divergence against a llama-perplexity base file (kld/stats.rs
// `token_kld_from_record`), one workgroup per token row. The base side is a record of 16-bit
// codes: lp_b(i) = scale·code(i) + min_log_prob.
//   m_q = max_q + log Σ exp(z_q − max_q),
//   KL  = Σ_{lp_b > −16} exp(lp_b)·((lp_b − z_q) + m_q),
//   first argmax of z_q and of lp_b, z_q and lp_b at the target token.
// The bindings, entry point and reduction are kld_common.wgsl's (precision and determinism as
// kld.wgsl); this file supplies the base side, decoded from the records.

@group(0) @binding(2) var<storage, read> rec: array<u32>;

// The base side is log-probs (m_b = 0), decoded from this workgroup's record.
const BASE_LOGITS: bool = false;
var<private> rec_row: u32;
var<private> scale: f32;
var<private> lp_min: f32;

fn begin_row(row: u32) {
    rec_row = row * p.rec_words;
    scale = bitcast<f32>(rec[rec_row]);
    lp_min = bitcast<f32>(rec[rec_row + 1u]);
}

// The CPU's scale·code + min, two roundings (no fused multiply-add).
fn base_value(i: u32) -> f32 {
    let code = (rec[rec_row + 2u + (i >> 1u)] >> ((i & 1u) * 16u)) & 0xffffu;
    return opaque(scale * f32(code)) + lp_min;
}
