//! IQ2_XS: 2.3125 bpw. A 256-value super-block is an f16 scale `d`, 32 u16 (a 9-bit
//! IQ2XS_GRID index and 7 signs, the eighth their parity, per 8 values), and 8 bytes of two
//! 4-bit scales (one per 16 values). dequantize_row_iq2_xs and quantize_row_iq2_xs_impl of
//! ggml-quants.c (SPEC's sdist, lines 2515 and 3472); llama.cpp refuses it without importance.
// Index loops as in ggml-quants.c, so the float order can be checked line by line.
#![allow(clippy::needless_range_loop)]
use super::iq2_lattice::{lattice, Iq2Grid, Iq2Lattice};
use super::iq2_xxs::{
    fold_signs_even, group_max, imatrix_weights, ksigns, point_index, scale_code, sum_x2, sums,
    to_grid, write_point,
};
use super::iq_grids::IQ2XS_GRID;
use super::search::GROUP_MAX_EPS;
use super::{f2h, h2f, BlockType, GpuQuantize, RefWeightBound, Wgsl};
use crate::gguf::GgmlType;

pub const BLOCK_BYTES: usize = 74;

pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(BLOCK_BYTES).zip(dst.chunks_exact_mut(256)) {
        let d = h2f(&b[0..2]);
        for ib32 in 0..8 {
            let sc = b[66 + ib32];
            let db = [
                d * (0.5f32 + (sc & 0xf) as f32) * 0.25f32,
                d * (0.5f32 + (sc >> 4) as f32) * 0.25f32,
            ];
            for l in 0..4 {
                let o = 2 + 2 * (4 * ib32 + l);
                let q = u16::from_le_bytes([b[o], b[o + 1]]);
                let y0 = 32 * ib32 + 8 * l;
                write_point(
                    &mut y[y0..y0 + 8],
                    db[l / 2],
                    IQ2XS_GRID[(q & 511) as usize],
                    ksigns((q >> 9) as u32),
                );
            }
        }
    }
}

/// The 16-value search IQ2_XS and IQ2_S share: the scale over 19 trial inverse scales around
/// 5/max, each rounding to the grid (off-grid points through their neighbour list), then the
/// off-grid halves rounded again at the chosen scale. Returns the scale; `l` gets the codes.
#[inline(always)]
pub(crate) fn search16(
    lat: &Iq2Lattice,
    xval: &[f32; 16],
    weight: &[f32; 16],
    waux: &[f32; 16],
    max: f32,
    l: &mut [i8; 16],
) -> f32 {
    const K_MAX_Q: i32 = 3;
    let mut laux = [0i8; 16];
    let mut best = 0f32;
    let mut scale = max / (2 * K_MAX_Q - 1) as f32;
    let mut is_on_grid = [true; 2];
    let mut is_on_grid_aux = [true; 2];
    for is in -9i32..=9 {
        let id = ((2 * K_MAX_Q - 1) as f32 + is as f32 * 0.1f32) / max;
        let this_scale = 1.0 / id;
        for k in 0..2 {
            let r = 8 * k..8 * k + 8;
            is_on_grid_aux[k] = to_grid(
                lat,
                &xval[r.clone()],
                &waux[r.clone()],
                id,
                this_scale,
                &mut laux[r],
            )
            .1;
        }
        let (sumqx, sumq2) = sums(weight, xval, &laux);
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            scale = sumqx / sumq2;
            best = scale * sumqx;
            *l = laux;
            is_on_grid = is_on_grid_aux;
        }
    }
    if (!is_on_grid[0] || !is_on_grid[1]) && scale > 0.0 {
        let id = 1.0 / scale;
        for k in 0..2 {
            if is_on_grid[k] {
                continue;
            }
            let r = 8 * k..8 * k + 8;
            to_grid(
                lat,
                &xval[r.clone()],
                &waux[r.clone()],
                id,
                scale,
                &mut l[r],
            );
        }
        let (sumqx, sumq2) = sums(weight, xval, l);
        if sumq2 > 0.0 {
            scale = sumqx / sumq2;
        }
    }
    scale
}

