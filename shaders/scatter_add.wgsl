// dst[idx[i]] += scale[i]·src[i] for each row i in i order (MoE combine). One invocation per
// column walks the rows in order, so rows that hit the same destination add deterministically.
struct Params {
    n_idx: u32,
    cols: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read> idx: array<u32>;
@group(0) @binding(3) var<storage, read> scale: array<f32>;
@group(0) @binding(4) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    if (c >= p.cols) {
        return;
    }
    for (var i = 0u; i < p.n_idx; i++) {
        let o = idx[i] * p.cols + c;
        dst[o] = dst[o] + scale[i] * src[i * p.cols + c];
    }
}
