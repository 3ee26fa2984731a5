//! IQ4_NL: 32-value blocks of 4-bit indices into the non-linear table `KVALUES_IQ4NL`, one f16
//! scale first (dequantize_row_iq4_nl). The block search (quantize_row_iq4_nl_impl) is shared
//! with IQ4_XS, which runs it over 256-value super-blocks.
use super::search::{nearest_int, GROUP_MAX_EPS};
use super::{f2h, h2f, BlockType, GpuQuantize, RefWeightBound, Wgsl};
use crate::gguf::GgmlType;

pub const BLOCK_BYTES: usize = 18;

/// kvalues_iq4nl (ggml-common.h): the 16 levels, sorted.
pub const KVALUES_IQ4NL: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// best_index_int8 (this llama.cpp version's bisection): the index of the level nearest to
/// `x`, a tie going to the upper level, the distances computed in f32.
#[inline]
pub(crate) fn best_index(x: f32) -> u8 {
    let v = &KVALUES_IQ4NL;
    if x <= v[0] as f32 {
        return 0;
    }
    if x >= v[15] as f32 {
        return 15;
    }
    let (mut ml, mut mu) = (0usize, 15usize);
    while mu - ml > 1 {
        let mav = (ml + mu) / 2;
        if x < v[mav] as f32 {
            mu = mav;
        } else {
            ml = mav;
        }
    }
    if x - (v[mu - 1] as f32) < (v[mu] as f32) - x {
        (mu - 1) as u8
    } else {
        mu as u8
    }
}

/// The level `best_index` picks, as a float, without branches (so the search's candidate
/// lanes vectorize): the largest level ≤ x and the smallest > x (both the end level outside
/// the table's range, also for NaN), then best_index's f32 tie rule between them.
#[inline(always)]
fn nearest_level(x: f32) -> f32 {
    let v = &KVALUES_F32;
    let mut lo = v[0];
    for &vk in v {
        lo = if vk <= x { vk } else { lo };
    }
    let mut hi = v[15];
    for &vk in v.iter().rev() {
        hi = if vk > x { vk } else { hi };
    }
    if x - lo < hi - x {
        lo
    } else {
        hi
    }
}

const KVALUES_F32: [f32; 16] = {
    let mut v = [0f32; 16];
    let mut i = 0;
    while i < 16 {
        v[i] = KVALUES_IQ4NL[i] as f32;
        i += 1;
    }
    v
};

pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(BLOCK_BYTES).zip(dst.chunks_exact_mut(32)) {
        let d = h2f(&b[0..2]);
        for j in 0..16 {
            let q = b[2 + j];
            y[j] = d * KVALUES_IQ4NL[(q & 0xF) as usize] as f32;
            y[j + 16] = d * KVALUES_IQ4NL[(q >> 4) as usize] as f32;
        }
    }
}

/// The output of quantize_row_iq4_nl_impl for one super-block (ntry = 7, as quantize_iq4_nl
/// and quantize_iq4_xs call it with and without importance).
pub(crate) struct Iq4Super {
    /// The f16 super-block scale's bits.
    pub d: u16,
    /// IQ4_XS only: the 6-bit block scales + 32, one per 32 values.
    pub block_scales: [u8; 8],
    /// The packed indices, 16 bytes per 32 values.
    pub qs: [u8; 128],
}

