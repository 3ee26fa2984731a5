// Q5_0: one invocation per 32-value block (quantize_row_q5_0_ref / _impl); 22 bytes in 24.
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let b = block_index(gid);
    if (b >= p.n_blocks) {
        return;
    }
    load_block(b, 32u);
    out_clear(6u);
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
        d = mx / -16.0;
        var id = 0.0;
        if (d != 0.0) {
            id = 1.0 / d;
        }
        for (var j = 0u; j < 32u; j++) {
            let t = rounded(X[j] * id);
            let v = t + 16.5;
            L[j] = u32(min(wrap_i8(rs_i32(v)), 31)) & 0xffu;
        }
    } else {
        legacy_weights(src_sigma2[b / p.blocks_per_row]);
        d = make_qx_quants(16, 0u, 32u, 2u);
    }
    put16(0u, f2h(d));
    var qh = 0u;
    for (var j = 0u; j < 16u; j++) {
        let x0 = L[j];
        let x1 = L[j + 16u];
        put8(6u + j, (x0 & 0xfu) | ((x1 & 0xfu) << 4u));
        qh = qh | (((x0 & 0x10u) >> 4u) << j);
        qh = qh | (((x1 & 0x10u) >> 4u) << (j + 16u));
    }
    put16(2u, qh);
    put16(4u, qh >> 16u);
    out_store(b, 6u);
}
