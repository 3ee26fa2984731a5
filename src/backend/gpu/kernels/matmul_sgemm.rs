//! `shaders/matmul_sgemm.wgsl`: y = x·Wᵀ for hardware GPUs, register-blocked SGEMM tiles. The
//! tile shape is chosen from the adapter's limits ([`Tile::many`], [`Tile::few`]) and substituted
//! as constants with the unrolled `tile_mac`/`tile_store` generated here. Every shape sums each
//! output in the same order (see the shader), so the choice by token count never changes bits.
//! Dispatched by `matmul::run`. With `--precision f16` the tiles hold f16 ([`TileElem`]): half
//! the workgroup memory per tile, so the 128×128 tile fits WebGPU's default 16 KiB.

use super::super::Ctx;
use crate::gguf::GgmlType;
use std::fmt::Write;

pub const SHADER: &str = include_str!("../../../../shaders/matmul_sgemm.wgsl");

/// A workgroup tile: `bm` tokens × `bn` weight rows; each thread owns `mv`×`nv` blocks of 4×4
/// outputs (the blocks `bm/mv` and `bn/nv` apart, so a quarter-warp's vec4 loads of a tile row
/// are contiguous).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tile {
    pub bm: usize,
    pub bn: usize,
    pub mv: usize,
    pub nv: usize,
}

/// How the operand tiles store their values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TileElem {
    /// f32 (`--precision f32`).
    F32,
    /// f16 in `vec4<f16>` tiles (`--precision f16`; needs the adapter's `shader-f16`: rounding
    /// by hand in f32 tiles is not an option, Mesa folds unpack2x16float(pack2x16float(v)) to v).
    F16,
}

impl TileElem {
    pub fn of(precision: crate::backend::Precision) -> TileElem {
        match precision {
            crate::backend::Precision::F32 => TileElem::F32,
            crate::backend::Precision::F16 => TileElem::F16,
        }
    }

    /// Bytes of one stored value.
    pub fn bytes(self) -> usize {
        match self {
            TileElem::F16 => 2,
            TileElem::F32 => 4,
        }
    }

    fn key(self) -> &'static str {
        match self {
            TileElem::F32 => "f32",
            TileElem::F16 => "f16",
        }
    }
}

/// K per slice: `dq32`'s granularity.
const BK: usize = 32;

/// Token counts up to this run the few-token tile (MoE experts, short batches): a 128-token tile
/// would mostly compute rows that are thrown away.
pub const FEW_TOKENS: usize = 32;

/// Many-token tiles, best first: 128×128 with 8×8 outputs per thread (32 KiB, 256 threads:
/// desktop GPUs), 64×128 with 4×8 (24 KiB), 64×64 with 4×4 (16 KiB, 256 threads: WebGPU's
/// default limits, which every adapter offers).
pub const MANY_TILES: [Tile; 3] = [
    Tile {
        bm: 128,
        bn: 128,
        mv: 2,
        nv: 2,
    },
    Tile {
        bm: 64,
        bn: 128,
        mv: 1,
        nv: 2,
    },
    Tile {
        bm: 64,
        bn: 64,
        mv: 1,
        nv: 1,
    },
];

/// The few-token tile: 16 tokens × 64 weight rows, 4×4 per thread, 64 threads (one weight row
/// each), 10 KiB: many workgroups along n, little waste along m.
pub const FEW_TILE: Tile = Tile {
    bm: 16,
    bn: 64,
    mv: 1,
    nv: 1,
};

/// For adapters below WebGPU's default limits: 4 KiB of workgroup memory, 16 threads.
pub const FALLBACK_TILE: Tile = Tile {
    bm: 16,
    bn: 16,
    mv: 1,
    nv: 1,
};

impl Tile {
    pub fn threads(self) -> usize {
        (self.bm / (4 * self.mv)) * (self.bn / (4 * self.nv))
    }

    /// Workgroup memory: the two tiles, 32 × (bm + bn) values of `elem`.
    pub fn shared_bytes(self, elem: TileElem) -> usize {
        BK * (self.bm + self.bn) * elem.bytes()
    }

    fn fits(self, lim: &wgpu::Limits, elem: TileElem) -> bool {
        self.shared_bytes(elem) <= lim.max_compute_workgroup_storage_size as usize
            && self.threads() <= lim.max_compute_invocations_per_workgroup as usize
            && self.threads() <= lim.max_compute_workgroup_size_x as usize
    }

