//! The IQ3 quantizers' search tables, as llama.cpp's `iq3xs_init_impl` builds them
//! (ggml-quants.c of the version in ../shared/SPEC.md): for the 256-point grid of IQ3_XXS and the
//! 512-point grid of IQ3_S, each point's four coordinates 2l+1 (l a 3-bit code), a map from
//! every 12-bit code tuple u = Σ l_i << 3i to its grid index, and for each u off the grid a
//! list of the grid points nearest to it (all points at the 2 (IQ3_XXS) or 3 (IQ3_S) smallest
//! squared distances, ordered by distance, then by index). Built once per grid.
//!
//! The init's own code tables (`kgrid_256`, `kgrid_512`) are not copied: they are derived from
//! the dequantization grids in `iq_grids` (the same points, in the same order), mapping each
//! grid byte back to its code: IQ3_XXS's magnitudes 4, 12, 20, 28, 36, 44, 52, 62 and IQ3_S's
//! 2l+1 = 1, 3, …, 15 are codes 0..7.
use super::iq_grids::{IQ3S_GRID, IQ3XXS_GRID};
use super::search::nearest_int;
use std::sync::OnceLock;

/// The code tuples per grid (`2^12`).
pub const KMAP_SIZE: usize = 4096;

/// IQ3_XXS's grid magnitudes, indexed by code.
const XXS_LEVELS: [u8; 8] = [4, 12, 20, 28, 36, 44, 52, 62];

/// One grid's search tables.
pub struct Iq3Lattice {
    /// Each grid point's coordinates 2l+1, as the f32 the neighbour search multiplies.
    pub points: Vec<[f32; 4]>,
    /// Each grid point's codes l (the quantizer's L values).
    pub codes: Vec<[i8; 4]>,
    /// Code tuple u → grid index (≥ 0), or −(offset+1) of its entry in `neighbours`.
    pub map: Vec<i32>,
    /// Per off-grid tuple: the count n, then n grid indices.
    pub neighbours: Vec<u16>,
}

/// The grid's points as packed 3-bit code tuples (the init's `kgrid_256` / `kgrid_512`),
/// derived from the dequantization grid. `grid_size` is 256 (IQ3_XXS) or 512 (IQ3_S).
pub fn code_tuples(grid_size: usize) -> Vec<u16> {
    let code = |b: u8| -> u16 {
        if grid_size == 256 {
            XXS_LEVELS
                .iter()
                .position(|&v| v == b)
                .expect("an IQ3_XXS grid magnitude") as u16
        } else {
            debug_assert!(b % 2 == 1 && b <= 15);
            (b as u16 - 1) / 2
        }
    };
    let grid: &[u32] = match grid_size {
        256 => &IQ3XXS_GRID,
        512 => &IQ3S_GRID,
        _ => panic!("IQ3 grid size {grid_size}"),
    };
    grid.iter()
        .map(|g| {
            g.to_le_bytes()
                .iter()
                .enumerate()
                .fold(0u16, |u, (i, &b)| u | (code(b) << (3 * i)))
        })
        .collect()
}

// Index loops over parallel arrays, in the C's order.
#[allow(clippy::needless_range_loop)]
fn build(grid_size: usize) -> Iq3Lattice {
    let nwant = if grid_size == 256 { 2 } else { 3 };
    let kgrid = code_tuples(grid_size);
    let coords =
        |u: usize| -> [i32; 4] { std::array::from_fn(|i| 2 * ((u >> (3 * i)) & 7) as i32 + 1) };
    let pos: Vec<[i32; 4]> = kgrid.iter().map(|&u| coords(u as usize)).collect();
    let mut map = vec![-1i32; KMAP_SIZE];
    for (i, &u) in kgrid.iter().enumerate() {
        map[u as usize] = i as i32;
    }
    let mut neighbours = Vec::new();
    let mut dist2: Vec<(i32, u16)> = Vec::with_capacity(grid_size);
    for u in 0..KMAP_SIZE {
        if map[u] >= 0 {
            continue;
        }
        let p = coords(u);
        dist2.clear();
        dist2.extend(pos.iter().enumerate().map(|(j, g)| {
            let d2: i32 = (0..4).map(|k| (g[k] - p[k]) * (g[k] - p[k])).sum();
            (d2, j as u16)
        }));
        // qsort with iq3_compare_func: by distance, then by index. The index makes every key
        // distinct, so qsort's instability cannot show and a stable sort gives the same order.
        dist2.sort_unstable();
        map[u] = -(neighbours.len() as i32 + 1);
        let start = neighbours.len();
        neighbours.push(0);
        let (mut d2, mut nhave) = (dist2[0].0, 1);
        for &(d, j) in &dist2 {
            if d > d2 {
                if nhave == nwant {
                    break;
                }
                d2 = d;
                nhave += 1;
            }
            neighbours.push(j);
        }
        neighbours[start] = (neighbours.len() - start - 1) as u16;
    }
    Iq3Lattice {
        points: pos.iter().map(|p| p.map(|v| v as f32)).collect(),
        codes: pos.iter().map(|p| p.map(|v| ((v - 1) / 2) as i8)).collect(),
        map,
        neighbours,
    }
}

