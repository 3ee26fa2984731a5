// Compensated f32 sums and an exp to ~1 ulp: the log-sum-exp helpers shared by the KL-divergence
// kernels (kld_common.wgsl) and the NLL kernel (nll.wgsl). WGSL has no f64; a (sum, error) pair
// of f32 carries ~48 bits, close to the CPU reference's f64 sums. The including kernel declares
// `p` (its uniform Params) with a `zero: u32` member that is always 0 (see `opaque`).

// ln 2 split so that k·LN2_HI is exact for |k| < 128 (fdlibm's logf constants).
const LN2_HI: f32 = 6.9313812256e-01;
const LN2_LO: f32 = 9.0580006145e-06;
const LOG2E: f32 = 1.44269504;

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
