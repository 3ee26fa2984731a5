// Activation statistics for the imatrix: for each input column c, Σx² and Σx over rows
// [row0, row0 + m) of x (one sequence of a batch),
// added row by row in row order to the running sums, so any batch split gives the same bits.
// Layout of `st` (u32 words): [0, k) Σx² as f32 bits, [k, 2k) Σx, then the row count (lo, hi).
struct Params {
    m: u32,
    k: u32,
    row0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> st: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    if (c == 0u) {
        let lo = st[2u * p.k];
        let nlo = lo + p.m;
        st[2u * p.k] = nlo;
        st[2u * p.k + 1u] += select(0u, 1u, nlo < lo);
    }
    if (c >= p.k) {
        return;
    }
    var s2 = bitcast<f32>(st[c]);
    var s1 = bitcast<f32>(st[p.k + c]);
    for (var r = 0u; r < p.m; r++) {
        let v = x[(p.row0 + r) * p.k + c];
        s2 += v * v;
        s1 += v;
    }
    st[c] = bitcast<u32>(s2);
    st[p.k + c] = bitcast<u32>(s1);
}