/// The tables of the 256-point (IQ3_XXS) or 512-point (IQ3_S) grid, built on first use.
pub fn lattice(grid_size: usize) -> &'static Iq3Lattice {
    static XXS: OnceLock<Iq3Lattice> = OnceLock::new();
    static S: OnceLock<Iq3Lattice> = OnceLock::new();
    match grid_size {
        256 => XXS.get_or_init(|| build(256)),
        512 => S.get_or_init(|| build(512)),
        _ => panic!("IQ3 grid size {grid_size}"),
    }
}

/// The GPU kernel's `tables` (shaders/quant_iq3.wgsl) for the 256- or 512-point grid: the
/// points' code tuples (`code_tuples`, one a word), the 4096-word map (i32 bits: ≥ 0 a grid index,
/// < 0 −(offset + 1) of a neighbour list), then the neighbour lists (a count, then grid
/// indices; one u16 a word), offsets as in `Iq3Lattice::neighbours`.
pub fn table_words(grid_size: usize) -> Vec<u32> {
    let lat = lattice(grid_size);
    let mut words: Vec<u32> = code_tuples(grid_size).iter().map(|&u| u as u32).collect();
    words.extend(lat.map.iter().map(|&m| m as u32));
    words.extend(lat.neighbours.iter().map(|&n| n as u32));
    words
}

impl Iq3Lattice {
    /// The neighbour list of an off-grid tuple whose map entry is `m` (< 0).
    #[inline]
    pub fn neighbours_of(&self, m: i32) -> &[u16] {
        let start = (-m - 1) as usize;
        let n = self.neighbours[start] as usize;
        &self.neighbours[start + 1..start + 1 + n]
    }

    /// iq3_find_best_neighbour: among `nb`, the grid point nearest to `xval` at `scale` in the
    /// weighted squared distance Σ w·(scale·q − x)² (f32, in C's order; the first of equals
    /// wins); its codes go to `l`. llama.cpp aborts when no distance is below FLT_MAX (Inf or
    /// NaN inputs); this takes the first neighbour then.
    #[inline]
    pub fn best_neighbour(
        &self,
        nb: &[u16],
        xval: &[f32],
        weight: &[f32],
        scale: f32,
        l: &mut [i8],
    ) -> usize {
        let mut best_d2 = f32::MAX;
        let mut best = nb[0] as usize;
        for &j in nb {
            let pg = &self.points[j as usize];
            let mut d2 = 0f32;
            for i in 0..4 {
                let diff = scale * pg[i] - xval[i];
                d2 += weight[i] * diff * diff;
            }
            if d2 < best_d2 {
                best_d2 = d2;
                best = j as usize;
            }
        }
        l[..4].copy_from_slice(&self.codes[best]);
        best
    }
}

/// GROUP_MAX_EPS_IQ3_XXS: IQ3_XXS's all-zero threshold on a block's largest magnitude.
pub(crate) const GROUP_MAX_EPS_IQ3_XXS: f32 = 1e-8;

/// The result of one 32-value block's search.
pub(crate) struct Iq3Block {
    /// The block scale (≥ 0 unless NaN).
    pub scale: f32,
    /// The sign bits of each 8 values (IQ3_XXS: 7 bits, the 8th implied by even parity).
    pub signs: [u8; 4],
    /// The grid index of each 4 values.
    pub grid: [u16; 8],
}

