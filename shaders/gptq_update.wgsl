// GPTQ's lazy-batch update on the device (`quantize --gptq` with a GPU):
//   W[r][j] −= Σ_{k < gw} E[r][k] · U[k][j − j0]   for r < rows, j0 ≤ j < n.
// E holds one group's column errors (rows × G, the first gw used), U the group's rows of the
// Cholesky factor from column j0 on (gw × (n − j0)). W is stored in slabs of G columns —
// element (r, j) at (j / G)·rows·G + r·G + j % G — so the next group's columns come back in one
// contiguous read. Each workgroup owns 64 rows × 64 columns, each invocation 4×4 of them; E and
// U pass through workgroup memory 16 k at a time. Every element is summed from zero in k order
// and then subtracted, whatever the tile or the number of rows dispatched. CPU reference: the
// f64 dgemm of `quant::gptq` (judged by NMSE).
struct Params {
    rows: u32,
    n: u32,
    g: u32,
    gw: u32,
    j0: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> w: array<f32>;
@group(0) @binding(2) var<storage, read> e: array<f32>;
@group(0) @binding(3) var<storage, read> u: array<f32>;

const TILE: u32 = 64u;
const KS: u32 = 16u;

var<workgroup> te: array<f32, 1024>; // KS × TILE: te[k·64 + row]
var<workgroup> tu: array<vec4<f32>, 256>; // KS × TILE/4: tu[k·16 + column/4]

@compute @workgroup_size(16, 16)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let r0 = wg.y * TILE;
    let c0 = wg.x * TILE;
    let ncol = p.n - p.j0;
    let tid = lid.y * 16u + lid.x;
    // Rows lid.y·4 + 0..3, columns lid.x·4 + 0..3 (one vec4 per row).
    var s0 = vec4<f32>(0.0);
    var s1 = vec4<f32>(0.0);
    var s2 = vec4<f32>(0.0);
    var s3 = vec4<f32>(0.0);
    for (var k0 = 0u; k0 < p.gw; k0 = k0 + KS) {
        for (var q = 0u; q < 4u; q = q + 1u) {
            // E along k (contiguous in a row).
            let i = tid + q * 256u;
            let er = i / KS;
            let ek = i % KS;
            var ev = 0.0;
            if (r0 + er < p.rows && k0 + ek < p.gw) {
                ev = e[(r0 + er) * p.g + k0 + ek];
            }
            te[ek * TILE + er] = ev;
        }
        {
            // U along the columns (contiguous in a k row), four per invocation.
            let uk = tid / 16u;
            let uc = (tid % 16u) * 4u;
            var uv = vec4<f32>(0.0);
            if (k0 + uk < p.gw) {
                let base = (k0 + uk) * ncol + c0 + uc;
                if (c0 + uc < ncol) { uv.x = u[base]; }
                if (c0 + uc + 1u < ncol) { uv.y = u[base + 1u]; }
                if (c0 + uc + 2u < ncol) { uv.z = u[base + 2u]; }
                if (c0 + uc + 3u < ncol) { uv.w = u[base + 3u]; }
            }
            tu[tid] = uv;
        }
        workgroupBarrier();
        let nk = min(KS, p.gw - k0);
        for (var k = 0u; k < nk; k = k + 1u) {
            let uv = tu[k * 16u + lid.x];
            let eb = k * TILE + lid.y * 4u;
            s0 = s0 + te[eb] * uv;
            s1 = s1 + te[eb + 1u] * uv;
            s2 = s2 + te[eb + 2u] * uv;
            s3 = s3 + te[eb + 3u] * uv;
        }
        workgroupBarrier();
    }
    let c = c0 + lid.x * 4u;
    store_row(r0 + lid.y * 4u, c, ncol, s0);
    store_row(r0 + lid.y * 4u + 1u, c, ncol, s1);
    store_row(r0 + lid.y * 4u + 2u, c, ncol, s2);
    store_row(r0 + lid.y * 4u + 3u, c, ncol, s3);
}

// W[r][j0 + c + b] −= v[b] for the columns inside the weight.
fn store_row(r: u32, c: u32, ncol: u32, v: vec4<f32>) {
    if (r >= p.rows) {
        return;
    }
    for (var b = 0u; b < 4u; b = b + 1u) {
        if (c + b < ncol) {
            let j = p.j0 + c + b;
            let at = (j / p.g) * p.rows * p.g + r * p.g + j % p.g;
            w[at] = w[at] - v[b];
        }
    }
}
