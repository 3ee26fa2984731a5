//! IQ2_S: 2.5625 bpw. A 256-value super-block is an f16 scale `d`, 32 low bytes of 10-bit
//! IQ2S_GRID indices, 32 sign bytes (all 8 signs stored), 8 bytes of the indices' high bits
//! (`qh`, 2 per index) and 8 bytes of two 4-bit scales (one per 16 values).
//! dequantize_row_iq2_s and quantize_row_iq2_s_impl of ggml-quants.c (SPEC's sdist, lines 2540
//! and 5113); without importance it weighs by σ²/4 + x² (its `else` branch).
use super::iq2_lattice::{lattice, Iq2Grid};
use super::iq2_xs::{pack_d_scales16, search16};
use super::iq2_xxs::{
    fold_signs, group_max, imatrix_weights, point_index, sqrt_weights, sum_x2, write_point,
};
use super::iq_grids::IQ2S_GRID;
use super::{h2f, BlockType, GpuQuantize, RefWeightBound, Wgsl};
use crate::gguf::GgmlType;

pub const BLOCK_BYTES: usize = 82;

/// GROUP_MAX_EPS_IQ2_S.
const GROUP_MAX_EPS_IQ2_S: f32 = 1e-8;

pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(BLOCK_BYTES).zip(dst.chunks_exact_mut(256)) {
        let d = h2f(&b[0..2]);
        for ib32 in 0..8 {
            let sc = b[74 + ib32];
            let db = [
                d * (0.5f32 + (sc & 0xf) as f32) * 0.25f32,
                d * (0.5f32 + (sc >> 4) as f32) * 0.25f32,
            ];
            let qh = b[66 + ib32] as usize;
            for l in 0..4 {
                let qs = b[2 + 4 * ib32 + l] as usize;
                let index = qs | ((qh << (8 - 2 * l)) & 0x300);
                let signs = b[34 + 4 * ib32 + l];
                let y0 = 32 * ib32 + 8 * l;
                write_point(&mut y[y0..y0 + 8], db[l / 2], IQ2S_GRID[index], signs);
            }
        }
    }
}

/// quantize_iq2_s (one row), with or without importance.
pub fn quantize(x: &[f32], dst: &mut [u8], qw: Option<&[f32]>) {
    let lat = lattice(Iq2Grid::Iq2S);
    for (ibl, (xbl, y)) in x
        .chunks_exact(256)
        .zip(dst.chunks_exact_mut(BLOCK_BYTES))
        .enumerate()
    {
        y.fill(0);
        let mut scales = [0f32; 16];
        let mut weight = [0f32; 16];
        let mut xval = [0f32; 16];
        let mut waux = [0f32; 16];
        let mut block_signs = [0u8; 2];
        let mut max_scale = 0f32;
        let sigma2 = 2.0 * sum_x2(xbl) / 256.0;
        for ib in 0..16 {
            let xb = &xbl[16 * ib..16 * ib + 16];
            match qw {
                Some(qw) => {
                    let w = &qw[256 * ibl + 16 * ib..256 * ibl + 16 * ib + 16];
                    imatrix_weights(xb, w, sigma2, &mut weight, &mut waux);
                }
                None => {
                    for i in 0..16 {
                        weight[i] = 0.25f32 * sigma2 + xb[i] * xb[i];
                    }
                    sqrt_weights(&weight, &mut waux);
                }
            }
            for (k, s) in block_signs.iter_mut().enumerate() {
                let r = 8 * k..8 * k + 8;
                *s = fold_signs(&xb[r.clone()], &mut xval[r]);
            }
            let max = group_max(&xval);
            if max < GROUP_MAX_EPS_IQ2_S {
                scales[ib] = 0.0;
                continue;
            }
            let mut l = [0i8; 16];
            let mut scale = search16(lat, &xval, &weight, &waux, max, &mut l);
            if scale < 0.0 {
                scale = -scale;
                for s in &mut block_signs {
                    *s = !*s;
                }
            }
            for k in 0..2 {
                // On the grid by construction (llama.cpp aborts otherwise).
                let gi = lat.map[point_index(&l[8 * k..8 * k + 8])].max(0) as usize;
                let i8 = 2 * ib + k;
                y[2 + i8] = gi as u8;
                y[66 + i8 / 4] |= ((gi >> 8) << (2 * (i8 % 4))) as u8;
                y[34 + i8] = block_signs[k];
            }
            scales[ib] = scale;
            max_scale = if max_scale > scale { max_scale } else { scale };
        }
        if max_scale == 0.0 {
            continue;
        }
        pack_d_scales16(y, max_scale, 0.9875f32, &scales, 74);
    }
}

/// This type's row of the per-type table (`quant::BLOCK_TYPES`).
pub const BLOCK: BlockType = BlockType {
    ggml: GgmlType::IQ2S,
    dequantize,
    quantize: Some(quantize),
    uses_importance: true,
    requires_importance: false,
    f16_fields: &[0],
    wgsl_dequantize: Some(Wgsl {
        file: "dq_iq2.wgsl",
        source: include_str!("../../shaders/dq_iq2.wgsl"),
        consts: "const KIND = 2u;",
    }),
    gpu_quantize: Some(GpuQuantize {
        kernel: Wgsl {
            file: "quant_iq2.wgsl",
            source: include_str!("../../shaders/quant_iq2.wgsl"),
            consts: "const KIND = 2u; const GRID_N = 1024u; const SLOT_WORDS = 21u;",
        },
        row_sigma2: false,
        ref_weight_bound: RefWeightBound::AbsMaxSquared,
        tables: Some(gpu_tables),
        lanes_per_block: 8,
    }),
};

/// The kernel's `tables` (quant_iq2.wgsl): this type's grid, map and neighbour lists.
fn gpu_tables() -> Vec<u32> {
    super::iq2_lattice::table_words(Iq2Grid::Iq2S)
}
