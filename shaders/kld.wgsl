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

struct Params {
    // Rows in this dispatch.
    rows: u32,
    n_vocab: u32,
    // Index of this dispatch's first row in `targets` and `out`.
    row0: u32,
    // Always 0; see `opaque`.
    zero: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> zq: array<f32>;
@group(0) @binding(2) var<storage, read> zb: array<f32>;
@group(0) @binding(3) var<storage, read> targets: array<u32>;
// Per row: m_q, m_b, argmax_q, argmax_b, KL sum, KL error, z_q[t], z_b[t] (f32 as bits).
@group(0) @binding(4) var<storage, read_write> out: array<u32>;

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = wid.y * 65535u + wid.x;
    if (row >= p.rows) {
        return;
    }
    let n = p.n_vocab;
    let o = row * n;

    // 1. Maximum and its first index, per invocation over lid, lid + WG, ... then the tree.
    var mq = 0.0;
    var iq = NONE;
    var mb = 0.0;
    var jb = NONE;
    for (var i = lid; i < n; i += WG) {
        let q = zq[o + i];
        let b = zb[o + i];
        if (iq == NONE || q > mq) {
            mq = q;
            iq = i;
        }
        if (jb == NONE || b > mb) {
            mb = b;
            jb = i;
        }
    }
    wa[lid] = mq;
    ia[lid] = iq;
    wb[lid] = mb;
    ib[lid] = jb;
    reduce_argmax2(lid);
    let max_q = wa[0];
    let arg_q = ia[0];
    let max_b = wb[0];
    let arg_b = ib[0];
    workgroupBarrier();

    // 2. Σ exp(z − max) of both rows, compensated; m = max + log Σ.
    var sq = vec2<f32>(0.0, 0.0);
    var sb = vec2<f32>(0.0, 0.0);
    for (var i = lid; i < n; i += WG) {
        sq = acc_add(sq, exp_acc(zq[o + i] - max_q));
        sb = acc_add(sb, exp_acc(zb[o + i] - max_b));
    }
    wa[lid] = sq.x;
    wb[lid] = sq.y;
    wc[lid] = sb.x;
    wd[lid] = sb.y;
    reduce_sums(lid, true);
    let m_q = max_q + log_pair(wa[0], wb[0]);
    let m_b = max_b + log_pair(wc[0], wd[0]);
    workgroupBarrier();

    // 3. KL(base‖quant) = Σ p_b·(lp_b − lp_q) over base log-probs above the floor (the product
    // kept apart from the sum: no fused multiply-add where the CPU rounds twice).
    var kl = vec2<f32>(0.0, 0.0);
    for (var i = lid; i < n; i += WG) {
        let lp = zb[o + i] - m_b;
        if (lp > LOG_PROB_FLOOR) {
            kl = acc_add(kl, opaque(exp_acc(lp) * ((lp - zq[o + i]) + m_q)));
        }
    }
    wa[lid] = kl.x;
    wb[lid] = kl.y;
    reduce_sums(lid, false);

    if (lid == 0u) {
        let r = p.row0 + row;
        let t = targets[r];
        let w = r * 8u;
        out[w] = bitcast<u32>(m_q);
        out[w + 1u] = bitcast<u32>(m_b);
        out[w + 2u] = arg_q;
        out[w + 3u] = arg_b;
        out[w + 4u] = bitcast<u32>(wa[0]);
        out[w + 5u] = bitcast<u32>(wb[0]);
        out[w + 6u] = bitcast<u32>(zq[o + t]);
        out[w + 7u] = bitcast<u32>(zb[o + t]);
    }
}
