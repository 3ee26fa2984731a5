// y = x·Wᵀ with W dequantized in the kernel (dq32 comes from the prepended dq_<type>.wgsl).
// Register-blocked, no workgroup memory and no barriers: the variant that suits CPU adapters
// (llvmpipe), where barriers are expensive. Each invocation owns 4 tokens × 4 output features.
struct Params {
    m: u32,         // rows of x (tokens)
    n: u32,         // weight rows in this slice
    k: u32,         // row length (input features)
    row_bytes: u32, // bytes per weight row
    n0: u32,        // first output column of this slice
    ldy: u32,       // row stride of y
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> wq: array<u32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

const TM: u32 = 4u;
const TN: u32 = 4u;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let nb = gid.x * TN;
    let mb = gid.y * TM;
    if (nb >= p.n || mb >= p.m) {
        return;
    }
    var acc: array<f32, 16>;
    var w: array<f32, 32>;
    // Whole 32-blocks with constant trip counts, so the compiler unrolls them and keeps `w` and
    // `acc` in registers (a dynamic index would put them in scratch memory on llvmpipe).
    let kfull = p.k & ~31u;
    for (var k0 = 0u; k0 < kfull; k0 += 32u) {
        for (var r = 0u; r < TN; r++) {
            // Out-of-range rows/tokens recompute the last one; their results are not stored.
            let n = min(nb + r, p.n - 1u);
            dq32(n * p.row_bytes, k0, &w);
            for (var t = 0u; t < TM; t++) {
                let xo = min(mb + t, p.m - 1u) * p.k + k0;
                var s = 0.0;
                for (var j = 0u; j < 32u; j++) {
                    s += x[xo + j] * w[j];
                }
                acc[t * TN + r] += s;
            }
        }
    }
    // Ragged tail (float types only), summed apart like a block so both variants agree.
    if (kfull < p.k) {
        for (var r = 0u; r < TN; r++) {
            let row = min(nb + r, p.n - 1u) * p.row_bytes;
            for (var t = 0u; t < TM; t++) {
                let xo = min(mb + t, p.m - 1u) * p.k;
                var s = 0.0;
                for (var kk = kfull; kk < p.k; kk++) {
                    s += x[xo + kk] * dq1(row, kk);
                }
                acc[t * TN + r] += s;
            }
        }
    }
    for (var t = 0u; t < TM; t++) {
        for (var r = 0u; r < TN; r++) {
            if (mb + t < p.m && nb + r < p.n) {
                y[(mb + t) * p.ldy + p.n0 + nb + r] = acc[t * TN + r];
            }
        }
    }
}
