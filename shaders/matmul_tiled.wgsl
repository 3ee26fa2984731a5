// y = x·Wᵀ, workgroup-tiled variant for hardware GPUs: 64 threads share a 32-wide K slice of
// 64 dequantized weight rows and 64 token rows in workgroup memory; each thread owns 8×8 outputs.
// Same per-32 partial sums as matmul.wgsl, so both variants give the same bits.
struct Params {
    m: u32,
    n: u32,
    k: u32,
    row_bytes: u32,
    n0: u32,
    ldy: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> wq: array<u32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

const BM: u32 = 64u;
const BN: u32 = 64u;
var<workgroup> ws: array<f32, 2048>; // [BN][32]
var<workgroup> xs: array<f32, 2048>; // [BM][32]

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let nb = wg.x * BN;
    let mb = wg.y * BM;
    let tn = (li % 8u) * 8u;
    let tm = (li / 8u) * 8u;
    var acc: array<f32, 64>;
    var w: array<f32, 32>;
    for (var k0 = 0u; k0 < p.k; k0 += 32u) {
        let kn = min(32u, p.k - k0);
        // Each thread dequantizes one weight row and loads one token row of the slice.
        let n = min(nb + li, p.n - 1u);
        dq32(n * p.row_bytes, k0, &w);
        let xo = min(mb + li, p.m - 1u) * p.k + k0;
        for (var j = 0u; j < 32u; j++) {
            ws[li * 32u + j] = w[j];
            var xv = 0.0;
            if (j < kn) {
                xv = x[xo + j];
            }
            xs[li * 32u + j] = xv;
        }
        workgroupBarrier();
        for (var t = 0u; t < 8u; t++) {
            for (var r = 0u; r < 8u; r++) {
                var s = 0.0;
                for (var j = 0u; j < kn; j++) {
                    s += xs[(tm + t) * 32u + j] * ws[(tn + r) * 32u + j];
                }
                acc[t * 8u + r] += s;
            }
        }
        workgroupBarrier();
    }
    for (var t = 0u; t < 8u; t++) {
        for (var r = 0u; r < 8u; r++) {
            if (mb + tm + t < p.m && nb + tn + r < p.n) {
                y[(mb + tm + t) * p.ldy + p.n0 + nb + tn + r] = acc[t * 8u + r];
            }
        }
    }
}
