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
var<workgroup> tu: array<f32, 1024>; // KS × TILE: tu[k·64 + column]

@compute @workgroup_size(16, 16)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let r0 = wg.y * TILE;
    let c0 = wg.x * TILE;
    let ncol = p.n - p.j0;
    let tid = lid.y * 16u + lid.x;
    var s: array<f32, 16>;
    for (var q = 0u; q < 16u; q = q + 1u) {
        s[q] = 0.0;
    }
    for (var k0 = 0u; k0 < p.gw; k0 = k0 + KS) {
        for (var q = 0u; q < 4u; q = q + 1u) {
            let i = tid + q * 256u;
            // E along k (contiguous in a row), U along the columns (contiguous in a k row).
            let er = i / KS;
            let ek = i % KS;
            var ev = 0.0;
            if (r0 + er < p.rows && k0 + ek < p.gw) {
                ev = e[(r0 + er) * p.g + k0 + ek];
            }
            te[ek * TILE + er] = ev;
            let uk = i / TILE;
            let uc = i % TILE;
            var uv = 0.0;
            if (k0 + uk < p.gw && c0 + uc < ncol) {
                uv = u[(k0 + uk) * ncol + c0 + uc];
            }
            tu[i] = uv;
        }
        workgroupBarrier();
        let nk = min(KS, p.gw - k0);
        for (var k = 0u; k < nk; k = k + 1u) {
            for (var a = 0u; a < 4u; a = a + 1u) {
                let ev = te[k * TILE + lid.y * 4u + a];
                for (var b = 0u; b < 4u; b = b + 1u) {
                    s[a * 4u + b] = s[a * 4u + b] + ev * tu[k * TILE + lid.x * 4u + b];
                }
            }
        }
        workgroupBarrier();
    }
    for (var a = 0u; a < 4u; a = a + 1u) {
        let r = r0 + lid.y * 4u + a;
        for (var b = 0u; b < 4u; b = b + 1u) {
            let c = c0 + lid.x * 4u + b;
            if (r < p.rows && c < ncol) {
                let j = p.j0 + c;
                let at = (j / p.g) * p.rows * p.g + r * p.g + j % p.g;
                w[at] = w[at] - s[a * 4u + b];
            }
        }
    }
}
