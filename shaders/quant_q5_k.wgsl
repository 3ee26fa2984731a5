// Q5_K: 8 lanes per 256-value super-block (quantize_row_q5_K_ref / _impl; quant_coop.wgsl);
// 176 bytes = 44 words.
@compute @workgroup_size(64)
fn main(ids: CoopIds) {
    let c = coop_start(ids);
    coop_k_super_block(c, 44u, 31, -0.5, 0.1, 15);
    let ob = c.block * 44u;
    for (var t = 0u; t < 8u; t++) {
        let own = coop_l_word(t);
        // qh (bytes 16..48): bit j of byte k is L_j[k]'s fifth bit; OR over the group's lanes.
        var h = ((own >> 4u) & 0x01010101u) << c.lane;
        h = h | subgroupShuffleXor(h, 1u);
        h = h | subgroupShuffleXor(h, 2u);
        h = h | subgroupShuffleXor(h, 4u);
        // qs (bytes 48..176): byte 32g + k = low nibbles of L_2g[k] and L_2g+1[k].
        let odd = subgroupShuffle(own, c.base + (c.lane | 1u));
        if (c.live) {
            if (c.lane == 0u) {
                dst[ob + 4u + t] = h;
            }
            if (c.lane % 2u == 0u) {
                dst[ob + 12u + 8u * (c.lane / 2u) + t] = (own & 0x0f0f0f0fu) | ((odd & 0x0f0f0f0fu) << 4u);
            }
        }
    }
}
