// Per-token KL divergence against a llama-perplexity base file (kld/stats.rs
// `token_kld_from_record`), one workgroup per token row. The base side is a record of 16-bit
// codes: lp_b(i) = scale·code(i) + min_log_prob.
//   m_q = max_q + log Σ exp(z_q − max_q),
//   KL  = Σ_{lp_b > −16} exp(lp_b)·((lp_b − z_q) + m_q),
//   first argmax of z_q and of lp_b, z_q and lp_b at the target token.
// Helpers, precision and determinism as kld.wgsl (kld_common.wgsl).

struct Params {
    rows: u32,
    n_vocab: u32,
    row0: u32,
    // Always 0; see `opaque`.
    zero: u32,
    // Words per record: scale, min_log_prob, then the codes two per word (low half first).
    rec_words: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> zq: array<f32>;
@group(0) @binding(2) var<storage, read> rec: array<u32>;
@group(0) @binding(3) var<storage, read> targets: array<u32>;
// Per row: m_q, 0, argmax_q, argmax_b, KL sum, KL error, z_q[t], lp_b[t] (f32 as bits).
@group(0) @binding(4) var<storage, read_write> out: array<u32>;

// The CPU's scale·code + min, two roundings (no fused multiply-add).
fn base_lp(o: u32, i: u32, scale: f32, lp_min: f32) -> f32 {
    let code = (rec[o + 2u + (i >> 1u)] >> ((i & 1u) * 16u)) & 0xffffu;
    return opaque(scale * f32(code)) + lp_min;
}

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
    let ro = row * p.rec_words;
    let scale = bitcast<f32>(rec[ro]);
    let lp_min = bitcast<f32>(rec[ro + 1u]);

    // 1. First argmax of both sides, and the quant's maximum.
    var mq = 0.0;
    var iq = NONE;
    var mb = 0.0;
    var jb = NONE;
    for (var i = lid; i < n; i += WG) {
        let q = zq[o + i];
        let b = base_lp(ro, i, scale, lp_min);
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
    let arg_b = ib[0];
    workgroupBarrier();

    // 2. m_q = max_q + log Σ exp(z_q − max_q).
    var sq = vec2<f32>(0.0, 0.0);
    for (var i = lid; i < n; i += WG) {
        sq = acc_add(sq, exp_acc(zq[o + i] - max_q));
    }
    wa[lid] = sq.x;
    wb[lid] = sq.y;
    reduce_sums(lid, false);
    let m_q = max_q + log_pair(wa[0], wb[0]);
    workgroupBarrier();

    // 3. KL over the base log-probs above the floor.
    var kl = vec2<f32>(0.0, 0.0);
    for (var i = lid; i < n; i += WG) {
        let lp = base_lp(ro, i, scale, lp_min);
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
        out[w + 1u] = 0u;
        out[w + 2u] = arg_q;
        out[w + 3u] = arg_b;
        out[w + 4u] = bitcast<u32>(wa[0]);
        out[w + 5u] = bitcast<u32>(wb[0]);
        out[w + 6u] = bitcast<u32>(zq[o + t]);
        out[w + 7u] = bitcast<u32>(base_lp(ro, t, scale, lp_min));
    }
}
