// Per-token KL divergence of a quantized model from its base (llama-perplexity's definitions, as
// kld/stats.rs `token_kld_from_logits`), one workgroup per token row:
//   m_q = max_q + log Σ exp(z_q − max_q), m_b likewise (log-softmax offsets),
//   KL  = Σ_{lp_b > −16} exp(lp_b)·((lp_b − z_q) + m_q) with lp_b = z_b − m_b,
//   first argmax of each row, and both rows' logits at the target token.
// The host finishes nll, Δp and same_top from this record with the CPU's own f32 formulas.
//
// Precision (WGSL has no f64, the CPU reference sums in f64): Σexp and the KL sum are kept as
// compensated (sum, error) pairs of f32 (TwoSum), per invocation and through the tree, so the
// sums carry ~48 bits; log Σexp is computed here (range reduction + atanh series) to ~1 ulp rather
// than with the built-in log (the WGSL spec allows 2^-21 absolute error on [0.5, 2]). Every
// per-element f32 operation is the CPU's, in its order.
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

const WG: u32 = 256u;
const NONE: u32 = 0xffffffffu;
const LOG_PROB_FLOOR: f32 = -16.0;
// ln 2 split so that k·LN2_HI is exact for |k| < 128 (fdlibm's logf constants).
const LN2_HI: f32 = 6.9313812256e-01;
const LN2_LO: f32 = 9.0580006145e-06;
const SQRT2: f32 = 1.41421356;
const LOG2E: f32 = 1.44269504;

var<workgroup> wa: array<f32, WG>;
var<workgroup> wb: array<f32, WG>;
var<workgroup> wc: array<f32, WG>;
var<workgroup> wd: array<f32, WG>;
var<workgroup> ia: array<u32, WG>;
var<workgroup> ib: array<u32, WG>;

// x, hidden from the shader compiler's algebra. WGSL cannot mark float operations exact, and
// drivers may simplify inexact ones: Mesa turns TwoSum's (a + b) − a into b (its error term is
// then always 0; measured on lavapipe: Σexp off by 3e-7 relative) and regroups sums with a
// constant. OR-ing with a uniform the compiler cannot see (always 0) keeps each rounding.
fn opaque(x: f32) -> f32 {
    return bitcast<f32>(bitcast<u32>(x) | p.zero);
}

// s + e == a + b exactly (Knuth's TwoSum; no assumption on magnitudes).
fn two_sum(a: f32, b: f32) -> vec2<f32> {
    let s = opaque(a + b);
    let bp = opaque(s - a);
    let e = (a - opaque(s - bp)) + (b - bp);
    return vec2<f32>(s, e);
}

// Compensated sum (value, error) plus x.
fn acc_add(acc: vec2<f32>, x: f32) -> vec2<f32> {
    let t = two_sum(acc.x, x);
    return vec2<f32>(t.x, acc.y + t.y);
}

fn acc_merge(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
    let t = two_sum(a.x, b.x);
    return vec2<f32>(t.x, (a.y + b.y) + t.y);
}

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

// e^x to ~1 ulp, for x ≤ 88 (0 below −87: such terms are far under Σexp's rounding). The
// built-in exp is looser (lavapipe's: up to 17 ulp, biased +2e-7 relative, which moves log Σexp
// by a few 1e-7 and then m's rounding); the CPU reference's expf is within an ulp.
// Cody–Waite: x = k·ln2 + r, |r| ≤ ln2/2, e^r by its Taylor series to r⁷ (truncation < 0.1 ulp).
fn exp_acc(x: f32) -> f32 {
    if (x < -87.0) {
        return 0.0;
    }
    let k = floor(x * LOG2E + 0.5);
    let r = opaque(x - k * LN2_HI) - k * LN2_LO;
    let q = 1.0 / 2.0 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))));
    // Mesa regroups 1 + (r + t) as (1 + r) + t (one more rounding of r): keep the order.
    let er = 1.0 + opaque(r + (r * r) * q);
    return er * bitcast<f32>(u32(i32(k) + 127) << 23u);
}

// Whether candidate (w, j) beats (v, i): larger, or equal at a lower index (the first argmax).
fn beats(w: f32, j: u32, v: f32, i: u32) -> bool {
    return j != NONE && (i == NONE || w > v || (w == v && j < i));
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
    let max_q = wa[0];
    let arg_q = ia[0];
    let max_b = wb[0];
    let arg_b = ib[0];
    workgroupBarrier();

    // 2. Σ exp(z − max) of both rows, compensated.
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
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            let j = lid + s;
            let q2 = acc_merge(vec2<f32>(wa[lid], wb[lid]), vec2<f32>(wa[j], wb[j]));
            let b2 = acc_merge(vec2<f32>(wc[lid], wd[lid]), vec2<f32>(wc[j], wd[j]));
            wa[lid] = q2.x;
            wb[lid] = q2.y;
            wc[lid] = b2.x;
            wd[lid] = b2.y;
        }
        workgroupBarrier();
    }
    let m_q = max_q + log_pair(wa[0], wb[0]);
    let m_b = max_b + log_pair(wc[0], wd[0]);
    workgroupBarrier();

    // 3. KL(base‖quant) = Σ p_b·(lp_b − lp_q) over base log-probs above the floor.
    var kl = vec2<f32>(0.0, 0.0);
    for (var i = lid; i < n; i += WG) {
        let lp = zb[o + i] - m_b;
        if (lp > LOG_PROB_FLOOR) {
            kl = acc_add(kl, exp_acc(lp) * ((lp - zq[o + i]) + m_q));
        }
    }
    wa[lid] = kl.x;
    wb[lid] = kl.y;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            let j = lid + s;
            let k2 = acc_merge(vec2<f32>(wa[lid], wb[lid]), vec2<f32>(wa[j], wb[j]));
            wa[lid] = k2.x;
            wb[lid] = k2.y;
        }
        workgroupBarrier();
    }

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
