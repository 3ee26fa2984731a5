// Per-token negative log-likelihood of logits against targets (perplexity, imatrix's running
// PPL), one workgroup per token row: the row's maximum, Σ exp(z − max) as a compensated f32 pair
// and z[target], so the host finishes
//   nll = log(Σ) + max − z[target]
// in f64 as the CPU reference does (backend/cpu/nll.rs, llama.cpp's log_softmax: f32 max, f32
// z − max, expf of it summed in f64). 16 bytes per token come back instead of the row's logits.
// Precision: the max and z − max are exact as on the CPU; exp_acc is within ~1 ulp of expf and
// the compensated pair carries ~48 bits, so the sums agree to ~1e-8 relative.
// Determinism: each invocation walks its elements in index order and the reduction tree is fixed;
// a row's result depends on that row alone (not on the batch or the dispatch's row range).
// Non-finite logits: a row holding any (±inf, NaN) writes a NaN maximum, so its nll is NaN and
// the host reports it as it reports non-finite logits.
// The helpers (opaque, acc_add, acc_merge, exp_acc) are lse_common.wgsl's.

struct Params {
    // Rows in this dispatch.
    rows: u32,
    n_vocab: u32,
    // Index of this dispatch's first row in `targets` and `out`.
    row0: u32,
    // Always 0; see lse_common.wgsl's `opaque`.
    zero: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// This dispatch's rows of logits, [rows, n_vocab].
@group(0) @binding(1) var<storage, read> z: array<f32>;
@group(0) @binding(2) var<storage, read> targets: array<u32>;
// Per row: max (NaN when the row is not finite), Σexp value, Σexp error, z[target] (f32 bits).
@group(0) @binding(3) var<storage, read_write> out: array<u32>;

const WG: u32 = 256u;
const EXP_MASK: u32 = 0x7f800000u;
const QUIET_NAN: u32 = 0x7fc00000u;
// The lowest finite f32: every finite logit is ≥ it.
const LOWEST: f32 = -3.40282347e+38;

var<workgroup> wa: array<f32, WG>;
var<workgroup> wb: array<f32, WG>;
var<workgroup> bad: array<u32, WG>;

// One workgroup per token row (rows past 65535 continue in wid.y).
@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = wid.y * 65535u + wid.x;
    if (row >= p.rows) {
        return;
    }
    let n = p.n_vocab;
    let o = row * n;

    // 1. Maximum (of finite values exact whatever the order) and whether any value is ±inf/NaN.
    var m = LOWEST;
    var nf = 0u;
    for (var i = lid; i < n; i += WG) {
        let v = z[o + i];
        if ((bitcast<u32>(v) & EXP_MASK) == EXP_MASK) {
            nf = 1u;
        } else {
            m = max(m, v);
        }
    }
    wa[lid] = m;
    bad[lid] = nf;
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        workgroupBarrier();
        if (lid < s) {
            wa[lid] = max(wa[lid], wa[lid + s]);
            bad[lid] = bad[lid] | bad[lid + s];
        }
    }
    workgroupBarrier();
    let mx = wa[0];
    let row_bad = bad[0];
    workgroupBarrier();

    // 2. Σ exp(z − max), compensated, per invocation in index order, then a fixed tree.
    var acc = vec2<f32>(0.0, 0.0);
    if (row_bad == 0u) {
        for (var i = lid; i < n; i += WG) {
            acc = acc_add(acc, exp_acc(z[o + i] - mx));
        }
    }
    wa[lid] = acc.x;
    wb[lid] = acc.y;
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        workgroupBarrier();
        if (lid < s) {
            let t = acc_merge(vec2<f32>(wa[lid], wb[lid]), vec2<f32>(wa[lid + s], wb[lid + s]));
            wa[lid] = t.x;
            wb[lid] = t.y;
        }
    }
    workgroupBarrier();

    if (lid == 0u) {
        let r = p.row0 + row;
        let w = r * 4u;
        var mbits = bitcast<u32>(mx);
        if (row_bad != 0u) {
            mbits = QUIET_NAN;
        }
        out[w] = mbits;
        out[w + 1u] = bitcast<u32>(wa[0]);
        out[w + 2u] = bitcast<u32>(wb[0]);
        out[w + 3u] = bitcast<u32>(z[o + targets[r]]);
    }
}