/// quantize_row_iq4_nl_impl with ntry = 7 over `x` (32 or 256 values, blocks of 32): each
/// block's scale from the ±7-step search around −max/−127 weighted by `qw`·√(σ² + x²)
/// (σ² = 2Σx²/n) or x²; for more than one block, the 6-bit block scales of d = −max_scale/32
/// and a second index pass with the quantized block scales.
pub(crate) fn quantize_super(x: &[f32], qw: Option<&[f32]>) -> Iq4Super {
    const NTRY: i32 = 7;
    const LANES: usize = 2 * NTRY as usize + 2;
    let n = x.len();
    let nblocks = n / 32;
    let mut out = Iq4Super {
        d: 0,
        block_scales: [0; 8],
        qs: [0; 128],
    };
    let mut l = [0u8; 256];
    let mut scales = [0f32; 8];
    let mut weight = [0f32; 32];
    let mut sigma2 = 0f32;
    for &v in x {
        sigma2 += v * v;
    }
    sigma2 *= 2.0f32 / n as f32;
    let v0 = KVALUES_IQ4NL[0] as f32;
    let mut max_scale = 0f32;
    let mut amax_scale = 0f32;
    for ib in 0..nblocks {
        let xb = &x[32 * ib..32 * ib + 32];
        match qw {
            Some(q) => {
                let qb = &q[32 * ib..32 * ib + 32];
                for j in 0..32 {
                    weight[j] = qb[j] * (sigma2 + xb[j] * xb[j]).sqrt();
                }
            }
            None => {
                for j in 0..32 {
                    weight[j] = xb[j] * xb[j];
                }
            }
        }
        let mut amax = 0f32;
        let mut max = 0f32;
        for &v in xb {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax < GROUP_MAX_EPS {
            scales[ib] = 0.0;
            continue;
        }
        // The first guess (lane 0) and the 2·NTRY + 1 tries (lanes 1..) are independent until
        // the comparisons: their sums are accumulated side by side, each lane in the C order.
        let mut iscales = [0f32; LANES];
        iscales[0] = 1.0 / (-max / v0);
        for (c, v) in iscales.iter_mut().enumerate().skip(1) {
            *v = (c as i32 - 1 - NTRY + KVALUES_IQ4NL[0] as i32) as f32 / max;
        }
        let mut sumqx = [0f32; LANES];
        let mut sumq2 = [0f32; LANES];
        for j in 0..32 {
            let (xj, wj) = (xb[j], weight[j]);
            for c in 0..LANES {
                let q = nearest_level(iscales[c] * xj);
                let wq = wj * q;
                sumqx[c] += wq * xj;
                sumq2[c] += wq * q;
            }
        }
        let mut d = if sumq2[0] > 0.0 {
            sumqx[0] / sumq2[0]
        } else {
            0.0
        };
        let mut best = d * sumqx[0];
        for c in 1..LANES {
            if sumq2[c] > 0.0 && sumqx[c] * sumqx[c] > best * sumq2[c] {
                d = sumqx[c] / sumq2[c];
                best = d * sumqx[c];
            }
        }
        scales[ib] = d;
        if d.abs() > amax_scale {
            amax_scale = d.abs();
            max_scale = d;
        }
    }
    if nblocks > 1 {
        let d = -max_scale / 32.0;
        out.d = f2h(d);
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        for ib in 0..nblocks {
            let ls = nearest_int(id * scales[ib]).clamp(-32, 31);
            let dl = d * ls as f32;
            let idl = if dl != 0.0 { 1.0 / dl } else { 0.0 };
            for j in 0..32 {
                l[32 * ib + j] = best_index(idl * x[32 * ib + j]);
            }
            out.block_scales[ib] = (ls + 32) as u8;
        }
    } else {
        out.d = f2h(scales[0]);
        let id = if scales[0] != 0.0 {
            1.0 / scales[0]
        } else {
            0.0
        };
        for j in 0..32 {
            l[j] = best_index(id * x[j]);
        }
    }
    for i in 0..nblocks {
        for j in 0..16 {
            out.qs[16 * i + j] = l[32 * i + j] | (l[32 * i + 16 + j] << 4);
        }
    }
    out
}

/// quantize_iq4_nl (one row; with or without importance, both with ntry = 7).
pub fn quantize(x: &[f32], dst: &mut [u8], qw: Option<&[f32]>) {
    for (i, (xb, b)) in x
        .chunks_exact(32)
        .zip(dst.chunks_exact_mut(BLOCK_BYTES))
        .enumerate()
    {
        let s = quantize_super(xb, qw.map(|w| &w[32 * i..32 * i + 32]));
        b[0..2].copy_from_slice(&s.d.to_le_bytes());
        b[2..18].copy_from_slice(&s.qs[..16]);
    }
}

/// This type's row of the per-type table (`quant::BLOCK_TYPES`).
pub const BLOCK: BlockType = BlockType {
    ggml: GgmlType::IQ4NL,
    dequantize,
    quantize: Some(quantize),
    uses_importance: true,
    requires_importance: false,
    f16_fields: &[0],
    wgsl_dequantize: Some(Wgsl {
        file: "dq_iq4.wgsl",
        source: include_str!("../../shaders/dq_iq4.wgsl"),
        consts: "const XS = false;",
    }),
    gpu_quantize: Some(GpuQuantize {
        kernel: Wgsl {
            file: "quant_iq4_nl.wgsl",
            source: concat!(
                include_str!("../../shaders/quant_iq4.wgsl"),
                include_str!("../../shaders/quant_iq4_nl.wgsl")
            ),
            consts: "",
        },
        row_sigma2: false,
        ref_weight_bound: RefWeightBound::AbsMaxSquared,
        tables: None,
        lanes_per_block: 1,
    }),
};
