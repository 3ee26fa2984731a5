// RoPE in place. The host supplies cos/sin per (position, pair) computed as the CPU does, so the
// kernel only rotates. NORM mode rotates adjacent pairs (2i, 2i+1); NEOX rotates (i, i + n_rot/2).
struct Params {
    rows: u32,
    n_head: u32,
    head_dim: u32,
    seq_len: u32,
    n_rot: u32,
    neox: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> cs: array<vec2<f32>>; // [seq_len][n_rot/2] (cos, sin)
@group(0) @binding(2) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let half_rot = p.n_rot / 2u;
    let i = gid.x % half_rot;
    let h = gid.x / half_rot;
    let r = gid.z * 65535u + gid.y; // rows folded into z (Ctx::groups_rows)
    if (h >= p.n_head || r >= p.rows) {
        return;
    }
    let pos = r % p.seq_len;
    let base = r * p.n_head * p.head_dim + h * p.head_dim;
    var ia = base + 2u * i;
    var ib = ia + 1u;
    if (p.neox != 0u) {
        ia = base + i;
        ib = ia + half_rot;
    }
    let c = cs[pos * half_rot + i];
    let a = x[ia];
    let b = x[ib];
    x[ia] = a * c.x - b * c.y;
    x[ib] = a * c.y + b * c.x;
}
