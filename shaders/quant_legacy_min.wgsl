// Q4_1 / Q5_1: one invocation per 32-value block (quantize_row_q4_1_ref / _impl,
// quantize_row_q5_1_ref / _impl); 20 / 24 bytes. The host prepends SLOT_WORDS, QS (the nibbles'
// byte offset), HAS_QH, NMAX (2^bits - 1), NMAX_F and LOW_MASK (0xff for Q4_1, whose reference
// path stores the low nibble unmasked), the constants of src/quant/legacy.rs.
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let b = block_index(gid);
    if (b >= p.n_blocks) {
        return;
    }
    load_block(b, 32u);
    out_clear(SLOT_WORDS);
    var d = 0.0;
    var m = 0.0;
    if (p.has_w == 0u) {
        let r = min_max32();
        m = r.x;
        d = div_rn(r.y - r.x, NMAX_F);
        var id = 0.0;
        if (d != 0.0) {
            id = div_rn(1.0, d);
        }
        for (var j = 0u; j < 32u; j++) {
            let t = mul_rn(X[j] - m, id);
            let v = t + 0.5;
            L[j] = u32(min(wrap_i8(rs_i32(v)), NMAX)) & 0xffu;
        }
    } else {
        legacy_weights(src_sigma2[b / p.blocks_per_row]);
        let r = kx_search(0u, 32u, NMAX, -0.9, 0.05, 36, true, false);
        d = r.x;
        m = -r.y;
    }
    put16(0u, f2h(d));
    put16(2u, f2h(m));
    legacy_pack(QS, HAS_QH, LOW_MASK);
    out_store(b, SLOT_WORDS);
}
