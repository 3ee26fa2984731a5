// Causal softmax attention per sequence with grouped-query heads, optionally inside a sliding
// window (the query at position i sees keys j with i − j < window; 0 = no window). One
// invocation per (query row, head): pass 1 finds the max score, pass 2 sums exp(score - max) and
// the weighted values (numerically stable softmax without storing scores).
struct Params {
    rows: u32,
    n_head: u32,
    n_head_kv: u32,
    head_dim: u32,
    seq_len: u32,
    scale: f32,
    window: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read_write> o: array<f32>;

const MAX_HEAD_DIM: u32 = 256u;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let h = gid.x;
    let r = gid.y;
    if (h >= p.n_head || r >= p.rows) {
        return;
    }
    let hd = p.head_dim;
    let hk = h / (p.n_head / p.n_head_kv);
    let qo = (r * p.n_head + h) * hd;
    var first = (r / p.seq_len) * p.seq_len;
    if (p.window > 0u && r + 1u > first + p.window) {
        first = r + 1u - p.window;
    }
    let ldkv = p.n_head_kv * hd;
    var mx = -3.4028235e38;
    for (var j = first; j <= r; j++) {
        let ko = j * ldkv + hk * hd;
        var s = 0.0;
        for (var d = 0u; d < hd; d++) {
            s += q[qo + d] * k[ko + d];
        }
        mx = max(mx, s * p.scale);
    }
    var acc: array<f32, MAX_HEAD_DIM>;
    var sum = 0.0;
    for (var j = first; j <= r; j++) {
        let ko = j * ldkv + hk * hd;
        var s = 0.0;
        for (var d = 0u; d < hd; d++) {
            s += q[qo + d] * k[ko + d];
        }
        let e = exp(s * p.scale - mx);
        sum += e;
        for (var d = 0u; d < hd; d++) {
            acc[d] += e * v[ko + d];
        }
    }
    let inv = 1.0 / sum;
    for (var d = 0u; d < hd; d++) {
        o[qo + d] = acc[d] * inv;
    }
}
