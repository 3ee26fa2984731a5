//! IQ1_S: 256-value super-blocks of 1.5625 bits per weight (dequantize_row_iq1_s): d (f16),
//! qs[32] (low 8 bits of 32 grid indices), qh[8] (u16 per 32-value block: three high index bits
//! per group of 8, a 3-bit block scale in bits 12..15 and the sign of the shift δ = ±1/8 in
//! bit 15). A group of 8 values is `iq1s_grid` point g (coordinates −1, 0, 1) plus δ, times
//! d·(2·scale + 1). The quantizer (quantize_row_iq1_s_impl) needs importance weights.
//!
//! Shared with IQ1_M (`iq1_m.rs`): the stable sort of a block's values, the neighbour search
//! for a group that falls off the grid, the grid's coordinates as ternary levels.
// Index loops mirror llama.cpp's (several arrays indexed together, in its order).
#![allow(clippy::needless_range_loop)]
use super::iq2_lattice::{lattice, Iq2Grid, Iq2Lattice};
use super::iq_grids::IQ1S_GRID;
use super::search::nearest_int;
use super::{f2h, h2f, BlockType, GpuQuantize, RefWeightBound, Wgsl};
use crate::gguf::GgmlType;

pub const BLOCK_BYTES: usize = 50;

/// IQ1S_DELTA = IQ1M_DELTA (ggml-common.h).
pub(crate) const DELTA: f32 = 0.125;

/// GROUP_MAX_EPS_IQ1_S (ggml-quants.c).
const GROUP_MAX_EPS: f32 = 1e-12;

/// Block of 32 values, each sharing a scale and a shift.
const BS: usize = 32;

/// Coordinate `j` (−1, 0 or 1) of grid point `g`.
#[inline(always)]
pub(crate) fn grid_value(g: usize, j: usize) -> i8 {
    (IQ1S_GRID[g] >> (8 * j)) as u8 as i8
}

/// The eight ternary levels (0, 1, 2 = coordinate + 1, what llama.cpp's lattice grid holds as
/// 2·l + 1) of grid point `g`.
#[inline(always)]
pub(crate) fn grid_levels(g: usize) -> [u8; 8] {
    let b = IQ1S_GRID[g].to_le_bytes();
    b.map(|v| (v as i8 + 1) as u8)
}

pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(BLOCK_BYTES).zip(dst.chunks_exact_mut(256)) {
        let d = h2f(&b[0..2]);
        let qs = &b[2..34];
        for ib in 0..8 {
            let qh = u16::from_le_bytes([b[34 + 2 * ib], b[35 + 2 * ib]]);
            let dl = d * (2 * ((qh >> 12) & 7) as i32 + 1) as f32;
            let delta = if qh & 0x8000 != 0 { -DELTA } else { DELTA };
            for l in 0..4 {
                let g = qs[4 * ib + l] as usize | ((((qh >> (3 * l)) & 7) as usize) << 8);
                for j in 0..8 {
                    y[32 * ib + 8 * l + j] = dl * (grid_value(g, j) as f32 + delta);
                }
            }
        }
    }
}

/// `qsort(pairs, n, 2*sizeof(float), iq1_sort_helper)` on (value, index) pairs: glibc's qsort
/// is a merge sort for arrays this small (stable: equal values keep their index order; the
/// goldens were made with glibc 2.36), so a stable insertion sort gives the same order. `idx`
/// receives the indices of `x` in ascending order of value. Never panics (NaN compares false
/// and stays put).
#[inline(always)]
pub(crate) fn sort_indices<const N: usize>(x: &[f32], idx: &mut [usize; N]) {
    let mut v = [0f32; N];
    for j in 0..N {
        let key = x[j];
        let mut p = j;
        while p > 0 && v[p - 1] > key {
            v[p] = v[p - 1];
            idx[p] = idx[p - 1];
            p -= 1;
        }
        v[p] = key;
        idx[p] = j;
    }
}

/// iq1_find_best_neighbour2: the neighbour of an off-grid group (8 values `xval`, weights
/// `weight`) with the least weighted squared error at `scale` with levels `xg`. Writes its
/// levels into `l` and returns its index. The first candidate of `neighbours` wins when none
/// scores below FLT_MAX (only with Inf/NaN inputs: llama.cpp then scans the whole grid reading
/// past `xval` and asserts).
pub(crate) fn best_neighbour2(
    neighbours: &[u16],
    xval: &[f32],
    weight: &[f32],
    scale: f32,
    xg: &[f32; 3],
    l: &mut [u8],
) -> usize {
    let mut best_score = f32::MAX;
    let mut grid_index = neighbours[0] as usize;
    for &n in neighbours {
        let lv = grid_levels(n as usize);
        let mut d2 = 0f32;
        for i in 0..8 {
            let q = xg[lv[i] as usize];
            let w = weight[i];
            let diff = scale * q - xval[i];
            d2 += w * diff * diff;
        }
        if d2 < best_score {
            best_score = d2;
            grid_index = n as usize;
        }
    }
    l[..8].copy_from_slice(&grid_levels(grid_index));
    grid_index
}

