// y[i] = x[idx[i]] (MoE dispatch), one invocation per element.
struct Params {
    n_idx: u32,
    cols: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> idx: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    let i = gid.z * 65535u + gid.y; // rows folded into z (Ctx::groups_rows)
    if (c >= p.cols || i >= p.n_idx) {
        return;
    }
    y[i * p.cols + c] = x[idx[i] * p.cols + c];
}
