//! IQ2_XXS: 2.0625 bpw. A 256-value super-block is an f16 scale `d` and 8 groups of 32 values
//! in two u32 each: four IQ2XXS_GRID indices (bytes), then four 7-bit sign fields and a 4-bit
//! group scale (bits 28..32). The eighth sign of each 8 is the parity of the other seven.
//! dequantize_row_iq2_xxs and quantize_row_iq2_xxs_impl of ggml-quants.c (SPEC's sdist,
//! lines 2488 and 3294); llama.cpp refuses it without importance.
// Index loops as in ggml-quants.c, so the float order can be checked line by line.
#![allow(clippy::needless_range_loop)]
use super::iq2_lattice::{find_best_neighbour, lattice, Iq2Grid, Iq2Lattice};
use super::iq_grids::IQ2XXS_GRID;
use super::search::{make_qp_quants, nearest_int, GROUP_MAX_EPS};
use super::{f2h, h2f, BlockType, GpuQuantize, RefWeightBound, Wgsl};
use crate::gguf::GgmlType;

pub const BLOCK_BYTES: usize = 66;

/// ksigns_iq2xs[i]: the 7 stored signs `i` with the parity bit that makes their count even.
#[inline(always)]
pub fn ksigns(i: u32) -> u8 {
    (i | ((i.count_ones() & 1) << 7)) as u8
}

/// One 8-value grid point times `db` with the signs of `signs` (bit j: value j negative).
#[inline(always)]
pub(crate) fn write_point(y: &mut [f32], db: f32, grid: u64, signs: u8) {
    for j in 0..8 {
        let g = (grid >> (8 * j)) as u8 as f32;
        y[j] = db * g * if signs & (1 << j) != 0 { -1.0 } else { 1.0 };
    }
}

pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(BLOCK_BYTES).zip(dst.chunks_exact_mut(256)) {
        let d = h2f(&b[0..2]);
        for ib32 in 0..8 {
            let q = &b[2 + 8 * ib32..2 + 8 * ib32 + 8];
            let aux1 = u32::from_le_bytes([q[4], q[5], q[6], q[7]]);
            let db = d * (0.5f32 + (aux1 >> 28) as f32) * 0.25f32;
            for l in 0..4 {
                let signs = ksigns((aux1 >> (7 * l)) & 127);
                let o = 32 * ib32 + 8 * l;
                write_point(&mut y[o..o + 8], db, IQ2XXS_GRID[q[l] as usize], signs);
            }
        }
    }
}

/// Fold the signs of 8 values into `xval` (|x|) and a bit field (bit i: x_i < 0).
#[inline(always)]
pub(crate) fn fold_signs(xb: &[f32], xval: &mut [f32]) -> u8 {
    let mut s = 0u8;
    for i in 0..8 {
        if xb[i] >= 0.0 {
            xval[i] = xb[i];
        } else {
            xval[i] = -xb[i];
            s |= 1 << i;
        }
    }
    s
}

/// As [`fold_signs`], keeping 7 bits: with an odd count, the value of least w·x² keeps its
/// sign flipped instead (its sign becomes the parity bit).
#[inline(always)]
pub(crate) fn fold_signs_even(xb: &[f32], weight: &[f32], xval: &mut [f32]) -> u8 {
    let mut s = fold_signs(xb, xval);
    if s.count_ones() % 2 == 1 {
        let mut imin = 0;
        let mut min = weight[0] * xb[0] * xb[0];
        for i in 1..8 {
            let ax = weight[i] * xb[i] * xb[i];
            if ax < min {
                min = ax;
                imin = i;
            }
        }
        xval[imin] = -xval[imin];
        s ^= 1 << imin;
    }
    s & 127
}

/// The codes 0..=2 of `xval` at inverse scale `id`, and their point index.
#[inline(always)]
pub(crate) fn round_to_codes(xval: &[f32], id: f32, l: &mut [i8]) -> usize {
    let mut u = 0usize;
    for i in 0..8 {
        let q = nearest_int(0.5f32 * (id * xval[i] - 1.0)).clamp(0, 2);
        l[i] = q as i8;
        u |= (q as usize) << (2 * i);
    }
    u
}

