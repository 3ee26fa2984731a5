// y = x / sqrt(mean(x²) + eps) · w, one invocation per row (sequential sum: no barriers).
struct Params {
    rows: u32,
    cols: u32,
    eps: f32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r = gid.y * 65536u + gid.x; // folded into y past 65535 workgroups (Ctx::groups_1d)
    if (r >= p.rows) {
        return;
    }
    let o = r * p.cols;
    var s = 0.0;
    for (var c = 0u; c < p.cols; c++) {
        let v = x[o + c];
        s += v * v;
    }
    let scale = 1.0 / sqrt(s / f32(p.cols) + p.eps);
    for (var c = 0u; c < p.cols; c++) {
        y[o + c] = (x[o + c] * scale) * w[c];
    }
}
