// The KL-divergence kernels' shared part: the bindings, the entry point and the per-row
// reduction (`kld_row`), with its helpers (log to ~1 ulp, the first-argmax rule, the workgroup
// arrays of the reductions; compensated f32 sums and exp come from lse_common.wgsl). kld.wgsl (base logits) and
// kld_record.wgsl (base-file records) supply only the base side: binding 2 and
//   const BASE_LOGITS: bool — the base side is logits (its log-softmax offset m_b is computed
//                              here) or already log-probs (m_b = 0);
//   fn begin_row(row: u32)    — set the private state `base_value` reads for this row;
//   fn base_value(i: u32) -> f32 — the base side's logit or log-prob i of the row.

struct Params {
    // Rows in this dispatch.
    rows: u32,
    n_vocab: u32,
    // Index of this dispatch's first row in `targets` and `out`.
    row0: u32,
    // Always 0; see `opaque`.
    zero: u32,
    // kld_record.wgsl: words per record (scale, min_log_prob, then the codes two per word, low
    // half first). 0 for kld.wgsl.
    rec_words: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> zq: array<f32>;
@group(0) @binding(3) var<storage, read> targets: array<u32>;
// Per row: m_q, m_b, argmax_q, argmax_b, KL sum, KL error, z_q[t], base_value(t) (f32 as bits).
@group(0) @binding(4) var<storage, read_write> out: array<u32>;

const WG: u32 = 256u;
const NONE: u32 = 0xffffffffu;
const LOG_PROB_FLOOR: f32 = -16.0;
const SQRT2: f32 = 1.41421356;

var<workgroup> wa: array<f32, WG>;
var<workgroup> wb: array<f32, WG>;
var<workgroup> wc: array<f32, WG>;
var<workgroup> wd: array<f32, WG>;
var<workgroup> ia: array<u32, WG>;
var<workgroup> ib: array<u32, WG>;

// log(hi + lo) for hi ≥ 1 (a Σexp that includes exp(0)): hi = 2^k·f with f in [√½, √2),
// log f = 2·atanh(s), s = (f − 1)/(f + 1), |s| ≤ 0.172 (series to s^11: truncation < 1e-10).
fn log_pair(hi: f32, lo: f32) -> f32 {
    let bits = bitcast<u32>(hi);
    var k = i32((bits >> 23u) & 0xffu) - 127;
    var f = bitcast<f32>((bits & 0x007fffffu) | 0x3f800000u);
    if (f > SQRT2) {
        f = f * 0.5;
        k = k + 1;
    }
    let s = (f - 1.0) / (f + 1.0);
    let s2 = s * s;
    let poly = 1.0 / 3.0 + s2 * (1.0 / 5.0 + s2 * (1.0 / 7.0 + s2 * (1.0 / 9.0 + s2 * (1.0 / 11.0))));
    let log_f = 2.0 * s + (2.0 * s) * (s2 * poly);
    let kf = f32(k);
    return kf * LN2_HI + ((kf * LN2_LO + log_f) + lo / hi);
}

// Whether candidate (w, j) beats (v, i): larger, or equal at a lower index (the first argmax).
fn beats(w: f32, j: u32, v: f32, i: u32) -> bool {
    return j != NONE && (i == NONE || w > v || (w == v && j < i));
}

// The reductions: a fixed tree over the WG slots (so results do not depend on scheduling),
// winners in slot 0. Callers store their per-invocation values first; every invocation of the
// workgroup calls these (they hold barriers).

// (wa, ia) and (wb, ib): the largest value, at its lowest index.
fn reduce_argmax2(lid: u32) {
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            let j = lid + s;
            if (beats(wa[j], ia[j], wa[lid], ia[lid])) {
                wa[lid] = wa[j];
                ia[lid] = ia[j];
            }
            if (beats(wb[j], ib[j], wb[lid], ib[lid])) {
                wb[lid] = wb[j];
                ib[lid] = ib[j];
            }
        }
        workgroupBarrier();
    }
}

// Compensated pairs (wa, wb) and, when `two`, (wc, wd).
fn reduce_sums(lid: u32, two: bool) {
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            let j = lid + s;
            let a = acc_merge(vec2<f32>(wa[lid], wb[lid]), vec2<f32>(wa[j], wb[j]));
            wa[lid] = a.x;
            wb[lid] = a.y;
            if (two) {
                let c = acc_merge(vec2<f32>(wc[lid], wd[lid]), vec2<f32>(wc[j], wd[j]));
                wc[lid] = c.x;
                wd[lid] = c.y;
            }
        }
        workgroupBarrier();
    }
}

// One workgroup per token row (rows past 65535 continue in wid.y).
@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = wid.y * 65535u + wid.x;
    if (row >= p.rows) {
        return;
    }
    begin_row(row);
    kld_row(row, lid);
}

// Row `row`'s record: m_q, m_b (0 for base log-probs), argmax_q, argmax_b, the KL sum,
// z_q[t], base_value(t).
fn kld_row(row: u32, lid: u32) {
    let n = p.n_vocab;
    let o = row * n;

    // 1. Maximum and its first index, per invocation over lid, lid + WG, ... then the tree.
    var mq = 0.0;
    var iq = NONE;
    var mb = 0.0;
    var jb = NONE;
    for (var i = lid; i < n; i += WG) {
        let q = zq[o + i];
        let b = base_value(i);
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

    // 2. Σ exp(z − max), compensated, of the quant row (and of base logits); m = max + log Σ.
    var sq = vec2<f32>(0.0, 0.0);
    var sb = vec2<f32>(0.0, 0.0);
    for (var i = lid; i < n; i += WG) {
        sq = acc_add(sq, exp_acc(zq[o + i] - max_q));
        if (BASE_LOGITS) {
            sb = acc_add(sb, exp_acc(base_value(i) - max_b));
        }
    }
    wa[lid] = sq.x;
    wb[lid] = sq.y;
    wc[lid] = sb.x;
    wd[lid] = sb.y;
    reduce_sums(lid, BASE_LOGITS);
    let m_q = max_q + log_pair(wa[0], wb[0]);
    // Base log-probs need no offset: lp − 0 is lp exactly.
    var m_b = 0.0;
    if (BASE_LOGITS) {
        m_b = max_b + log_pair(wc[0], wd[0]);
    }
    workgroupBarrier();

    // 3. KL(base‖quant) = Σ p_b·(lp_b − lp_q) over base log-probs above the floor (the product
    // kept apart from the sum: no fused multiply-add where the CPU rounds twice).
    var kl = vec2<f32>(0.0, 0.0);
    for (var i = lid; i < n; i += WG) {
        let lp = base_value(i) - m_b;
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
        out[w + 7u] = bitcast<u32>(base_value(t));
    }
}
