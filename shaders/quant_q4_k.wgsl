// Q4_K: one invocation per 256-value super-block (quantize_row_q4_K_ref / _impl); 144 bytes.
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let b = block_index(gid);
    if (b >= p.n_blocks) {
        return;
    }
    load_block(b, 256u);
    out_clear(36u);
    k_super_block(15, -1.0, 0.1, 20);
    for (var g = 0u; g < 4u; g++) {
        for (var k = 0u; k < 32u; k++) {
            put8(16u + 32u * g + k, L[64u * g + k] | (L[64u * g + 32u + k] << 4u));
        }
    }
    out_store(b, 36u);
}
