//! IQ3_S: 256-value super-blocks: f16 d, qs[64] (low 8 bits of each 4 values' index into the
//! 512-point `IQ3S_GRID`), qh[8] (the 9th bits), signs[32] (one bit per value) and scales[4]
//! (a 4-bit scale per 32 values): value = d·(1 + 2s)·grid·sign (dequantize_row_iq3_s). The
//! quantizer is quantize_iq3_s (quantize_row_iq3_s_impl with block size 32), with or without
//! importance.
use super::iq3_lattice::{lattice, search_block};
use super::iq_grids::IQ3S_GRID;
use super::search::nearest_int;
use super::{f2h, h2f, BlockType, GpuQuantize, RefWeightBound, Wgsl};
use crate::gguf::GgmlType;

pub const BLOCK_BYTES: usize = 110;
const QS: usize = 2;
const QH: usize = 66;
const SIGNS: usize = 74;
const SCALES: usize = 106;

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
        for ib in 0..8 {
            let s = (b[SCALES + ib / 2] >> (4 * (ib % 2))) & 0xf;
            let db = d * (1 + 2 * s as i32) as f32;
            let qh = b[QH + ib] as usize;
            for l in 0..4 {
                let i1 = b[QS + 8 * ib + 2 * l] as usize | ((qh << (8 - 2 * l)) & 256);
                let i2 = b[QS + 8 * ib + 2 * l + 1] as usize | ((qh << (7 - 2 * l)) & 256);
                let (g1, g2) = (IQ3S_GRID[i1].to_le_bytes(), IQ3S_GRID[i2].to_le_bytes());
                let signs = b[SIGNS + 4 * ib + l];
                let y8 = &mut y[32 * ib + 8 * l..32 * ib + 8 * l + 8];
                for j in 0..4 {
                    y8[j] = db * g1[j] as f32 * sign(signs, j);
                    y8[j + 4] = db * g2[j] as f32 * sign(signs, j + 4);
                }
            }
        }
    }
}

/// quantize_iq3_s (one row): per super-block, each 32-value block's search with weights
/// qw·√(σ² + x²) (σ² = 2Σx²/256) or x²; then d = max scale/31 (stored ×1.033) and the 4-bit
/// block scales.
pub fn quantize(x: &[f32], dst: &mut [u8], qw: Option<&[f32]>) {
    let lat = lattice(512);
    for (ibl, (xbl, y)) in x
        .chunks_exact(256)
        .zip(dst.chunks_exact_mut(BLOCK_BYTES))
        .enumerate()
    {
        y.fill(0);
        let mut scales = [0f32; 8];
        let mut max_scale = 0f32;
        let mut sumx2 = 0f32;
        for &v in xbl {
            sumx2 += v * v;
        }
        let sigma2 = 2.0 * sumx2 / 256.0;
        let mut weight = [0f32; 32];
        // llama.cpp advances its qs and signs pointers only past blocks it quantizes: after an
        // all-zero block, the next block's indices and signs land in the skipped one's place
        // (qh is indexed by block and is not shifted). Reproduced for identical bytes.
        let (mut qs, mut signs) = (QS, SIGNS);
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
            let Some(b) = search_block::<false>(lat, xb, &weight) else {
                scales[ib] = 0.0;
                continue;
            };
            for (k, &g) in b.grid.iter().enumerate() {
                y[qs + k] = g as u8;
                y[QH + ib] |= ((g >> 8) as u8) << k;
            }
            qs += 8;
            y[signs..signs + 4].copy_from_slice(&b.signs);
            signs += 4;
            scales[ib] = b.scale;
            max_scale = if max_scale > b.scale {
                max_scale
            } else {
                b.scale
            };
        }
        if max_scale == 0.0 {
            continue;
        }
        let d = max_scale / 31.0;
        y[0..2].copy_from_slice(&f2h(d * 1.033).to_le_bytes());
        let id = 1.0 / d;
        for ib in (0..8).step_by(2) {
            let l1 = nearest_int(0.5 * (id * scales[ib] - 1.0)).clamp(0, 15);
            let l2 = nearest_int(0.5 * (id * scales[ib + 1] - 1.0)).clamp(0, 15);
            y[SCALES + ib / 2] = (l1 | (l2 << 4)) as u8;
        }
    }
}

/// This type's row of the per-type table (`quant::BLOCK_TYPES`).
pub const BLOCK: BlockType = BlockType {
    ggml: GgmlType::IQ3S,
    dequantize,
    quantize: Some(quantize),
    uses_importance: true,
    requires_importance: false,
    f16_fields: &[0],
    wgsl_dequantize: Some(Wgsl {
        file: "dq_iq3.wgsl",
        source: include_str!("../../shaders/dq_iq3.wgsl"),
        consts: "const S = true;",
    }),
    gpu_quantize: Some(GpuQuantize {
        kernel: Wgsl {
            file: "quant_iq3.wgsl",
            source: include_str!("../../shaders/quant_iq3.wgsl"),
            consts:
                "const XXS = false; const GRID_N = 512u; const NIS = 9; const SLOT_WORDS = 28u;",
        },
        row_sigma2: false,
        ref_weight_bound: RefWeightBound::AbsMaxSquared,
        tables: Some(gpu_tables),
        lanes_per_block: 8,
    }),
};

/// The kernel's `tables` (quant_iq3.wgsl): the 512-point grid, its map and neighbour lists.
fn gpu_tables() -> Vec<u32> {
    super::iq3_lattice::table_words(512)
}
