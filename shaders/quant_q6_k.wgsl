// Q6_K: one invocation per 256-value super-block (quantize_row_q6_K_ref / _impl); 210 bytes in a
// 212-byte slot.
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let b = block_index(gid);
    if (b >= p.n_blocks) {
        return;
    }
    load_block(b, 256u);
    out_clear(53u);
    var scales: array<f32, 16>;
    var max_scale = 0.0;
    var max_abs_scale = 0.0;
    for (var ib = 0u; ib < 16u; ib++) {
        let s = make_qx_quants(32, 16u * ib, 16u, select(0u, 1u, p.has_w != 0u));
        scales[ib] = s;
        if (abs(s) > max_abs_scale) {
            max_abs_scale = abs(s);
            max_scale = s;
        }
    }
    if (max_abs_scale < GROUP_MAX_EPS) {
        out_store(b, 53u);
        return;
    }
    let iscale = div_rn(-128.0, max_scale);
    let dh = f2h(div_rn(1.0, iscale));
    put16(208u, dh);
    var sc: array<i32, 16>;
    for (var ib = 0u; ib < 16u; ib++) {
        let v = wrap_i8(min(nearest_int(mul_rn(iscale, scales[ib])), 127));
        sc[ib] = v;
        put8(192u + ib, u32(v));
    }
    let d = h2f(dh);
    for (var j = 0u; j < 16u; j++) {
        let dd = mul_rn(d, f32(sc[j]));
        if (dd == 0.0) {
            continue;
        }
        for (var k = 0u; k < 16u; k++) {
            let q = clamp_i(nearest_int(div_rn(X[16u * j + k], dd)), -32, 31);
            L[16u * j + k] = u32(q + 32);
        }
    }
    for (var n = 0u; n < 2u; n++) {
        for (var k = 0u; k < 32u; k++) {
            let a = L[128u * n + k];
            let b2 = L[128u * n + k + 32u];
            let c = L[128u * n + k + 64u];
            let e = L[128u * n + k + 96u];
            put8(64u * n + k, (a & 0xfu) | ((c & 0xfu) << 4u));
            put8(64u * n + k + 32u, (b2 & 0xfu) | ((e & 0xfu) << 4u));
            put8(128u + 32u * n + k, (a >> 4u) | ((b2 >> 4u) << 2u) | ((c >> 4u) << 4u) | ((e >> 4u) << 6u));
        }
    }
    out_store(b, 53u);
}
