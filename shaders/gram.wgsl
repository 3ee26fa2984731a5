// acc[i][j] += Σ_{r in row0..row0+n} x[r][i]·x[r][j] (imatrix --covariance). Each workgroup owns
// a 64×64 tile of acc, each invocation 4×4 elements; rows of x pass through workgroup memory 16
// at a time. Every element is summed from zero in row order, then added to acc: the CPU
// reference's order (backend/cpu/gram.rs), whatever the tile or the dispatch.
struct Params {
    row0: u32,
    n: u32,
    cols: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> acc: array<f32>;

const TILE: u32 = 64u;
const ROWS: u32 = 16u;

var<workgroup> ta: array<f32, 1024>; // ROWS × TILE values of the tile's i columns
var<workgroup> tb: array<f32, 1024>; // ROWS × TILE values of the tile's j columns

@compute @workgroup_size(16, 16)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i0 = wg.y * TILE;
    let j0 = wg.x * TILE;
    let tid = lid.y * 16u + lid.x;
    var s: array<f32, 16>;
    for (var k = 0u; k < 16u; k = k + 1u) {
        s[k] = 0.0;
    }
    for (var r0 = 0u; r0 < p.n; r0 = r0 + ROWS) {
        for (var k = 0u; k < 4u; k = k + 1u) {
            let e = tid + k * 256u;
            let rr = e / TILE;
            let cc = e % TILE;
            var va = 0.0;
            var vb = 0.0;
            if (r0 + rr < p.n) {
                let base = (p.row0 + r0 + rr) * p.cols;
                if (i0 + cc < p.cols) {
                    va = x[base + i0 + cc];
                }
                if (j0 + cc < p.cols) {
                    vb = x[base + j0 + cc];
                }
            }
            ta[e] = va;
            tb[e] = vb;
        }
        workgroupBarrier();
        let nr = min(ROWS, p.n - r0);
        for (var rr = 0u; rr < nr; rr = rr + 1u) {
            for (var a = 0u; a < 4u; a = a + 1u) {
                let av = ta[rr * TILE + lid.y * 4u + a];
                for (var b = 0u; b < 4u; b = b + 1u) {
                    s[a * 4u + b] = s[a * 4u + b] + av * tb[rr * TILE + lid.x * 4u + b];
                }
            }
        }
        workgroupBarrier();
    }
    for (var a = 0u; a < 4u; a = a + 1u) {
        let i = i0 + lid.y * 4u + a;
        for (var b = 0u; b < 4u; b = b + 1u) {
            let j = j0 + lid.x * 4u + b;
            if (i < p.cols && j < p.cols) {
                acc[i * p.cols + j] = acc[i * p.cols + j] + s[a * 4u + b];
            }
        }
    }
}