/// The grid index of a group with levels `l` (kmap), or, off the grid, of its best neighbour
/// (rewriting `l`), and whether it was on the grid.
#[inline(always)]
pub(crate) fn group_index(
    lat: &Iq2Lattice,
    l: &mut [u8],
    xval: &[f32],
    weight: &[f32],
    scale: f32,
    xg: &[f32; 3],
) -> (usize, bool) {
    let mut u = 0usize;
    for j in 0..8 {
        u |= (l[j] as usize) << (2 * j);
    }
    let m = lat.map[u];
    if m >= 0 {
        (m as usize, true)
    } else {
        let neighbours = lat.neighbours_of(m);
        (
            best_neighbour2(neighbours, xval, weight, scale, xg, l),
            false,
        )
    }
}

/// `MAX(a, b)` of C: `a > b ? a : b`.
#[inline(always)]
pub(crate) fn cmax(a: f32, b: f32) -> f32 {
    if a > b {
        a
    } else {
        b
    }
}

/// quantize_iq1_s (one row). Importance is required (`quantize_row` refuses without).
pub fn quantize(x: &[f32], dst: &mut [u8], qw: Option<&[f32]>) {
    let Some(qw) = qw else {
        panic!("IQ1_S needs importance weights (quant::quantize_row checks)");
    };
    let lat = lattice(Iq2Grid::Iq1);
    for (ibl, (xbl, y)) in x
        .chunks_exact(256)
        .zip(dst.chunks_exact_mut(BLOCK_BYTES))
        .enumerate()
    {
        quantize_super(lat, xbl, &qw[256 * ibl..256 * ibl + 256], y);
    }
}

