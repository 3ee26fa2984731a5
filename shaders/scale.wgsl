// x *= s element-wise (gemma3: embeddings by √n_embd, Q by the attention scale).
struct Params {
    n: u32,
    s: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.y * 65536u + gid.x;
    if (i >= p.n) {
        return;
    }
    x[i] = x[i] * p.s;
}
