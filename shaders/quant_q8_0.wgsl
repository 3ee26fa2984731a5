// Q8_0: one invocation per 32-value block (quantize_row_q8_0_ref; importance is ignored, as in
// ggml); 34 bytes in a 36-byte slot.
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let b = block_index(gid);
    if (b >= p.n_blocks) {
        return;
    }
    load_block(b, 32u);
    out_clear(9u);
    var amax = 0.0;
    for (var j = 0u; j < 32u; j++) {
        let a = abs(X[j]);
        amax = select(a, amax, amax > a);
    }
    let d = div_rn(amax, 127.0);
    var id = 0.0;
    if (d != 0.0) {
        id = div_rn(1.0, d);
    }
    put16(0u, f2h(d));
    for (var j = 0u; j < 32u; j++) {
        let v = mul_rn(X[j], id);
        put8(2u + j, u32(rs_i32(roundf(v))));
    }
    out_store(b, 9u);
}
