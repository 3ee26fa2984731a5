// Imatrix statistics: Σx² and Σx per input column of one activation matrix x `[rows, k]`, for
// several slots at once (the sequences of a batch, or one expert's sequences), one dispatch.
// A workgroup is one block of COLS columns of one slot; its LANES lanes split the slot's rows.
//
// Slot j of this dispatch (j = tab0 + workgroup_id.y) takes rows[tab[3j] ..][.. tab[3j + 1]]
// of x (indices, in the slot's order) and adds into st[tab[3j + 2] ..]: Σx² over k columns,
// then Σx over k columns (f32).
//
// Summation order, fixed by each row's position i among its slot's rows and nothing else (not
// the batch, not the other slots): lane l = (i / RB) % LANES sums its rows in position order
// from 0; the slot's new sums are then old + lane 0 + lane 1 + … + lane LANES-1, in lane order.
// So a chunk's statistics do not depend on how many chunks share the pass.
const COLS: u32 = 32u;
const LANES: u32 = 8u;
const RB: u32 = 16u;

struct Params {
    k: u32,
    // Column-block workgroups along x (blocks past it continue along z).
    gx: u32,
    // First table entry of this dispatch.
    tab0: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> rows: array<u32>;
@group(0) @binding(3) var<storage, read> tab: array<u32>;
@group(0) @binding(4) var<storage, read_write> st: array<f32>;

var<workgroup> part2: array<f32, 256>;
var<workgroup> part1: array<f32, 256>;

@compute @workgroup_size(32, 8)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let c = (wg.z * p.gx + wg.x) * COLS + lid.x;
    let lane = lid.y;
    let j = p.tab0 + wg.y;
    let first = tab[3u * j];
    let n = tab[3u * j + 1u];
    let base = tab[3u * j + 2u];
    var s2 = 0.0;
    var s1 = 0.0;
    if (c < p.k) {
        for (var b = lane * RB; b < n; b += LANES * RB) {
            let end = min(b + RB, n);
            for (var i = b; i < end; i++) {
                let v = x[rows[first + i] * p.k + c];
                s2 += v * v;
                s1 += v;
            }
        }
    }
    part2[lane * COLS + lid.x] = s2;
    part1[lane * COLS + lid.x] = s1;
    workgroupBarrier();
    if (lane == 0u && c < p.k) {
        var t2 = st[base + c];
        var t1 = st[base + p.k + c];
        for (var l = 0u; l < LANES; l++) {
            t2 += part2[l * COLS + lid.x];
            t1 += part1[l * COLS + lid.x];
        }
        st[base + c] = t2;
        st[base + p.k + c] = t1;
    }
}