    /// Largest of the many-token tiles ([`MANY_TILES`]) the adapter allows with `elem` tiles.
    pub fn many(lim: &wgpu::Limits, elem: TileElem) -> Tile {
        MANY_TILES
            .into_iter()
            .find(|t| t.fits(lim, elem))
            .unwrap_or(FALLBACK_TILE)
    }

    /// The few-token tile ([`FEW_TILE`]), if the adapter allows it.
    pub fn few(lim: &wgpu::Limits, elem: TileElem) -> Tile {
        if FEW_TILE.fits(lim, elem) {
            FEW_TILE
        } else {
            FALLBACK_TILE
        }
    }

    /// Pipeline-cache key part.
    pub fn key(self) -> String {
        format!("{}x{}-{}x{}", self.bm, self.bn, 4 * self.mv, 4 * self.nv)
    }
}

/// The generated part: constants, the activation reader `x4` and the unrolled tile loops.
/// `x_vec4`: rows are whole vec4s (k % 4 == 0), so x is bound as `array<vec4<f32>>`.
fn generated(tile: Tile, x_vec4: bool, elem: TileElem) -> String {
    let Tile { bm, bn, mv, nv } = tile;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "const BM: u32 = {bm}u;\nconst BN: u32 = {bn}u;\nconst MV: u32 = {mv}u;\nconst NV: u32 = {nv}u;\nconst THREADS: u32 = {}u;\n",
        tile.threads()
    );
    // The tiles and their accessors. f16: saturate first (a value past ±65504 would become
    // infinite and poison every sum it enters), then round to nearest.
    let (ty, put, get) = match elem {
        TileElem::F32 => ("f32", "v", "t"),
        TileElem::F16 => ("f16", "f16(clamp(v, -65504.0, 65504.0))", "vec4<f32>(t)"),
    };
    for (tile, n) in [("xs", "BM"), ("ws", "BN")] {
        let c = &tile[..1];
        let _ = writeln!(
            s,
            "var<workgroup> {tile}: array<vec4<{ty}>, 8u * {n}>;\n\
             fn put_{c}(i: u32, c: u32, v: f32) {{\n    {tile}[i][c] = {put};\n}}\n\
             fn get_{c}(i: u32) -> vec4<f32> {{\n    let t = {tile}[i];\n    return {get};\n}}\n"
        );
    }
    if x_vec4 {
        s.push_str(
            "@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;\n\n\
             // Floats 4q..4q+4 of row r of x, zeros past the row's end.\n\
             fn x4(r: u32, q: u32) -> vec4<f32> {\n    \
                 if (4u * q < p.k) {\n        return x[r * (p.k / 4u) + q];\n    }\n    \
                 return vec4<f32>(0.0);\n}\n\n",
        );
    } else {
        s.push_str(
            "@group(0) @binding(2) var<storage, read> x: array<f32>;\n\n\
             // Floats 4q..4q+4 of row r of x, zeros past the row's end (rows of any length).\n\
             fn x4(r: u32, q: u32) -> vec4<f32> {\n    \
                 var v = vec4<f32>(0.0);\n    \
                 for (var c = 0u; c < 4u; c++) {\n        \
                     if (4u * q + c < p.k) {\n            v[c] = x[r * p.k + 4u * q + c];\n        }\n    }\n    \
                 return v;\n}\n\n",
        );
    }
    // acc[(g·4 + i)·NV + h] = outputs (token row g·BM/MV + 4·ty + i, weight rows h·BN/NV + 4·tx ..+4).
    let n_acc = 4 * mv * nv;
    let _ = writeln!(
        s,
        "// One k step of the register outer product (generated: constant indices only).\n\
         fn tile_mac(acc: ptr<function, array<vec4<f32>, {n_acc}>>, k: u32, tx: u32, ty: u32) {{"
    );
    for g in 0..mv {
        let _ = writeln!(
            s,
            "    let a{g} = get_x(k * {}u + {}u + ty);",
            bm / 4,
            g * bm / (4 * mv)
        );
    }
    for h in 0..nv {
        let _ = writeln!(
            s,
            "    let b{h} = get_w(k * {}u + {}u + tx);",
            bn / 4,
            h * bn / (4 * nv)
        );
    }
    for g in 0..mv {
        for (i, c) in ["x", "y", "z", "w"].iter().enumerate() {
            for h in 0..nv {
                let a = (g * 4 + i) * nv + h;
                let _ = writeln!(
                    s,
                    "    (*acc)[{a}] = fma(vec4<f32>(a{g}.{c}), b{h}, (*acc)[{a}]);"
                );
            }
        }
    }
    let _ = writeln!(s, "}}\n");
    let _ = writeln!(
        s,
        "fn tile_store(acc: ptr<function, array<vec4<f32>, {n_acc}>>, mb: u32, nb: u32, tx: u32, ty: u32) {{"
    );
    for g in 0..mv {
        for i in 0..4 {
            let _ = writeln!(
                s,
                "    {{\n        let m = mb + {}u + 4u * ty;\n        if (m < p.m) {{",
                g * bm / mv + i
            );
            for h in 0..nv {
                let a = (g * 4 + i) * nv + h;
                let _ = writeln!(
                    s,
                    "            let v{h} = (*acc)[{a}];\n            \
                     for (var c = 0u; c < 4u; c++) {{\n                \
                         let n = nb + {}u + 4u * tx + c;\n                \
                         if (n < p.n) {{ y[m * p.ldy + p.n0 + n] = v{h}[c]; }}\n            }}",
                    h * bn / nv
                );
            }
            let _ = writeln!(s, "        }}\n    }}");
        }
    }
    let _ = writeln!(s, "}}");
    s
}

