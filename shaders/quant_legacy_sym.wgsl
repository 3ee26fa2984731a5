// Q4_0 / Q5_0: one invocation per 32-value block (quantize_row_q4_0_ref / _impl,
// quantize_row_q5_0_ref / _impl); 18 / 22 bytes in a slot of SLOT_WORDS words. The host
// prepends SLOT_WORDS, QS (the nibbles' byte offset), HAS_QH, HALF (2^(bits-1)), NEG_HALF,
// BIAS (HALF + 0.5) and NMAX (2^bits - 1), the constants of src/quant/legacy.rs.
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let b = block_index(gid);
    if (b >= p.n_blocks) {
        return;
    }
    load_block(b, 32u);
    out_clear(SLOT_WORDS);
    var d = 0.0;
    if (p.has_w == 0u) {
        var amax = 0.0;
        var mx = 0.0;
        for (var j = 0u; j < 32u; j++) {
            if (amax < abs(X[j])) {
                amax = abs(X[j]);
                mx = X[j];
            }
        }
        d = div_rn(mx, NEG_HALF);
        var id = 0.0;
        if (d != 0.0) {
            id = div_rn(1.0, d);
        }
        for (var j = 0u; j < 32u; j++) {
            let t = mul_rn(X[j], id);
            let v = t + BIAS;
            L[j] = u32(min(wrap_i8(rs_i32(v)), NMAX)) & 0xffu;
        }
    } else {
        legacy_weights(src_sigma2[b / p.blocks_per_row]);
        d = make_qx_quants(HALF, 0u, 32u, 2u);
    }
    put16(0u, f2h(d));
    legacy_pack(QS, HAS_QH, 0xfu);
    out_store(b, SLOT_WORDS);
}
