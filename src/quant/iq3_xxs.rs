//! IQ3_XXS: 256-value super-blocks, one f16 scale d, then 64 grid indices (one per 4 values,
//! into the 256-point `IQ3XXS_GRID`) and per 32 values a u32 of four 7-bit sign groups (the 8th
//! sign of each 8 values is their parity) and a 4-bit block scale in the top bits: value =
//! d·(0.5 + s)·0.5·grid·sign (dequantize_row_iq3_xxs). The quantizer is
//! quantize_row_iq3_xxs_impl with grid size 256, with or without importance.
use super::iq3_lattice::{lattice, search_block};
use super::iq_grids::IQ3XXS_GRID;
use super::search::nearest_int;
use super::{f2h, h2f, BlockType, GpuQuantize, RefWeightBound, Wgsl};
use crate::gguf::GgmlType;

pub const BLOCK_BYTES: usize = 98;

/// ksigns_iq2xs: 7 stored sign bits → 8, the 8th making the count even.
pub(crate) const KSIGNS: [u8; 128] = {
    let mut v = [0u8; 128];
    let mut i = 0;
    while i < 128 {
        v[i] = i as u8 | (((i as u32).count_ones() as u8 & 1) << 7);
        i += 1;
    }
    v
};

#[inline]
fn sign(bits: u8, j: usize) -> f32 {
    if bits & (1 << j) != 0 {
        -1.0
    } else {
        1.0
    }
}

pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(BLOCK_BYTES).zip(dst.chunks_exact_mut(256)) {
        let d = h2f(&b[0..2]);
        let qs = &b[2..66];
        for ib in 0..8 {
            let aux = u32::from_le_bytes(b[66 + 4 * ib..70 + 4 * ib].try_into().unwrap());
            let db = d * (0.5 + (aux >> 28) as f32) * 0.5;
            for l in 0..4 {
                let signs = KSIGNS[((aux >> (7 * l)) & 127) as usize];
                let g1 = IQ3XXS_GRID[qs[8 * ib + 2 * l] as usize].to_le_bytes();
                let g2 = IQ3XXS_GRID[qs[8 * ib + 2 * l + 1] as usize].to_le_bytes();
                let y8 = &mut y[32 * ib + 8 * l..32 * ib + 8 * l + 8];
                for j in 0..4 {
                    y8[j] = db * g1[j] as f32 * sign(signs, j);
                    y8[j + 4] = db * g2[j] as f32 * sign(signs, j + 4);
                }
            }
        }
    }
}

/// quantize_iq3_xxs (one row): per super-block, each 32-value block's search with weights
/// qw·√(σ² + x²) (σ² = 2Σx²/256) or, without importance, x²; then d = max scale/31 (stored
/// ×1.0125) and the 4-bit block scales.
pub fn quantize(x: &[f32], dst: &mut [u8], qw: Option<&[f32]>) {
    let lat = lattice(256);
    for (ibl, (xbl, y)) in x
        .chunks_exact(256)
        .zip(dst.chunks_exact_mut(BLOCK_BYTES))
        .enumerate()
    {
        // qs (64 grid indices) then scales_and_signs (8 × u32).
        let mut q3 = [0u8; 96];
        let mut sas = [0u32; 8];
        let mut scales = [0f32; 8];
        let mut max_scale = 0f32;
        let mut sumx2 = 0f32;
        for &v in xbl {
            sumx2 += v * v;
        }
        let sigma2 = 2.0 * sumx2 / 256.0;
        let mut weight = [0f32; 32];
        for ib in 0..8 {
            let xb = &xbl[32 * ib..32 * ib + 32];
            match qw {
                Some(q) => {
                    let qb = &q[256 * ibl + 32 * ib..256 * ibl + 32 * ib + 32];
                    for i in 0..32 {
                        weight[i] = qb[i] * (sigma2 + xb[i] * xb[i]).sqrt();
                    }
                }
                None => {
                    for i in 0..32 {
                        weight[i] = xb[i] * xb[i];
                    }
                }
            }
            let Some(b) = search_block::<true>(lat, xb, &weight) else {
                scales[ib] = 0.0;
                continue;
            };
            for k in 0..8 {
                q3[8 * ib + k] = b.grid[k] as u8;
            }
            sas[ib] = b.signs[0] as u32
                | (b.signs[1] as u32) << 7
                | (b.signs[2] as u32) << 14
                | (b.signs[3] as u32) << 21;
            scales[ib] = b.scale;
            max_scale = if max_scale > b.scale {
                max_scale
            } else {
                b.scale
            };
        }
        if max_scale == 0.0 {
            y.fill(0);
            continue;
        }
        let d = max_scale / 31.0;
        y[0..2].copy_from_slice(&f2h(d * 1.0125).to_le_bytes());
        let id = 1.0 / d;
        for ib in 0..8 {
            let l = nearest_int(0.5 * (id * scales[ib] - 1.0)).clamp(0, 15);
            sas[ib] |= (l as u32) << 28;
            q3[64 + 4 * ib..68 + 4 * ib].copy_from_slice(&sas[ib].to_le_bytes());
        }
        y[2..98].copy_from_slice(&q3);
    }
}

/// This type's row of the per-type table (`quant::BLOCK_TYPES`).
pub const BLOCK: BlockType = BlockType {
    ggml: GgmlType::IQ3XXS,
    dequantize,
    quantize: Some(quantize),
    uses_importance: true,
    requires_importance: false,
    f16_fields: &[0],
    wgsl_dequantize: Some(Wgsl {
        file: "dq_iq3.wgsl",
        source: include_str!("../../shaders/dq_iq3.wgsl"),
        consts: "const S = false;",
    }),
    gpu_quantize: Some(GpuQuantize {
        kernel: Wgsl {
            file: "quant_iq3.wgsl",
            source: include_str!("../../shaders/quant_iq3.wgsl"),
            consts:
                "const XXS = true; const GRID_N = 256u; const NIS = 15; const SLOT_WORDS = 25u;",
        },
        row_sigma2: false,
        ref_weight_bound: RefWeightBound::AbsMaxSquared,
        tables: Some(gpu_tables),
        lanes_per_block: 8,
    }),
};

/// The kernel's `tables` (quant_iq3.wgsl): the 256-point grid, its map and neighbour lists.
fn gpu_tables() -> Vec<u32> {
    super::iq3_lattice::table_words(256)
}