/// The point index of codes `l`.
#[inline(always)]
pub(crate) fn point_index(l: &[i8]) -> usize {
    (0..8).fold(0usize, |u, i| u | (l[i] as usize) << (2 * i))
}

/// Σw·x·q and Σw·q² over q = 2·l + 1, in C's order.
#[inline(always)]
pub(crate) fn sums(weight: &[f32], xval: &[f32], l: &[i8]) -> (f32, f32) {
    let mut sumqx = 0f32;
    let mut sumq2 = 0f32;
    for i in 0..weight.len() {
        let w = weight[i];
        let q = (2 * l[i] as i32 + 1) as f32;
        sumqx += w * xval[i] * q;
        sumq2 += w * q * q;
    }
    (sumqx, sumq2)
}

/// Round 8 values to codes at `id`, then onto the grid (the best neighbour at `scale` when the
/// point is off the grid); returns the grid index.
#[inline(always)]
pub(crate) fn to_grid(
    lat: &Iq2Lattice,
    xval: &[f32],
    waux: &[f32],
    id: f32,
    scale: f32,
    l: &mut [i8],
) -> (usize, bool) {
    let u = round_to_codes(xval, id, l);
    let m = lat.map[u];
    if m >= 0 {
        (m as usize, true)
    } else {
        let nb = lat.neighbours_of(m);
        (find_best_neighbour(lat, nb, xval, waux, scale, l), false)
    }
}

/// Σx² / 256 of a super-block (sequential f32).
#[inline(always)]
pub(crate) fn sum_x2(xbl: &[f32]) -> f32 {
    let mut s = 0f32;
    for &v in xbl {
        s += v * v;
    }
    s
}

/// The imatrix weights of a group, w·√(σ² + x²), and their square roots (the neighbour
/// search's weights).
#[inline(always)]
pub(crate) fn imatrix_weights(
    xb: &[f32],
    w: &[f32],
    sigma2: f32,
    weight: &mut [f32],
    waux: &mut [f32],
) {
    for i in 0..xb.len() {
        weight[i] = w[i] * (sigma2 + xb[i] * xb[i]).sqrt();
    }
    sqrt_weights(weight, waux);
}

/// waux = √weight.
#[inline(always)]
pub(crate) fn sqrt_weights(weight: &[f32], waux: &mut [f32]) {
    for i in 0..weight.len() {
        waux[i] = weight[i].sqrt();
    }
}

/// The largest of `xval` (C's `max = max > v ? max : v` from the first).
#[inline(always)]
pub(crate) fn group_max(xval: &[f32]) -> f32 {
    let mut max = xval[0];
    for &v in &xval[1..] {
        max = if max > v { max } else { v };
    }
    max
}

/// The 4-bit group scale code of `scale` at inverse super-block scale `id`.
#[inline(always)]
pub(crate) fn scale_code(id: f32, scale: f32) -> u32 {
    nearest_int(0.5f32 * (id * scale - 1.0)).clamp(0, 15) as u32
}

