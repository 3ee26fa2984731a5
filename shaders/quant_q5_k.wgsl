// Q5_K: one invocation per 256-value super-block (quantize_row_q5_K_ref / _impl); 176 bytes.
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let b = block_index(gid);
    if (b >= p.n_blocks) {
        return;
    }
    load_block(b, 256u);
    out_clear(44u);
    k_super_block(31, -0.5, 0.1, 15);
    var qh: array<u32, 32>;
    for (var j = 0u; j < 32u; j++) {
        qh[j] = 0u;
    }
    var m1 = 1u;
    var m2 = 2u;
    for (var g = 0u; g < 4u; g++) {
        for (var j = 0u; j < 32u; j++) {
            var l1 = L[64u * g + j];
            if (l1 > 15u) {
                l1 -= 16u;
                qh[j] = qh[j] | m1;
            }
            var l2 = L[64u * g + 32u + j];
            if (l2 > 15u) {
                l2 -= 16u;
                qh[j] = qh[j] | m2;
            }
            put8(48u + 32u * g + j, l1 | (l2 << 4u));
        }
        m1 = m1 << 2u;
        m2 = m2 << 2u;
    }
    for (var j = 0u; j < 32u; j++) {
        put8(16u + j, qh[j]);
    }
    out_store(b, 44u);
}
