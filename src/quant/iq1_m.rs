//! IQ1_M: 256-value super-blocks of 1.75 bits per weight (dequantize_row_iq1_m): qs[32] (low 8
//! bits of 32 grid indices), qh[16] (per 16-value block, one nibble per group of 8: three high
//! index bits and the sign of the shift δ = ±1/8 in bit 3), scales[8] (as four u16: 3-bit
//! scales of four blocks in bits 0..12, one nibble of the super-block's f16 scale in bits
//! 12..16). Values are `iq1s_grid` points plus δ, times d·(2·scale + 1), per group of 8 with
//! the 3-bit scale of its half of a 32-value pair of blocks. The quantizer
//! (quantize_row_iq1_m_impl) takes optional importance: without it the weights are x² (ggml
//! does not assert for IQ1_M; llama-quant.cpp refuses per tensor, token_embd/output excepted).
// Index loops mirror llama.cpp's (several arrays indexed together, in its order).
#![allow(clippy::needless_range_loop)]
use super::iq1_s::{cmax, gpu_tables, grid_levels, grid_value, group_index, sort_indices, DELTA};
use super::iq2_lattice::{lattice, Iq2Grid, Iq2Lattice};
use super::search::nearest_int;
use super::{f2h, BlockType, GpuQuantize, RefWeightBound, Wgsl};
use crate::gguf::GgmlType;

pub const BLOCK_BYTES: usize = 56;

/// GROUP_MAX_EPS_IQ1_M (ggml-quants.c).
const GROUP_MAX_EPS: f32 = 1e-7;

/// Block of 16 values, each sharing a scale; each group of 8 has its own shift sign.
const BS: usize = 16;

/// The four u16 scale words of a block.
#[inline(always)]
fn scale_words(b: &[u8]) -> [u16; 4] {
    std::array::from_fn(|i| u16::from_le_bytes([b[48 + 2 * i], b[49 + 2 * i]]))
}

/// The super-block scale: the f16 spread over the high nibbles of the scale words.
#[inline(always)]
fn super_scale(sc: &[u16; 4]) -> f32 {
    let bits = (sc[0] >> 12) | ((sc[1] >> 8) & 0x00f0) | ((sc[2] >> 4) & 0x0f00) | (sc[3] & 0xf000);
    half::f16::from_bits(bits).to_f32()
}

/// Set the super-block scale of an IQ1_M block to the f16 `bits`, keeping its 3-bit scales
/// (the generated test weights need a finite scale there, as `f16_fields` gives other types).
pub fn set_super_scale(b: &mut [u8], bits: u16) {
    let mut sc = scale_words(b);
    for (i, w) in sc.iter_mut().enumerate() {
        *w = (*w & 0x0fff) | (((bits >> (4 * i)) & 0xf) << 12);
    }
    for (i, w) in sc.iter().enumerate() {
        b[48 + 2 * i..50 + 2 * i].copy_from_slice(&w.to_le_bytes());
    }
}

pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(BLOCK_BYTES).zip(dst.chunks_exact_mut(256)) {
        let sc = scale_words(b);
        let d = super_scale(&sc);
        for ib in 0..8 {
            let s = sc[ib / 2] >> (6 * (ib % 2));
            let dl = [
                d * (2 * (s & 7) as i32 + 1) as f32,
                d * (2 * ((s >> 3) & 7) as i32 + 1) as f32,
            ];
            for l in 0..4 {
                let qh = b[32 + 2 * ib + l / 2] >> (4 * (l % 2));
                let g = b[4 * ib + l] as usize | (((qh & 7) as usize) << 8);
                let delta = if qh & 8 != 0 { -DELTA } else { DELTA };
                for j in 0..8 {
                    y[32 * ib + 8 * l + j] = dl[l / 2] * (grid_value(g, j) as f32 + delta);
                }
            }
        }
    }
}

/// quantize_iq1_m (one row), with or without importance.
pub fn quantize(x: &[f32], dst: &mut [u8], qw: Option<&[f32]>) {
    let lat = lattice(Iq2Grid::Iq1);
    for (ibl, (xbl, y)) in x
        .chunks_exact(256)
        .zip(dst.chunks_exact_mut(BLOCK_BYTES))
        .enumerate()
    {
        quantize_super(lat, xbl, qw.map(|w| &w[256 * ibl..256 * ibl + 256]), y);
    }
}

/// The block's weights: qw·√(σ² + x²) with importance, else x².
#[inline(always)]
fn block_weights(xb: &[f32], qw: Option<&[f32]>, sigma2: f32, weight: &mut [f32; BS]) {
    match qw {
        Some(qw) => {
            for i in 0..BS {
                weight[i] = qw[i] * (sigma2 + xb[i] * xb[i]).sqrt();
            }
        }
        None => {
            for i in 0..BS {
                weight[i] = xb[i] * xb[i];
            }
        }
    }
}

