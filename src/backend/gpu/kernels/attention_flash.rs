//! `shaders/attention_flash.wgsl`: flash-style causal attention, optionally inside a sliding
//! window (one pass, online softmax, K/V tiles in workgroup memory shared by `ROWS` query rows,
//! accumulators in registers), grouped-query heads. Tile sizes are compiled in per head_dim and
//! chosen from the adapter's workgroup-memory limit; on one adapter they never change, so neither
//! do a row's bits.

use super::super::{Ctx, GpuTensor};
use crate::backend::AttnParams;

pub const SHADER: &str = include_str!("../../../../shaders/attention_flash.wgsl");

/// Query rows (position × query head of one KV head) per workgroup.
pub const ROWS: usize = 16;
/// Longest key tile (more only lengthens the serial softmax per tile).
pub const MAX_KEYS_PER_TILE: usize = 64;
/// Longest head: the accumulators live in registers, `head_dim / threads-per-row` per thread.
pub const MAX_HEAD_DIM: usize = 256;
/// Most workgroups in one grid dimension (WebGPU's limit; the grid folds into y above it).
const MAX_GROUPS_PER_DIM: usize = 65_535;

/// The compiled-in shape of one pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tiles {
    pub head_dim: usize,
    /// Threads per query row (they split head_dim).
    pub threads_per_row: usize,
    /// head_dim / threads_per_row, rounded up.
    pub dims_per_thread: usize,
    pub rows: usize,
    /// Keys per K/V tile.
    pub keys: usize,
}

impl Tiles {
    /// Tiles for `head_dim` within `shared_bytes` of workgroup memory: 4 threads per row up to
    /// 16 dims each, 8 beyond (16 or 32 accumulators per thread at head_dim 128/256); as many
    /// keys per tile as fit beside the partial sums and scores. None: the head is too wide.
    pub fn choose(head_dim: usize, shared_bytes: usize) -> Option<Tiles> {
        if head_dim == 0 || head_dim > MAX_HEAD_DIM {
            return None;
        }
        let threads_per_row = if head_dim <= 64 { 4 } else { 8 };
        let dims_per_thread = head_dim.div_ceil(threads_per_row);
        let padded = dims_per_thread * threads_per_row;
        let wg = ROWS * threads_per_row;
        // Floats per key: its K/V row, a partial per thread, a score per row.
        let keys = (shared_bytes / 4 / (padded + wg + ROWS)).min(MAX_KEYS_PER_TILE);
        (keys > 0).then_some(Tiles {
            head_dim,
            threads_per_row,
            dims_per_thread,
            rows: ROWS,
            keys,
        })
    }

    pub fn workgroup_size(&self) -> usize {
        self.rows * self.threads_per_row
    }

    /// The shader with these constants prepended.
    pub fn source(&self) -> String {
        format!(
            "const HD: u32 = {}u;\nconst TPR: u32 = {}u;\nconst DPT: u32 = {}u;\nconst HDP: u32 = {}u;\nconst BR: u32 = {}u;\nconst BC: u32 = {}u;\nconst WG: u32 = {}u;\n{SHADER}",
            self.head_dim,
            self.threads_per_row,
            self.dims_per_thread,
            self.dims_per_thread * self.threads_per_row,
            self.rows,
            self.keys,
            self.workgroup_size(),
        )
    }
}

/// The tiles this adapter gets for `head_dim`.
pub fn tiles(ctx: &Ctx, head_dim: usize) -> Option<Tiles> {
    Tiles::choose(
        head_dim,
        ctx.dev.limits.max_compute_workgroup_storage_size as usize,
    )
}

/// Sources for naga: head_dim 64/128/256 and an odd one, at WebGPU's default 16 KiB.
pub fn sources() -> Vec<(String, String)> {
    [24usize, 64, 128, 256]
        .iter()
        .map(|&hd| {
            let t = Tiles::choose(hd, 16384).expect("fits 16 KiB");
            (format!("attention_flash.wgsl hd {hd}"), t.source())
        })
        .collect()
}

/// The kernel with the adapter's tiles.
pub fn run(ctx: &Ctx, q: &GpuTensor, k: &GpuTensor, v: &GpuTensor, p: &AttnParams, o: &GpuTensor) {
    let t = tiles(ctx, p.head_dim).unwrap_or_else(|| {
        panic!(
            "attention: head_dim {} does not fit the flash kernel (at most {MAX_HEAD_DIM}, adapter workgroup memory {} bytes)",
            p.head_dim, ctx.dev.limits.max_compute_workgroup_storage_size
        )
    });
    run_tiles(ctx, &t, q, k, v, p, o)
}

/// The kernel with explicit tiles (conformance also runs WebGPU's 16 KiB tiles on adapters
/// that offer more).
pub fn run_tiles(
    ctx: &Ctx,
    t: &Tiles,
    q: &GpuTensor,
    k: &GpuTensor,
    v: &GpuTensor,
    p: &AttnParams,
    o: &GpuTensor,
) {
    super::attention::check_shapes(q, k, v, p);
    assert_eq!(
        t.head_dim, p.head_dim,
        "attention: tiles for another head_dim"
    );
    if q.rows == 0 {
        return;
    }
    let n_seq = q.rows / p.seq_len;
    let n_blocks = (p.seq_len * (p.n_head / p.n_head_kv)).div_ceil(t.rows);
    let n_groups = n_seq * p.n_head_kv * n_blocks;
    let gx = n_groups.min(MAX_GROUPS_PER_DIM);
    let gy = n_groups.div_ceil(gx);
    // gy > 65,535 needs over 4·10⁹ workgroups: the q buffer would exceed any binding limit first.
    assert!(
        gy <= MAX_GROUPS_PER_DIM,
        "attention: {n_groups} workgroups exceed a 65,535 × 65,535 grid"
    );
    let key = format!(
        "attention_flash hd{} tpr{} bc{}",
        t.head_dim, t.threads_per_row, t.keys
    );
    let pipe = ctx.pipeline(&key, || t.source());
    let params = [
        q.rows as u32,
        p.n_head as u32,
        p.n_head_kv as u32,
        p.seq_len as u32,
        p.scale.to_bits(),
        n_blocks as u32,
        n_groups as u32,
        p.window as u32,
    ];
    ctx.dispatch(
        &pipe,
        &params,
        &[q.buffer(), k.buffer(), v.buffer(), o.buffer()],
        [gx as u32, gy as u32, 1],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_fit_16_kib_for_every_supported_head() {
        for hd in [1usize, 16, 24, 64, 80, 96, 128, 200, 256] {
            let t = Tiles::choose(hd, 16384).unwrap();
            let floats = t.keys * t.dims_per_thread * t.threads_per_row
                + t.workgroup_size() * t.keys
                + t.rows * t.keys;
            assert!(floats * 4 <= 16384, "hd {hd}: {t:?}");
            assert!(t.keys >= 8, "hd {hd}: {t:?}");
            assert!(t.dims_per_thread * t.threads_per_row >= hd);
            assert!(t.workgroup_size() <= 256);
        }
        assert_eq!(Tiles::choose(257, 1 << 20), None);
        assert_eq!(Tiles::choose(0, 16384), None);
    }
}
