//! `shaders/matmul.wgsl`: y = x·Wᵀ, register-blocked 4×4, no barriers. Also the dispatcher
//! for every variant over the weight's slices: the register variant runs
//! `matmul_unrolled.wgsl` where that kernel is usable (subgroups, whole 32-blocks) and this one
//! otherwise (both give the same bits); the tiled variants run `matmul_sgemm.wgsl`.

use super::super::{Ctx, GpuTensor, GpuWeight, MatmulVariant};
use super::matmul_sgemm::{self, Tile, TileElem};
use crate::gguf::GgmlType;

pub const SHADER: &str = include_str!("../../../../shaders/matmul.wgsl");

pub fn source(t: GgmlType) -> String {
    super::with_weights(t, SHADER)
}

/// The SGEMM tile a tiled variant runs for `m` tokens with `elem` tiles (None: the register
/// kernel). The register kernels compute in f32 only (they suit CPU adapters, where f16 storage
/// saves nothing), so with f16 tiles `Register` runs the tiled choice.
pub fn sgemm_tile(ctx: &Ctx, variant: MatmulVariant, m: usize, elem: TileElem) -> Option<Tile> {
    let lim = &ctx.dev.limits;
    match variant {
        MatmulVariant::Register if elem == TileElem::F32 => None,
        MatmulVariant::TiledMany => Some(Tile::many(lim, elem)),
        MatmulVariant::TiledFew => Some(Tile::few(lim, elem)),
        _ if m <= matmul_sgemm::FEW_TOKENS => Some(Tile::few(lim, elem)),
        _ => Some(Tile::many(lim, elem)),
    }
}

/// Record y = x·Wᵀ (one dispatch per weight slice; each writes its own output columns).
pub fn run(
    ctx: &Ctx,
    variant: MatmulVariant,
    elem: TileElem,
    x: &GpuTensor,
    w: &GpuWeight,
    y: &GpuTensor,
) {
    let t = w.ggml_type;
    let tile = sgemm_tile(ctx, variant, x.rows, elem);
    let pipe = match tile {
        Some(tile) => matmul_sgemm::pipeline(ctx, t, tile, w.ne0, elem),
        None => ctx.pipeline(&format!("matmul/{t}"), || source(t)),
    };
    if x.rows == 0 {
        return;
    }
    // Activations past the binding limit (logits of long batches) are bound in row ranges whose
    // byte offsets are multiples of 256 (64 rows × 4 bytes × any width).
    let maxb = ctx.dev.limits.max_storage_buffer_binding_size;
    let widest = (w.ne0.max(w.ne1) * 4) as u64;
    let mut rows_per = if x.rows as u64 * widest <= maxb {
        x.rows
    } else {
        (((maxb / widest) as usize) / 64 * 64).max(64)
    };
    let unrolled = tile.is_none() && super::matmul_unrolled::usable(ctx, w);
    if unrolled {
        rows_per = rows_per.min(super::matmul_unrolled::max_rows(ctx, w.ne0));
    }
    let mut r0 = 0;
    while r0 < x.rows {
        let m = rows_per.min(x.rows - r0);
        if unrolled {
            super::matmul_unrolled::run(ctx, x, r0, m, w, y);
            r0 += m;
            continue;
        }
        let xr = (x.buffer(), (r0 * w.ne0 * 4) as u64, (m * w.ne0 * 4) as u64);
        let yr = (y.buffer(), (r0 * w.ne1 * 4) as u64, (m * w.ne1 * 4) as u64);
        for s in &w.slices {
            let wr = (&s.buf, 0, s.buf.size());
            let mut params = [
                m as u32,
                s.rows as u32,
                w.ne0 as u32,
                w.row_bytes as u32,
                s.row0 as u32,
                w.ne1 as u32,
                0,
                0,
            ];
            if let Some(tile) = tile {
                let tiles = (s.rows.div_ceil(tile.bn), m.div_ceil(tile.bm));
                let max = ctx.dev.limits.max_compute_workgroups_per_dimension;
                for (n0, m0, groups) in matmul_sgemm::grids(max, tiles.0, tiles.1) {
                    (params[6], params[7]) = (n0, m0);
                    ctx.dispatch_ranges(&pipe, &params, &[wr, xr, yr], groups);
                }
                continue;
            }
            let groups = [
                (s.rows.div_ceil(4)).div_ceil(64) as u32,
                m.div_ceil(4) as u32,
                1,
            ];
            ctx.dispatch_ranges(&pipe, &params, &[wr, xr, yr], groups);
        }
        r0 += m;
    }
}
