// Helpers of the KL-divergence kernels (kld.wgsl, kld_record.wgsl): compensated f32 sums,
// exp and log to ~1 ulp, the first-argmax rule, and the workgroup arrays of their reductions.
// Each kernel defines `p` with a `zero` field (a uniform that is always 0, see `opaque`).

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