/// The block search shared by quantize_row_iq3_xxs_impl (`XXS`, grid 256) and
/// quantize_row_iq3_s_impl (grid 512, block size 32), every f32 operation in their order:
/// signs split off (IQ3_XXS: an odd count of negatives flips the value of least w·x², so the
/// signs keep even parity), then 2·NIS + 1 trial scales (15 + 0.2·is)/max, each value rounded
/// to a code, off-grid groups of 4 moved to their best neighbour, the best Σwxq²/Σwq² kept;
/// then one refinement of the off-grid groups (IQ3_S: of all groups) at the best scale.
/// `None`: an all-zero block (IQ3_XXS: max < 1e-8; IQ3_S: max == 0), which the callers skip.
#[inline]
#[allow(clippy::needless_range_loop)] // parallel arrays, in the C's order
pub(crate) fn search_block<const XXS: bool>(
    lat: &Iq3Lattice,
    xb: &[f32],
    weight: &[f32; 32],
) -> Option<Iq3Block> {
    let xb = &xb[..32];
    let mut waux = [0f32; 32];
    for i in 0..32 {
        waux[i] = weight[i].sqrt();
    }
    let mut xval = [0f32; 32];
    let mut signs = [0u8; 4];
    for k in 0..4 {
        let mut nflip = 0;
        let mut s = 0u8;
        for i in 0..8 {
            let x = xb[8 * k + i];
            if x >= 0.0 {
                xval[8 * k + i] = x;
            } else {
                xval[8 * k + i] = -x;
                nflip += 1;
                s |= 1 << i;
            }
        }
        if XXS {
            if nflip % 2 == 1 {
                let mut imin = 0;
                let mut min = weight[8 * k] * xb[8 * k] * xb[8 * k];
                for i in 1..8 {
                    let ax = weight[8 * k + i] * xb[8 * k + i] * xb[8 * k + i];
                    if ax < min {
                        min = ax;
                        imin = i;
                    }
                }
                xval[8 * k + imin] = -xval[8 * k + imin];
                s ^= 1 << imin;
            }
            signs[k] = s & 127;
        } else {
            signs[k] = s;
        }
    }
    let mut max = xval[0];
    for &v in &xval[1..] {
        max = if max > v { max } else { v };
    }
    let all_zero = if XXS {
        max < GROUP_MAX_EPS_IQ3_XXS
    } else {
        max == 0.0
    };
    if all_zero {
        return None;
    }
    const KMAXQ: i32 = 8;
    let nis: i32 = if XXS { 15 } else { 9 };
    let mut l = [0i8; 32];
    let mut laux = [0i8; 32];
    let mut best = 0f32;
    let mut scale = max / (2 * KMAXQ - 1) as f32;
    let mut on_grid = [XXS; 8];
    let mut on_grid_aux = [true; 8];
    let code_tuple = |id: f32, xv: &[f32], l: &mut [i8]| -> usize {
        let mut u = 0usize;
        for i in 0..4 {
            let q = nearest_int(0.5 * (id * xv[i] - 1.0)).clamp(0, KMAXQ - 1);
            l[i] = q as i8;
            u |= (q as usize) << (3 * i);
        }
        u
    };
    for is in -nis..=nis {
        let id = ((2 * KMAXQ - 1) as f32 + is as f32 * 0.2) / max;
        let this_scale = 1.0 / id;
        for k in 0..8 {
            let g = 4 * k..4 * k + 4;
            let u = code_tuple(id, &xval[g.clone()], &mut laux[g.clone()]);
            let m = lat.map[u];
            on_grid_aux[k] = m >= 0;
            if m < 0 {
                let nb = lat.neighbours_of(m);
                lat.best_neighbour(
                    nb,
                    &xval[g.clone()],
                    &waux[g.clone()],
                    this_scale,
                    &mut laux[g],
                );
            }
        }
        let (mut sumqx, mut sumq2) = (0f32, 0f32);
        for i in 0..32 {
            let w = weight[i];
            let q = (2 * laux[i] as i32 + 1) as f32;
            sumqx += w * xval[i] * q;
            sumq2 += w * q * q;
        }
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            scale = sumqx / sumq2;
            best = scale * sumqx;
            l = laux;
            on_grid = on_grid_aux;
        }
    }
    if on_grid.iter().any(|&g| !g) && scale > 0.0 {
        let id = 1.0 / scale;
        for k in 0..8 {
            if XXS && on_grid[k] {
                continue;
            }
            let g = 4 * k..4 * k + 4;
            let mut lk = [0i8; 4];
            let u = code_tuple(id, &xval[g.clone()], &mut lk);
            let m = lat.map[u];
            let gi = if m >= 0 {
                m as usize
            } else {
                let nb = lat.neighbours_of(m);
                lat.best_neighbour(
                    nb,
                    &xval[g.clone()],
                    &waux[g.clone()],
                    scale,
                    &mut l[g.clone()],
                )
            };
            l[g].copy_from_slice(&lat.codes[gi]);
        }
        let (mut sumqx, mut sumq2) = (0f32, 0f32);
        for i in 0..32 {
            let w = weight[i];
            let q = (2 * l[i] as i32 + 1) as f32;
            sumqx += w * xval[i] * q;
            sumq2 += w * q * q;
        }
        if sumq2 > 0.0 {
            scale = sumqx / sumq2;
        }
    }
    if scale < 0.0 {
        // llama.cpp's "should never happen" branch: a positive scale with the signs flipped.
        scale = -scale;
        for s in &mut signs {
            *s = if XXS { !*s & 127 } else { !*s };
        }
    }
    let mut grid = [0u16; 8];
    for (k, g) in grid.iter_mut().enumerate() {
        let u = (0..4).fold(0usize, |u, i| u | (l[4 * k + i] as usize) << (3 * i));
        // Every group's codes are a grid point's by construction (llama.cpp aborts otherwise).
        debug_assert!(lat.map[u] >= 0);
        *g = lat.map[u].max(0) as u16;
    }
    Some(Iq3Block { scale, signs, grid })
}