/// quantize_iq2_xxs (one row). Without importance it writes nothing (`quantize_row` refuses
/// the type before getting here, as llama.cpp asserts).
pub fn quantize(x: &[f32], dst: &mut [u8], qw: Option<&[f32]>) {
    let Some(qw) = qw else {
        return;
    };
    let lat = lattice(Iq2Grid::Iq2Xxs);
    const K_MAX_Q: i32 = 3;
    for (ibl, (xbl, y)) in x
        .chunks_exact(256)
        .zip(dst.chunks_exact_mut(BLOCK_BYTES))
        .enumerate()
    {
        let mut scales = [0f32; 8];
        let mut weight = [0f32; 32];
        let mut xval = [0f32; 32];
        let mut l = [0i8; 32];
        let mut laux = [0i8; 32];
        let mut lqp = [0u8; 32];
        let mut waux = [0f32; 32];
        let mut block_signs = [0u8; 4];
        let mut q2 = [0u32; 16];
        let mut max_scale = 0f32;
        let sigma2 = sum_x2(xbl) / 256.0;
        for ib in 0..8 {
            let xb = &xbl[32 * ib..32 * ib + 32];
            let w = &qw[256 * ibl + 32 * ib..256 * ibl + 32 * ib + 32];
            imatrix_weights(xb, w, sigma2, &mut weight, &mut waux);
            for k in 0..4 {
                let r = 8 * k..8 * k + 8;
                block_signs[k] = fold_signs_even(&xb[r.clone()], &weight[r.clone()], &mut xval[r]);
            }
            if group_max(&xval) < GROUP_MAX_EPS {
                scales[ib] = 0.0;
                continue;
            }
            let mut scale = make_qp_quants(K_MAX_Q + 1, &xval, &mut lqp, &weight);
            let eff_max = scale * K_MAX_Q as f32;
            if eff_max <= 0.0 {
                scales[ib] = 0.0;
                continue;
            }
            let mut best = 0f32;
            for is in -6i32..=6 {
                let id = ((2 * K_MAX_Q - 1) as f32 + is as f32 * 0.1f32) / eff_max;
                let this_scale = 1.0 / id;
                for k in 0..4 {
                    let r = 8 * k..8 * k + 8;
                    to_grid(
                        lat,
                        &xval[r.clone()],
                        &waux[r.clone()],
                        id,
                        this_scale,
                        &mut laux[r],
                    );
                }
                let (sumqx, sumq2) = sums(&weight, &xval, &laux);
                if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
                    scale = sumqx / sumq2;
                    best = scale * sumqx;
                    l = laux;
                }
            }
            if scale > 0.0 {
                let id = 1.0 / scale;
                for k in 0..4 {
                    let r = 8 * k..8 * k + 8;
                    let (gi, _) = to_grid(
                        lat,
                        &xval[r.clone()],
                        &waux[r.clone()],
                        id,
                        scale,
                        &mut l[r.clone()],
                    );
                    let pg = lat.point(gi);
                    for i in 0..8 {
                        l[8 * k + i] = (pg[i] - 1) / 2;
                    }
                }
                let (sumqx, sumq2) = sums(&weight, &xval, &l);
                if sumq2 > 0.0 {
                    scale = sumqx / sumq2;
                }
            }
            if scale < 0.0 {
                scale = -scale;
                for s in &mut block_signs {
                    *s = !*s & 127;
                }
            }
            for k in 0..4 {
                let u = point_index(&l[8 * k..8 * k + 8]);
                // On the grid by construction (llama.cpp aborts otherwise).
                let gi = lat.map[u].max(0) as u32;
                q2[2 * ib] |= gi << (8 * k);
                q2[2 * ib + 1] |= (block_signs[k] as u32) << (7 * k);
            }
            scales[ib] = scale;
            max_scale = if max_scale > scale { max_scale } else { scale };
        }
        y.fill(0);
        if max_scale == 0.0 {
            continue;
        }
        let d = max_scale / 31.0;
        y[0..2].copy_from_slice(&f2h(d).to_le_bytes());
        let id = 1.0 / d;
        for ib in 0..8 {
            q2[2 * ib + 1] |= scale_code(id, scales[ib]) << 28;
        }
        for (i, q) in q2.iter().enumerate() {
            y[2 + 4 * i..6 + 4 * i].copy_from_slice(&q.to_le_bytes());
        }
    }
}

/// This type's row of the per-type table (`quant::BLOCK_TYPES`).
pub const BLOCK: BlockType = BlockType {
    ggml: GgmlType::IQ2XXS,
    dequantize,
    quantize: Some(quantize),
    uses_importance: true,
    requires_importance: true,
    f16_fields: &[0],
    wgsl_dequantize: Some(Wgsl {
        file: "dq_iq2.wgsl",
        source: include_str!("../../shaders/dq_iq2.wgsl"),
        consts: "const KIND = 0u;",
    }),
    gpu_quantize: Some(GpuQuantize {
        kernel: Wgsl {
            file: "quant_iq2.wgsl",
            source: include_str!("../../shaders/quant_iq2.wgsl"),
            consts: "const KIND = 0u; const GRID_N = 256u; const SLOT_WORDS = 17u;",
        },
        row_sigma2: false,
        ref_weight_bound: RefWeightBound::AbsMaxSquared,
        tables: Some(gpu_tables),
        lanes_per_block: 8,
    }),
};

/// The kernel's `tables` (quant_iq2.wgsl): this type's grid, map and neighbour lists.
fn gpu_tables() -> Vec<u32> {
    super::iq2_lattice::table_words(Iq2Grid::Iq2Xxs)
}
