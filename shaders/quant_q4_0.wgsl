// Q4_0: one invocation per 32-value block (quantize_row_q4_0_ref / _impl); 18 bytes in 20.
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let b = block_index(gid);
    if (b >= p.n_blocks) {
        return;
    }
    load_block(b, 32u);
    out_clear(5u);
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
        d = mx / -8.0;
        var id = 0.0;
        if (d != 0.0) {
            id = 1.0 / d;
        }
        for (var j = 0u; j < 32u; j++) {
            let t = rounded(X[j] * id);
            let v = t + 8.5;
            L[j] = u32(min(wrap_i8(rs_i32(v)), 15)) & 0xffu;
        }
    } else {
        legacy_weights(src_sigma2[b / p.blocks_per_row]);
        d = make_qx_quants(8, 0u, 32u, 2u);
    }
    put16(0u, f2h(d));
    for (var j = 0u; j < 16u; j++) {
        put8(2u + j, (L[j] & 0xfu) | ((L[j + 16u] & 0xfu) << 4u));
    }
    out_store(b, 5u);
}
