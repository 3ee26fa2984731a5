// Q4_K: 8 lanes per 256-value super-block (quantize_row_q4_K_ref / _impl; quant_coop.wgsl);
// 144 bytes = 36 words.
@compute @workgroup_size(64)
fn main(ids: CoopIds) {
    let c = coop_start(ids);
    coop_k_super_block(c, 36u, 15, -1.0, 0.1, 20);
    // Bytes 16 + 32g + k = L_2g[k] | L_2g+1[k] << 4 (L_j: sub-block j's quants, < 16): the even
    // lane of each pair writes 8 words.
    let o = c.block * 36u + 4u + 8u * (c.lane / 2u);
    for (var t = 0u; t < 8u; t++) {
        let own = coop_l_word(t);
        let odd = subgroupShuffle(own, c.base + (c.lane | 1u));
        if (c.live && c.lane % 2u == 0u) {
            dst[o + t] = own | (odd << 4u);
        }
    }
}
