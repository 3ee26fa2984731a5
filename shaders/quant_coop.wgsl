// Cooperative block quantization on subgroups: 8 lanes per 256-value super-block, lane j
// quantizing values 32j..32j+32 (one sub-block, or two of 16) with the one-invocation helpers
// of quant_common.wgsl and the type's kernel on private arrays of 32 (PRIV_N = 32), then the
// lanes exchanging the sub-blocks' scales and quants with subgroup shuffles; no workgroup memory
// and no barriers. A workgroup of 64 takes 8 super-blocks. Exact by construction, as those
// helpers: each sub-block's search is the C code's sequential loop in one lane, and what every
// lane needs from the others (scales, mins, weight sums, grid indices, a running sum handed on
// lane by lane) is moved, not recomputed, so the super-block's own steps run identically in
// every lane of the group (or in lane 0, which then packs the block).
// Every collective op is in subgroup-uniform control flow: groups past the last block redo it
// and store nothing. Kernels: Q2_K..Q6_K, IQ4_XS, IQ1_S/IQ1_M, IQ2_*, IQ3_*.

// One lane's place: its block, its sub-block (lane in the group of 8), the subgroup lane of the
// group's first lane, whether the block exists.
struct Coop {
    block: u32,
    lane: u32,
    base: u32,
    live: bool,
}

// What a kernel's entry point takes.
struct CoopIds {
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(subgroup_id) sg_id: u32,
    @builtin(subgroup_size) sg_size: u32,
    @builtin(subgroup_invocation_id) sg_lane: u32,
}

// The lane's place, with its 32 values loaded (coop_load).
fn coop_start(ids: CoopIds) -> Coop {
    let lin = ids.sg_id * ids.sg_size + ids.sg_lane;
    let lane = ids.sg_lane % 8u;
    let b = (ids.wid.y * ids.nwg.x + ids.wid.x) * 8u + lin / 8u;
    let c = Coop(min(b, p.n_blocks - 1u), lane, ids.sg_lane - lane, b < p.n_blocks);
    coop_load(c.block, c.lane);
    return c;
}

// Sub-block `lane` (32 values) of block b into X[0..32], its importance into QW.
fn coop_load(b: u32, lane: u32) {
    // Every kernel binds all four buffers (the automatic layout drops unused ones).
    if (p.n_blocks == 0xffffffffu) {
        X[0] = src_w[0] + src_sigma2[0];
    }
    let o = b * 256u + 32u * lane;
    let wo = (b % p.blocks_per_row) * 256u + 32u * lane;
    for (var i = 0u; i < 32u; i++) {
        X[i] = src_x[o + i];
        if (p.has_w != 0u) {
            QW[i] = src_w[wo + i];
        }
    }
}

// Σx² over block b's 256 values, sequential as in C (read from the input: every lane gets it).
fn coop_sum_x2(b: u32) -> f32 {
    var sum_x2 = 0.0;
    for (var i = 0u; i < 256u; i++) {
        let v = src_x[b * 256u + i];
        let v2 = mul_rn(v, v);
        sum_x2 += v2;
    }
    return sum_x2;
}

// L[4t..4t+4] (each < 256) as the bytes of one word.
fn coop_l_word(t: u32) -> u32 {
    return L[4u * t] | (L[4u * t + 1u] << 8u) | (L[4u * t + 2u] << 16u) | (L[4u * t + 3u] << 24u);
}