/// The super-block scale d = max_scale/31 (stored as f16 of d·`d_factor`) and the 16 4-bit
/// group scale codes at byte `at` (IQ2_XS and IQ2_S).
#[inline(always)]
pub(crate) fn pack_d_scales16(
    y: &mut [u8],
    max_scale: f32,
    d_factor: f32,
    scales: &[f32; 16],
    at: usize,
) {
    let d = max_scale / 31.0;
    // ×1.0 (IQ2_XS) changes no value.
    y[0..2].copy_from_slice(&f2h(d * d_factor).to_le_bytes());
    let id = 1.0 / d;
    for ib in 0..16 {
        y[at + ib / 2] |= (scale_code(id, scales[ib]) as u8) << (4 * (ib % 2));
    }
}

/// quantize_iq2_xs (one row). Without importance it writes nothing (`quantize_row` refuses
/// the type before getting here, as llama.cpp asserts).
pub fn quantize(x: &[f32], dst: &mut [u8], qw: Option<&[f32]>) {
    let Some(qw) = qw else {
        return;
    };
    let lat = lattice(Iq2Grid::Iq2Xs);
    for (ibl, (xbl, y)) in x
        .chunks_exact(256)
        .zip(dst.chunks_exact_mut(BLOCK_BYTES))
        .enumerate()
    {
        let mut scales = [0f32; 16];
        let mut weight = [0f32; 16];
        let mut xval = [0f32; 16];
        let mut waux = [0f32; 16];
        let mut block_signs = [0u8; 2];
        let mut q2 = [0u16; 32];
        let mut max_scale = 0f32;
        let sigma2 = sum_x2(xbl) / 256.0;
        for ib in 0..16 {
            let xb = &xbl[16 * ib..16 * ib + 16];
            let w = &qw[256 * ibl + 16 * ib..256 * ibl + 16 * ib + 16];
            imatrix_weights(xb, w, sigma2, &mut weight, &mut waux);
            for k in 0..2 {
                let r = 8 * k..8 * k + 8;
                block_signs[k] = fold_signs_even(&xb[r.clone()], &weight[r.clone()], &mut xval[r]);
            }
            let max = group_max(&xval);
            if max < GROUP_MAX_EPS {
                scales[ib] = 0.0;
                continue;
            }
            let mut l = [0i8; 16];
            let mut scale = search16(lat, &xval, &weight, &waux, max, &mut l);
            if scale < 0.0 {
                scale = -scale;
                for s in &mut block_signs {
                    *s = !*s & 127;
                }
            }
            for k in 0..2 {
                // On the grid by construction (llama.cpp aborts otherwise).
                let gi = lat.map[point_index(&l[8 * k..8 * k + 8])].max(0) as u16;
                q2[2 * ib + k] = gi | (block_signs[k] as u16) << 9;
            }
            scales[ib] = scale;
            max_scale = if max_scale > scale { max_scale } else { scale };
        }
        y.fill(0);
        if max_scale == 0.0 {
            continue;
        }
        pack_d_scales16(y, max_scale, 1.0, &scales, 66);
        for (i, q) in q2.iter().enumerate() {
            y[2 + 2 * i..4 + 2 * i].copy_from_slice(&q.to_le_bytes());
        }
    }
}

/// This type's row of the per-type table (`quant::BLOCK_TYPES`).
pub const BLOCK: BlockType = BlockType {
    ggml: GgmlType::IQ2XS,
    dequantize,
    quantize: Some(quantize),
    uses_importance: true,
    requires_importance: true,
    f16_fields: &[0],
    wgsl_dequantize: Some(Wgsl {
        file: "dq_iq2.wgsl",
        source: include_str!("../../shaders/dq_iq2.wgsl"),
        consts: "const KIND = 1u;",
    }),
    gpu_quantize: Some(GpuQuantize {
        kernel: Wgsl {
            file: "quant_iq2.wgsl",
            source: include_str!("../../shaders/quant_iq2.wgsl"),
            consts: "const KIND = 1u; const GRID_N = 512u; const SLOT_WORDS = 19u;",
        },
        row_sigma2: false,
        ref_weight_bound: RefWeightBound::AbsMaxSquared,
        tables: Some(gpu_tables),
        lanes_per_block: 8,
    }),
};

/// The kernel's `tables` (quant_iq2.wgsl): this type's grid, map and neighbour lists.
fn gpu_tables() -> Vec<u32> {
    super::iq2_lattice::table_words(Iq2Grid::Iq2Xs)
}