/// The levels of group `k` (0: first 8 values, 1: the next 8) under shift choice `shift`
/// (0: +,+ 1: +,− 2: −,+ 3: −,−; + is x_p, − is x_m).
#[inline(always)]
fn group_levels<'a>(shift: usize, k: usize, x_p: &'a [f32; 3], x_m: &'a [f32; 3]) -> &'a [f32; 3] {
    let plus = if k == 0 {
        shift < 2
    } else {
        shift.is_multiple_of(2)
    };
    if plus {
        x_p
    } else {
        x_m
    }
}

/// quantize_row_iq1_m_impl's body for one super-block.
fn quantize_super(lat: &Iq2Lattice, xbl: &[f32], qwbl: Option<&[f32]>, y: &mut [u8]) {
    let x_p: [f32; 3] = [-1.0 + DELTA, DELTA, 1.0 + DELTA];
    let x_m: [f32; 3] = [-1.0 - DELTA, -DELTA, 1.0 - DELTA];
    const MASKS: [u8; 4] = [0x00, 0x80, 0x08, 0x88];
    let mut scales = [0f32; 16];
    let mut shifts = [0usize; 16];
    let mut qs = [0u8; 32];
    let mut qh = [0u8; 16];
    let mut max_scale = 0f32;

    let mut sumx2 = 0f32;
    for &v in xbl {
        sumx2 += v * v;
    }
    let sigma2 = 2.0 * sumx2 / 256.0;

    // Coefficients of the collapsed 3-group sums (v0 − v1 = v1 − v2 = −1 for both level sets).
    let (p2, m2) = (x_p[2], x_m[2]);
    let cp1 = x_p[0] * x_p[0] - x_p[1] * x_p[1];
    let cp2 = x_p[1] * x_p[1] - x_p[2] * x_p[2];
    let cm1 = x_m[0] * x_m[0] - x_m[1] * x_m[1];
    let cm2 = x_m[1] * x_m[1] - x_m[2] * x_m[2];

    let mut weight = [0f32; BS];
    for ib in 0..16 {
        let xb = &xbl[BS * ib..BS * ib + BS];
        let qw = qwbl.map(|w| &w[BS * ib..BS * ib + BS]);
        block_weights(xb, qw, sigma2, &mut weight);
        let mut max = xb[0].abs();
        for &v in &xb[1..] {
            max = cmax(max, v.abs());
        }
        if max < GROUP_MAX_EPS {
            scales[ib] = 0.0;
            shifts[ib] = 0;
            continue;
        }
        let mut idx = [0usize; BS];
        sort_indices(xb, &mut idx);
        let mut best_score = -f32::MAX;
        let mut scale = max;
        let (mut besti1, mut besti2, mut best_k) = (-1i32, -1i32, -1i32);
        // Prefix sums per half of the block: each half has its own shift sign.
        let mut px = [[0f32; BS + 1]; 2];
        let mut pw = [[0f32; BS + 1]; 2];
        for j in 0..BS {
            let i = idx[j];
            let h = if i < BS / 2 { 0 } else { 1 };
            px[h][j + 1] = px[h][j] + weight[i] * xb[i];
            px[1 - h][j + 1] = px[1 - h][j];
            pw[h][j + 1] = pw[h][j] + weight[i];
            pw[1 - h][j + 1] = pw[1 - h][j];
        }
        let txs = [px[0][BS], px[1][BS]];
        let tws = [pw[0][BS], pw[1][BS]];
        // The i1/i2-independent terms of the per-half sums.
        let tx_p = [txs[0] * p2, txs[1] * p2];
        let tx_m = [txs[0] * m2, txs[1] * m2];
        let tw_p = [tws[0] * p2 * p2, tws[1] * p2 * p2];
        let tw_m = [tws[0] * m2 * m2, tws[1] * m2 * m2];
        for i1 in 0..=BS {
            for i2 in i1..=BS {
                let mut qx_p = [0f32; 2];
                let mut qx_m = [0f32; 2];
                let mut q2_p = [0f32; 2];
                let mut q2_m = [0f32; 2];
                for h in 0..2 {
                    let sx = px[h][i1] + px[h][i2];
                    qx_p[h] = tx_p[h] - sx;
                    qx_m[h] = tx_m[h] - sx;
                    q2_p[h] = tw_p[h] + pw[h][i1] * cp1 + pw[h][i2] * cp2;
                    q2_m[h] = tw_m[h] + pw[h][i1] * cm1 + pw[h][i2] * cm2;
                }
                let sumqx = [
                    qx_p[0] + qx_p[1],
                    qx_p[0] + qx_m[1],
                    qx_m[0] + qx_p[1],
                    qx_m[0] + qx_m[1],
                ];
                let sumq2 = [
                    q2_p[0] + q2_p[1],
                    q2_p[0] + q2_m[1],
                    q2_m[0] + q2_p[1],
                    q2_m[0] + q2_m[1],
                ];
                for k in 0..4 {
                    if sumq2[k] > 0.0 && sumqx[k] * sumqx[k] > best_score * sumq2[k] {
                        scale = sumqx[k] / sumq2[k];
                        best_score = scale * sumqx[k];
                        (besti1, besti2, best_k) = (i1 as i32, i2 as i32, k as i32);
                    }
                }
            }
        }
        if besti1 < 0 || besti2 < 0 || best_k < 0 {
            scales[ib] = 0.0;
            shifts[ib] = 0;
            continue;
        }
        let (b1, b2) = (besti1 as usize, besti2 as usize);
        let mut best_k = best_k as usize;
        let mut l = [0u8; BS];
        for (j, &i) in idx.iter().enumerate() {
            l[i] = if j < b1 {
                0
            } else if j < b2 {
                1
            } else {
                2
            };
        }
        if scale < 0.0 {
            for v in l.iter_mut() {
                *v = 2 - *v;
            }
            scale = -scale;
            best_k = 3 - best_k;
        }
        let mut index = [0usize; 2];
        let mut all_on_grid = true;
        for k in 0..2 {
            let xx = group_levels(best_k, k, &x_p, &x_m);
            let r = 8 * k..8 * k + 8;
            let (g, on) = group_index(
                lat,
                &mut l[r.clone()],
                &xb[r.clone()],
                &weight[r],
                scale,
                xx,
            );
            all_on_grid &= on;
            index[k] = g;
        }
        if !all_on_grid {
            let (mut sumqx_f, mut sumq2_f) = (0f32, 0f32);
            for k in 0..2 {
                let xx = group_levels(best_k, k, &x_p, &x_m);
                let lv = grid_levels(index[k]);
                for j in 0..8 {
                    let w = weight[8 * k + j];
                    let q = xx[lv[j] as usize];
                    sumqx_f += w * q * xb[8 * k + j];
                    sumq2_f += w * q * q;
                }
            }
            if sumqx_f > 0.0 && sumq2_f > 0.0 {
                scale = sumqx_f / sumq2_f;
            }
        }
        qs[2 * ib] = (index[0] & 255) as u8;
        qs[2 * ib + 1] = (index[1] & 255) as u8;
        qh[ib] = ((index[0] >> 8) | ((index[1] >> 8) << 4)) as u8;
        scales[ib] = scale;
        shifts[ib] = best_k;
        max_scale = cmax(max_scale, scale);
    }

    y[0..32].copy_from_slice(&qs);
    let mut sc = [0u16; 4];
    if max_scale != 0.0 {
        let mut d = max_scale / 15.0;
        let id = 1.0 / d;
        let (mut sumqx_f, mut sumq2_f) = (0f32, 0f32);
        for ib in 0..16 {
            let mut l = nearest_int(0.5 * (id * scales[ib] - 1.0));
            l = l.clamp(0, 7);
            sc[ib / 4] |= (l as u16) << (3 * (ib % 4));
            qh[ib] |= MASKS[shifts[ib]];
            let xb = &xbl[BS * ib..BS * ib + BS];
            let qw = qwbl.map(|w| &w[BS * ib..BS * ib + BS]);
            block_weights(xb, qw, sigma2, &mut weight);
            let mult = (2 * l + 1) as f32;
            for k in 0..2 {
                let xx = group_levels(shifts[ib], k, &x_p, &x_m);
                let g = qs[2 * ib + k] as usize | ((((qh[ib] >> (4 * k)) & 7) as usize) << 8);
                let lv = grid_levels(g);
                for j in 0..8 {
                    let w = weight[8 * k + j];
                    let q = xx[lv[j] as usize] * mult;
                    sumqx_f += w * q * xb[8 * k + j];
                    sumq2_f += w * q * q;
                }
            }
        }
        if sumq2_f > 0.0 {
            d = sumqx_f / sumq2_f;
        }
        let s = f2h(d * 1.1125);
        sc[0] |= (s & 0x000f) << 12;
        sc[1] |= (s & 0x00f0) << 8;
        sc[2] |= (s & 0x0f00) << 4;
        sc[3] |= s & 0xf000;
    }
    // llama.cpp's `if (!max_scale) continue` keeps the written indices, zero scales and
    // shift bits.
    y[32..48].copy_from_slice(&qh);
    for (i, w) in sc.iter().enumerate() {
        y[48 + 2 * i..50 + 2 * i].copy_from_slice(&w.to_le_bytes());
    }
}

/// This type's row of the per-type table (`quant::BLOCK_TYPES`).
pub const BLOCK: BlockType = BlockType {
    ggml: GgmlType::IQ1M,
    dequantize,
    quantize: Some(quantize),
    uses_importance: true,
    requires_importance: false,
    f16_fields: &[],
    wgsl_dequantize: Some(Wgsl {
        file: "dq_iq1.wgsl",
        source: include_str!("../../shaders/dq_iq1.wgsl"),
        consts: "const IQ1M = true;",
    }),
    gpu_quantize: Some(GpuQuantize {
        kernel: Wgsl {
            file: "quant_iq1.wgsl",
            source: include_str!("../../shaders/quant_iq1.wgsl"),
            consts: "const IQ1M = true; const GRID_N = 2048u; const SLOT_WORDS = 14u;",
        },
        row_sigma2: false,
        ref_weight_bound: RefWeightBound::AbsMaxSquared,
        tables: Some(gpu_tables),
        lanes_per_block: 8,
    }),
};