// A Q4_K / Q5_K super-block (quantize_row_q4_K / _q5_K's scale searches and 6-bit scales,
// ref and importance paths) with lane j doing sub-block j: lane 0 writes the 16 header
// bytes (scales, mins, d, dmin) as words 0..4 of block c.block's slot of `words`; L gets the lane's
// final quants.
fn coop_k_super_block(c: Coop, words: u32, nmax: i32, ref_rmin: f32, ref_rdelta: f32, ref_nstep: i32) {
    var r: vec2<f32>;
    var sub_w = 0.0;
    if (p.has_w == 0u) {
        var sum_x2 = 0.0;
        for (var i = 0u; i < 32u; i++) {
            let v2 = mul_rn(X[i], X[i]);
            sum_x2 += v2;
        }
        let av_x = sqrt_rn(div_rn(sum_x2, 32.0));
        for (var i = 0u; i < 32u; i++) {
            WT[i] = av_x + abs(X[i]);
        }
        r = kx_search(0u, 32u, nmax, ref_rmin, ref_rdelta, ref_nstep, false, false);
    } else {
        let sigma2 = div_rn(mul_rn(2.0, coop_sum_x2(c.block)), 256.0);
        sub_w = importance_weights(sigma2, 0u, 32u);
        r = kx_search(0u, 32u, nmax, -0.9, 0.05, 36, true, false);
    }
    // The eight sub-blocks' scales, mins and weight sums, in every lane.
    var scales: array<f32, 8>;
    var mins: array<f32, 8>;
    for (var k = 0u; k < 8u; k++) {
        scales[k] = subgroupShuffle(r.x, c.base + k);
        mins[k] = subgroupShuffle(r.y, c.base + k);
        QPW[k] = subgroupShuffle(sub_w, c.base + k);
    }
    var ls: array<u32, 8>;
    var lm: array<u32, 8>;
    var d_block = 0.0;
    var m_block = 0.0;
    if (p.has_w == 0u) {
        var max_scale = 0.0;
        var max_min = 0.0;
        for (var j = 0u; j < 8u; j++) {
            if (scales[j] > max_scale) {
                max_scale = scales[j];
            }
            if (mins[j] > max_min) {
                max_min = mins[j];
            }
        }
        var inv_scale = 0.0;
        if (max_scale > 0.0) {
            inv_scale = div_rn(63.0, max_scale);
        }
        var inv_min = 0.0;
        if (max_min > 0.0) {
            inv_min = div_rn(63.0, max_min);
        }
        for (var j = 0u; j < 8u; j++) {
            ls[j] = min(u32(nearest_int(mul_rn(inv_scale, scales[j]))) & 0xffu, 63u);
            lm[j] = min(u32(nearest_int(mul_rn(inv_min, mins[j]))) & 0xffu, 63u);
        }
        d_block = div_rn(max_scale, 63.0);
        m_block = div_rn(max_min, 63.0);
    } else {
        for (var j = 0u; j < 8u; j++) {
            QPX[j] = scales[j];
        }
        d_block = make_qp_quants(63, 8u);
        for (var j = 0u; j < 8u; j++) {
            ls[j] = min(QPL[j], 63u);
            QPX[j] = mins[j];
        }
        m_block = make_qp_quants(63, 8u);
        for (var j = 0u; j < 8u; j++) {
            lm[j] = min(QPL[j], 63u);
        }
    }
    let dh = f2h(d_block);
    let mh = f2h(m_block);
    if (c.live && c.lane == 0u) {
        // 12 packed scale/min bytes at 4..16.
        var q: array<u32, 12>;
        for (var j = 0u; j < 12u; j++) {
            q[j] = 0u;
        }
        for (var j = 0u; j < 8u; j++) {
            let s = ls[j];
            let m = lm[j];
            if (j < 4u) {
                q[j] = s;
                q[j + 4u] = m;
            } else {
                q[j + 4u] = (s & 0xfu) | ((m & 0xfu) << 4u);
                q[j - 4u] = q[j - 4u] | ((s >> 4u) << 6u);
                q[j] = q[j] | ((m >> 4u) << 6u);
            }
        }
        let o = c.block * words;
        dst[o] = (dh & 0xffffu) | ((mh & 0xffffu) << 16u);
        for (var w = 0u; w < 3u; w++) {
            let i = 4u * w;
            dst[o + 1u + w] = q[i] | (q[i + 1u] << 8u) | (q[i + 2u] << 16u) | (q[i + 3u] << 24u);
        }
    }
    // The lane's final quants from the stored d, dmin and 6-bit scale and min.
    let dd = mul_rn(h2f(dh), f32(ls[c.lane]));
    if (dd != 0.0) {
        let dm = mul_rn(h2f(mh), f32(lm[c.lane]));
        for (var i = 0u; i < 32u; i++) {
            let num = X[i] + dm;
            L[i] = u32(clamp_i(nearest_int(div_rn(num, dd)), 0, nmax));
        }
    }
}