/// The assembled source for weight type `t`, tile `tile`, x as vec4s or floats, and `elem`
/// tiles.
pub fn source(t: GgmlType, tile: Tile, x_vec4: bool, elem: TileElem) -> String {
    // A directive must precede every declaration.
    let enable = if elem == TileElem::F16 {
        "enable f16;"
    } else {
        ""
    };
    super::assemble(&[
        enable,
        super::WBYTES,
        &super::dq_helper(t).expect("supported weight type"),
        &generated(tile, x_vec4, elem),
        SHADER,
    ])
}

/// The pipeline for weight type `t`, tile `tile` and `elem` tiles over rows of `k` floats.
pub fn pipeline(
    ctx: &Ctx,
    t: GgmlType,
    tile: Tile,
    k: usize,
    elem: TileElem,
) -> std::sync::Arc<wgpu::ComputePipeline> {
    let x_vec4 = k.is_multiple_of(4);
    let key = format!(
        "matmul_sgemm/{t}/{}/{}/{}",
        tile.key(),
        if x_vec4 { "v4" } else { "f" },
        elem.key()
    );
    ctx.pipeline(&key, || source(t, tile, x_vec4, elem))
}

/// Workgroup grids covering `tiles_n` × `tiles_m` tiles, each at most `max` (the adapter's
/// max_compute_workgroups_per_dimension) per dimension: (first tile along n, along m, groups).
pub fn grids(max: u32, tiles_n: usize, tiles_m: usize) -> Vec<(u32, u32, [u32; 3])> {
    let max = max.max(1) as usize;
    let mut v = Vec::new();
    for m0 in (0..tiles_m).step_by(max) {
        for n0 in (0..tiles_n).step_by(max) {
            let g = [
                (tiles_n - n0).min(max) as u32,
                (tiles_m - m0).min(max) as u32,
                1,
            ];
            v.push((n0 as u32, m0 as u32, g));
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_cover_every_tile_once_within_the_limit() {
        for (max, tn, tm) in [(65535, 3, 5), (4, 10, 1), (3, 7, 9), (65535, 0, 4)] {
            let mut seen = vec![0; tn * tm];
            for (n0, m0, g) in grids(max, tn, tm) {
                assert!(g[0] as usize <= max as usize && g[1] <= max && g[2] == 1);
                for j in 0..g[1] as usize {
                    for i in 0..g[0] as usize {
                        seen[(m0 as usize + j) * tn + n0 as usize + i] += 1;
                    }
                }
            }
            assert!(
                seen.iter().all(|&c| c == 1),
                "max {max}, {tn}x{tm}: {seen:?}"
            );
        }
    }

    #[test]
    fn tiles_fit_webgpu_default_limits() {
        let lim = wgpu::Limits::default();
        let f32 = TileElem::F32;
        assert_eq!(Tile::many(&lim, f32), MANY_TILES[2]);
        assert_eq!(Tile::few(&lim, f32), FEW_TILE);
        // f16 tiles: 128×128 in 16 KiB.
        assert_eq!(Tile::many(&lim, TileElem::F16), MANY_TILES[0]);
        let mut big = lim.clone();
        big.max_compute_workgroup_storage_size = 48 << 10;
        assert_eq!(Tile::many(&big, f32), MANY_TILES[0]);
        let mut small = lim.clone();
        small.max_compute_workgroup_storage_size = 8 << 10;
        small.max_compute_invocations_per_workgroup = 64;
        assert_eq!(Tile::many(&small, f32), FALLBACK_TILE);
        assert_eq!(Tile::few(&small, f32), FALLBACK_TILE);
    }
}
