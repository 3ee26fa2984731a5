// y = gelu(g)·u element-wise with ggml-cpu's GELU (vec.h, GGML_GELU_FP16): 0 at g ≤ −10, g at
// g ≥ 10, else the tanh approximation of g rounded to f16, itself rounded to f16 (the values of
// ggml's f16 lookup table). Both roundings are to nearest even, done exactly with `round`
// (RoundEven) on the value scaled by a power of two, not with a conversion whose rounding WGSL
// leaves to the implementation.
struct Params {
    n: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read> u: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

// x rounded to the nearest f16 value (ties to even), for |x| < 65504: the f16 quantum of x is
// 2^(e − 10) for a normal f16 (f32 biased exponent e ≥ 113) and 2^−24 below.
fn round_f16(x: f32) -> f32 {
    let e = (bitcast<u32>(x) >> 23u) & 0xffu;
    let qe = max(e, 113u) - 10u;
    let quantum = bitcast<f32>(qe << 23u);
    let inv = bitcast<f32>((254u - qe) << 23u);
    return round(x * inv) * quantum;
}

// tanh as libm's tanhf computes it for |y| ≥ 1 (1 − 2/(e^{2|y|} + 1), sign restored), rather
// than WGSL's tanh: near −1 the GELU keeps only 1 + tanh(y), so tanh must be the f32 nearest to
// the true value there (a builtin a few ulp off turns the GELU of x < −5 into 0). tanh is ±1 in
// f32 beyond |y| = 9.02, so |y| is capped at 10 (e^20 stays finite).
fn tanh_libm(y: f32) -> f32 {
    let t = 1.0 - 2.0 / (exp(2.0 * min(abs(y), 10.0)) + 1.0);
    return select(t, -t, y < 0.0);
}

fn gelu_tanh(x: f32) -> f32 {
    let inner = 0.7978845608 * x * (1.0 + 0.044715 * x * x);
    return 0.5 * x * (1.0 + tanh_libm(inner));
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.y * 65536u + gid.x;
    if (i >= p.n) {
        return;
    }
    let a = g[i];
    var r = 0.0;
    if (a >= 10.0) {
        r = a * u[i];
    } else if (a > -10.0) {
        r = round_f16(gelu_tanh(round_f16(a))) * u[i];
    }
    y[i] = r;
}
