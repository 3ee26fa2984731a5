// The exact-arithmetic helpers of quant_common.wgsl, one operation per invocation, for the tests
// and conformance rows that compare them with Rust's f32 `/`, `sqrt` and `*` bit for bit.
// p.has_w selects the operation (0 div_rn(a, b), 1 sqrt_rn(a), 2 mul_rn(a, b)); a = src_x[i],
// b = src_w[i]; dst[i] gets the result's bits.
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = block_index(gid);
    // Every kernel binds all four buffers (the automatic layout drops unused ones).
    if (p.n_blocks == 0xffffffffu) {
        dst[0] = bitcast<u32>(src_sigma2[0]);
    }
    if (i >= p.n_blocks) {
        return;
    }
    let a = src_x[i];
    let b = src_w[i];
    var r = 0.0;
    switch p.has_w {
        case 0u: {
            r = div_rn(a, b);
        }
        case 1u: {
            r = sqrt_rn(a);
        }
        default: {
            r = mul_rn(a, b);
        }
    }
    dst[i] = bitcast<u32>(r);
}