/// quantize_row_iq1_s_impl's body for one super-block.
fn quantize_super(lat: &Iq2Lattice, xbl: &[f32], qwbl: &[f32], y: &mut [u8]) {
    let x_p: [f32; 3] = [-1.0 + DELTA, DELTA, 1.0 + DELTA];
    let x_m: [f32; 3] = [-1.0 - DELTA, -DELTA, 1.0 - DELTA];
    y.fill(0);
    let mut scales = [0f32; 8];
    let mut shifts = [0i8; 8];
    let mut qs = [0u8; 32];
    let mut qh = [0u16; 8];
    let mut max_scale = 0f32;

    let mut sumx2 = 0f32;
    for &v in xbl {
        sumx2 += v * v;
    }
    let sigma2 = 2.0 * sumx2 / 256.0;

    for ib in 0..8 {
        let xb = &xbl[BS * ib..BS * ib + BS];
        let qw = &qwbl[BS * ib..BS * ib + BS];
        let mut weight = [0f32; BS];
        for i in 0..BS {
            weight[i] = qw[i] * (sigma2 + xb[i] * xb[i]).sqrt();
        }
        let mut max = xb[0].abs();
        for &v in &xb[1..] {
            max = cmax(max, v.abs());
        }
        if max < GROUP_MAX_EPS {
            scales[ib] = 0.0;
            shifts[ib] = 1;
            continue;
        }
        // Exhaustive search of the two boundaries splitting the sorted values into the levels
        // −1, 0, 1, from prefix sums of w·x and w in ascending order of x.
        let mut idx = [0usize; BS];
        sort_indices(xb, &mut idx);
        let mut sumx = [0f32; BS + 1];
        let mut sumw = [0f32; BS + 1];
        for j in 0..BS {
            let i = idx[j];
            sumx[j + 1] = sumx[j] + weight[i] * xb[i];
            sumw[j + 1] = sumw[j] + weight[i];
        }
        let mut best_score = -f32::MAX;
        let mut scale = max;
        let (mut besti1, mut besti2, mut best_shift) = (-1i32, -1i32, 0i8);
        let (sx0, sxn, sw0, swn) = (sumx[0], sumx[BS], sumw[0], sumw[BS]);
        for i1 in 0..=BS {
            for i2 in i1..=BS {
                let (a, b, c) = (sumx[i1] - sx0, sumx[i2] - sumx[i1], sxn - sumx[i2]);
                let (wa, wb, wc) = (sumw[i1] - sw0, sumw[i2] - sumw[i1], swn - sumw[i2]);
                let sumqx = a * x_p[0] + b * x_p[1] + c * x_p[2];
                let sumq2 = wa * x_p[0] * x_p[0] + wb * x_p[1] * x_p[1] + wc * x_p[2] * x_p[2];
                if sumq2 > 0.0 && sumqx * sumqx > best_score * sumq2 {
                    scale = sumqx / sumq2;
                    best_score = scale * sumqx;
                    (besti1, besti2, best_shift) = (i1 as i32, i2 as i32, 1);
                }
                let sumqx = a * x_m[0] + b * x_m[1] + c * x_m[2];
                let sumq2 = wa * x_m[0] * x_m[0] + wb * x_m[1] * x_m[1] + wc * x_m[2] * x_m[2];
                if sumq2 > 0.0 && sumqx * sumqx > best_score * sumq2 {
                    scale = sumqx / sumq2;
                    best_score = scale * sumqx;
                    (besti1, besti2, best_shift) = (i1 as i32, i2 as i32, -1);
                }
            }
        }
        if besti1 < 0 || besti2 < 0 || best_shift == 0 {
            scales[ib] = 0.0;
            shifts[ib] = 1;
            continue;
        }
        let (b1, b2) = (besti1 as usize, besti2 as usize);
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
            best_shift = -best_shift;
        }
        let xx = if best_shift == 1 { &x_p } else { &x_m };
        let mut index = [0usize; BS / 8];
        let mut all_on_grid = true;
        for k in 0..BS / 8 {
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
            let (mut sumqx, mut sumq2) = (0f32, 0f32);
            for k in 0..BS / 8 {
                let lv = grid_levels(index[k]);
                for j in 0..8 {
                    let w = weight[8 * k + j];
                    let q = xx[lv[j] as usize];
                    sumqx += w * q * xb[8 * k + j];
                    sumq2 += w * q * q;
                }
            }
            if sumqx > 0.0 && sumq2 > 0.0 {
                scale = sumqx / sumq2;
            }
        }
        let mut h = 0u16;
        for k in 0..BS / 8 {
            qs[4 * ib + k] = (index[k] & 255) as u8;
            h |= ((index[k] >> 8) as u16) << (3 * k);
        }
        qh[ib] = h;
        scales[ib] = scale;
        shifts[ib] = best_shift;
        max_scale = cmax(max_scale, scale);
    }

    y[2..34].copy_from_slice(&qs);
    if max_scale == 0.0 {
        // llama.cpp keeps d = 0 and the indices it wrote (`if (!max_scale) continue`).
        write_qh(y, &qh);
        return;
    }
    let d = max_scale / 15.0;
    let id = 1.0 / d;
    for ib in 0..8 {
        let mut l = nearest_int(0.5 * (id * scales[ib] - 1.0));
        l = l.clamp(0, 7);
        if shifts[ib] == -1 {
            l |= 8;
        }
        qh[ib] |= (l as u16) << 12;
    }
    y[0..2].copy_from_slice(&f2h(d * 1.125).to_le_bytes());
    write_qh(y, &qh);
}

fn write_qh(y: &mut [u8], qh: &[u16; 8]) {
    for (ib, h) in qh.iter().enumerate() {
        y[34 + 2 * ib..36 + 2 * ib].copy_from_slice(&h.to_le_bytes());
    }
}

/// This type's row of the per-type table (`quant::BLOCK_TYPES`).
pub const BLOCK: BlockType = BlockType {
    ggml: GgmlType::IQ1S,
    dequantize,
    quantize: Some(quantize),
    uses_importance: true,
    requires_importance: true,
    f16_fields: &[0],
    wgsl_dequantize: Some(Wgsl {
        file: "dq_iq1.wgsl",
        source: include_str!("../../shaders/dq_iq1.wgsl"),
        consts: "const IQ1M = false;",
    }),
    gpu_quantize: Some(GpuQuantize {
        kernel: Wgsl {
            file: "quant_iq1.wgsl",
            source: include_str!("../../shaders/quant_iq1.wgsl"),
            consts: "const IQ1M = false; const GRID_N = 2048u; const SLOT_WORDS = 13u;",
        },
        row_sigma2: false,
        ref_weight_bound: RefWeightBound::AbsMaxSquared,
        tables: Some(gpu_tables),
        lanes_per_block: 8,
    }),
};

/// The kernel's `tables` (quant_iq1.wgsl, IQ1_S and IQ1_M): the 2048-point grid's points, map
/// and neighbour lists.
pub(crate) fn gpu_tables() -> Vec<u32> {
    super::iq2_lattice::table_words(Iq2Grid::Iq1)
}
