// IQ4_NL: one invocation per 32-value block (quant_iq4.wgsl's search); 18 bytes (d, qs[16])
// in a slot of 5 words.
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let b = block_index(gid);
    if (b >= p.n_blocks) {
        return;
    }
    load_block(b, 32u);
    out_clear(5u);
    var sigma2 = 0.0;
    for (var i = 0u; i < 32u; i++) {
        let v2 = mul_rn(X[i], X[i]);
        sigma2 += v2;
    }
    sigma2 = mul_rn(sigma2, div_rn(2.0, 32.0));
    let d = iq4_scale(sigma2);
    put16(0u, f2h(d));
    var id = 0.0;
    if (d != 0.0) {
        id = div_rn(1.0, d);
    }
    for (var j = 0u; j < 16u; j++) {
        let lo = best_index(mul_rn(id, X[j]));
        let hi = best_index(mul_rn(id, X[j + 16u]));
        put8(2u + j, lo | (hi << 4u));
    }
    out_store(b, 5u);
}
