// Embedding lookup: y[i] = dequantized row ids[i] of W (rows row0..row0+nrows of this slice).
struct Params {
    n_ids: u32,
    k: u32,
    row_bytes: u32,
    row0: u32,
    nrows: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> wq: array<u32>;
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let k0 = gid.x * 32u;
    let i = gid.z * 65535u + gid.y; // rows folded into z (Ctx::groups_rows)
    if (k0 >= p.k || i >= p.n_ids) {
        return;
    }
    let id = ids[i];
    if (id < p.row0 || id >= p.row0 + p.nrows) {
        return;
    }
    var w: array<f32, 32>;
    dq32((id - p.row0) * p.row_bytes, k0, &w);
    let kn = min(32u, p.k - k0);
    for (var j = 0u; j < kn; j++) {
        y[i * p.k + k0 + j] = w[j];
    }
}
