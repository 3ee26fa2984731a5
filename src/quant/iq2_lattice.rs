//! The search tables of the 8-dimensional IQ2/IQ1 grids: llama.cpp's `iq2xs_init_impl`
//! (ggml-quants.c of the sdist in SPEC, lines 2853–3258), built once per grid kind.
//!
//! A grid point is 8 codes 0..=2 (2 bits each, point index `u = Σ code_k << 2k`, < 43692). The
//! quantizers round a block to such a point; `map[u]` is its grid index when it is on the grid,
//! else `-(offset + 1)` of its neighbour list: `neighbours[offset]` = n, then the n grid indices
//! nearest to it (squared distance over the positions 2·code + 1, the first `nwant` distinct
//! distances, ordered by (distance, index) as llama.cpp's qsort with `iq2_compare_func` orders
//! them: that comparator breaks ties by index, so the order is total and the sort's instability
//! does not matter).
//!
//! The init's inline `kgrid_*` u16 tables are not copied: [`kgrid`] derives them from the
//! dequantization grids of [`super::iq_grids`] (IQ2: bytes 0x08/0x19/0x2b ↔ codes 0/1/2; IQ1:
//! bytes 0xff/0x00/0x01, i.e. −1/0/+1, ↔ codes 0/1/2).
use super::iq_grids::{IQ1S_GRID, IQ2S_GRID, IQ2XS_GRID, IQ2XXS_GRID};
use rayon::prelude::*;
use std::sync::OnceLock;

/// The size of `map`: every 16-bit point index with codes ≤ 2 is below 0xAAAB (llama.cpp's
/// `kmap_size`).
pub const KMAP_SIZE: usize = 43692;

/// The four grids `iq2xs_init_impl` serves (its `iq2_data_index`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Iq2Grid {
    /// IQ2_XXS: 256 points, neighbours over 2 distances.
    Iq2Xxs,
    /// IQ2_XS: 512 points, 2 distances.
    Iq2Xs,
    /// IQ2_S: 1024 points, 1 distance.
    Iq2S,
    /// IQ1_S and IQ1_M (one shared table): 2048 points, 3 distances.
    Iq1,
}

impl Iq2Grid {
    pub const ALL: [Iq2Grid; 4] = [Iq2Grid::Iq2Xxs, Iq2Grid::Iq2Xs, Iq2Grid::Iq2S, Iq2Grid::Iq1];

    /// The number of grid points (`iq2_grid_size`).
    pub fn size(self) -> usize {
        self.dequant_grid().len()
    }

    /// How many distinct distances a neighbour list spans (the init's `nwant`).
    pub fn nwant(self) -> usize {
        match self {
            Iq2Grid::Iq2Xxs | Iq2Grid::Iq2Xs => 2,
            Iq2Grid::Iq2S => 1,
            Iq2Grid::Iq1 => 3,
        }
    }

    /// The type's dequantization grid (8 byte values per point).
    pub fn dequant_grid(self) -> &'static [u64] {
        match self {
            Iq2Grid::Iq2Xxs => &IQ2XXS_GRID,
            Iq2Grid::Iq2Xs => &IQ2XS_GRID,
            Iq2Grid::Iq2S => &IQ2S_GRID,
            Iq2Grid::Iq1 => &IQ1S_GRID,
        }
    }

    /// The code 0..=2 of one dequantization-grid byte (`None`: not a value of this grid).
    fn code(self, byte: u8) -> Option<u16> {
        match (self, byte) {
            (Iq2Grid::Iq1, 0xff) => Some(0),
            (Iq2Grid::Iq1, 0x00) => Some(1),
            (Iq2Grid::Iq1, 0x01) => Some(2),
            (Iq2Grid::Iq1, _) => None,
            (_, 0x08) => Some(0),
            (_, 0x19) => Some(1),
            (_, 0x2b) => Some(2),
            _ => None,
        }
    }
}

/// The init's `kgrid_*` table for `kind`: each grid point as its 16-bit point index.
pub fn kgrid(kind: Iq2Grid) -> Vec<u16> {
    kind.dequant_grid()
        .iter()
        .map(|&g| {
            (0..8).fold(0u16, |u, k| {
                let byte = (g >> (8 * k)) as u8;
                let code = kind
                    .code(byte)
                    .expect("iq_grids: a grid byte outside the grid's three values");
                u | code << (2 * k)
            })
        })
        .collect()
}

/// The tables one quantizer searches (llama.cpp's `iq2_entry_t`).
#[derive(Debug)]
pub struct Iq2Lattice {
    /// Grid point i as 8 signed bytes 2·code + 1 (1, 3 or 5), little-endian (the init's
    /// `the_grid`, not the dequantization grid).
    pub grid: Vec<u64>,
    /// Point index → grid index (≥ 0) or −(offset + 1) into `neighbours`.
    pub map: Vec<i32>,
    /// Neighbour lists: a count n, then n grid indices; one list per off-grid point index.
    pub neighbours: Vec<u16>,
}

impl Iq2Lattice {
    /// The neighbour list (grid indices, without the count) of an off-grid point whose `map`
    /// value is `map_value` (< 0).
    #[inline]
    pub fn neighbours_of(&self, map_value: i32) -> &[u16] {
        debug_assert!(map_value < 0);
        let start = (-map_value - 1) as usize;
        let n = self.neighbours[start] as usize;
        &self.neighbours[start + 1..start + 1 + n]
    }

    /// Grid point `index` as its 8 positions (1, 3 or 5).
    #[inline]
    pub fn point(&self, index: usize) -> [i8; 8] {
        self.grid[index].to_le_bytes().map(|b| b as i8)
    }
}

/// The tables of `kind`, built on first use (about a second for the 2048-point grid).
pub fn lattice(kind: Iq2Grid) -> &'static Iq2Lattice {
    static TABLES: [OnceLock<Iq2Lattice>; 4] = [
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
    ];
    let slot = match kind {
        Iq2Grid::Iq2Xxs => 0,
        Iq2Grid::Iq2Xs => 1,
        Iq2Grid::Iq2S => 2,
        Iq2Grid::Iq1 => 3,
    };
    TABLES[slot].get_or_init(|| build(kind))
}

/// Where each table of one grid kind lies in [`table_words`]' output (offsets in u32 words).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableLayout {
    /// `grid`: point i is words `grid + 2i` (positions 0..4, one byte each, little-endian) and
    /// `grid + 2i + 1` (positions 4..8), as the two halves of [`Iq2Lattice::grid`]'s u64.
    pub grid: usize,
    /// `map`: point index u is word `map + u`, [`Iq2Lattice::map`]'s i32 as its bits.
    pub map: usize,
    /// `neighbours`: one u16 of [`Iq2Lattice::neighbours`] per word, so a negative map value m
    /// puts its count at `neighbours + (-m - 1)` and its grid indices right after.
    pub neighbours: usize,
    /// The total length.
    pub len: usize,
}

/// The layout of `kind`'s tables in [`table_words`] (builds them on first use).
pub fn table_layout(kind: Iq2Grid) -> TableLayout {
    let lat = lattice(kind);
    let grid = 0;
    let map = grid + 2 * lat.grid.len();
    let neighbours = map + lat.map.len();
    TableLayout {
        grid,
        map,
        neighbours,
        len: neighbours + lat.neighbours.len(),
    }
}

/// `kind`'s search tables flattened into u32 words for a GPU kernel (a `GpuQuantize::tables`
/// builder), laid out as [`table_layout`] says: the grid, the map, the neighbour lists.
pub fn table_words(kind: Iq2Grid) -> Vec<u32> {
    let lat = lattice(kind);
    let layout = table_layout(kind);
    let mut words = Vec::with_capacity(layout.len);
    for &g in &lat.grid {
        words.push(g as u32);
        words.push((g >> 32) as u32);
    }
    words.extend(lat.map.iter().map(|&m| m as u32));
    words.extend(lat.neighbours.iter().map(|&n| n as u32));
    debug_assert_eq!(words.len(), layout.len);
    words
}

/// The positions 2·code + 1 of point index `u`.
fn positions(u: usize) -> [i8; 8] {
    std::array::from_fn(|k| (2 * ((u >> (2 * k)) & 3) + 1) as i8)
}

fn build(kind: Iq2Grid) -> Iq2Lattice {
    let kg = kgrid(kind);
    let points: Vec<[i8; 8]> = kg.iter().map(|&u| positions(u as usize)).collect();
    let grid: Vec<u64> = points
        .iter()
        .map(|p| u64::from_le_bytes(p.map(|v| v as u8)))
        .collect();
    let mut map = vec![-1i32; KMAP_SIZE];
    for (i, &u) in kg.iter().enumerate() {
        map[u as usize] = i as i32;
    }
    let nwant = kind.nwant();
    // Per off-grid point: its neighbours in (distance, index) order.
    let lists: Vec<Option<Vec<u16>>> = (0..KMAP_SIZE)
        .into_par_iter()
        .map(|u| {
            if map[u] >= 0 {
                return None;
            }
            let pos = positions(u);
            let d2: Vec<u16> = points
                .iter()
                .map(|pg| {
                    let mut d = 0i32;
                    for k in 0..8 {
                        let diff = (pg[k] - pos[k]) as i32;
                        d += diff * diff;
                    }
                    d as u16
                })
                .collect();
            // The nwant smallest distinct distances (all ≤ 8·6²).
            let mut seen = [false; 8 * 36 + 1];
            for &d in &d2 {
                seen[d as usize] = true;
            }
            let limit = seen
                .iter()
                .enumerate()
                .filter(|(_, &s)| s)
                .map(|(d, _)| d as u16)
                .take(nwant)
                .last()
                .expect("a grid has points");
            let mut list: Vec<(u16, u16)> = d2
                .iter()
                .enumerate()
                .filter(|(_, &d)| d <= limit)
                .map(|(j, &d)| (d, j as u16))
                .collect();
            list.sort_unstable();
            Some(list.into_iter().map(|(_, j)| j).collect())
        })
        .collect();
    let mut neighbours = Vec::new();
    for (u, list) in lists.into_iter().enumerate() {
        if let Some(list) = list {
            map[u] = -(neighbours.len() as i32 + 1);
            neighbours.push(list.len() as u16);
            neighbours.extend_from_slice(&list);
        }
    }
    Iq2Lattice {
        grid,
        map,
        neighbours,
    }
}

/// iq2_find_best_neighbour (ggml-quants.c 3270): of the grid points in `neighbours`, the one
/// nearest to `xval` at `scale` under `weight` (first on ties); writes its codes to `l` and
/// returns its grid index.
#[inline]
pub fn find_best_neighbour(
    lat: &Iq2Lattice,
    neighbours: &[u16],
    xval: &[f32],
    weight: &[f32],
    scale: f32,
    l: &mut [i8],
) -> usize {
    let mut best_d2 = f32::MAX;
    let mut grid_index = usize::MAX;
    for &j in neighbours {
        let pg = lat.point(j as usize);
        let mut d2 = 0f32;
        for i in 0..8 {
            let q = pg[i] as f32;
            let diff = scale * q - xval[i];
            d2 += (weight[i] * diff) * diff;
        }
        if d2 < best_d2 {
            best_d2 = d2;
            grid_index = j as usize;
        }
    }
    // llama.cpp asserts here; a NaN distance everywhere (NaN input) falls back to the first.
    if grid_index == usize::MAX {
        grid_index = neighbours[0] as usize;
    }
    let pg = lat.point(grid_index);
    for i in 0..8 {
        l[i] = (pg[i] - 1) / 2;
    }
    grid_index
}

/// The tables by their properties (the byte-for-byte check against llama.cpp is the IQ2/IQ1
/// golden hash lists, which go through every table).
#[cfg(test)]
mod tests {
    use super::*;

    fn d2(a: [i8; 8], b: [i8; 8]) -> i32 {
        (0..8).map(|k| ((a[k] - b[k]) as i32).pow(2)).sum()
    }

    fn positions(u: usize) -> [i8; 8] {
        std::array::from_fn(|k| (2 * ((u >> (2 * k)) & 3) + 1) as i8)
    }

    #[test]
    fn lattice_tables_have_llama_cpp_shape() {
        for kind in Iq2Grid::ALL {
            let lat = lattice(kind);
            let kg = kgrid(kind);
            assert_eq!(lat.grid.len(), kind.size());
            assert_eq!(lat.map.len(), KMAP_SIZE);
            // The grid's points are distinct and each maps to itself.
            for (i, &u) in kg.iter().enumerate() {
                assert_eq!(lat.map[u as usize], i as i32, "{kind:?} point {i}");
                assert_eq!(lat.point(i), positions(u as usize), "{kind:?} point {i}");
            }
            let on_grid = lat.map.iter().filter(|&&m| m >= 0).count();
            assert_eq!(on_grid, kind.size(), "{kind:?}");
            // Every off-grid point has a non-empty list: the grid points within its `nwant`
            // nearest distinct distances, ordered by (distance, index); lists tile `neighbours`.
            let mut next = 0usize;
            for u in 0..KMAP_SIZE {
                let m = lat.map[u];
                if m >= 0 {
                    continue;
                }
                assert_eq!(
                    (-m - 1) as usize,
                    next,
                    "{kind:?} {u}: lists in index order"
                );
                let list = lat.neighbours_of(m);
                assert!(!list.is_empty(), "{kind:?} {u}");
                next += 1 + list.len();
                let pos = positions(u);
                let keys: Vec<(i32, u16)> = list
                    .iter()
                    .map(|&j| (d2(lat.point(j as usize), pos), j))
                    .collect();
                assert!(keys.windows(2).all(|w| w[0] < w[1]), "{kind:?} {u}: order");
                let mut all: Vec<i32> = (0..kind.size()).map(|j| d2(lat.point(j), pos)).collect();
                all.sort_unstable();
                all.dedup();
                let limit = all[kind.nwant().min(all.len()) - 1];
                let want = (0..kind.size())
                    .filter(|&j| d2(lat.point(j), pos) <= limit)
                    .count();
                assert_eq!(list.len(), want, "{kind:?} {u}: list length");
                assert!(keys.last().unwrap().0 <= limit);
            }
            assert_eq!(next, lat.neighbours.len(), "{kind:?}");
        }
    }

    #[test]
    fn table_words_follow_their_layout() {
        for kind in Iq2Grid::ALL {
            let lat = lattice(kind);
            let words = table_words(kind);
            let lay = table_layout(kind);
            assert_eq!(words.len(), lay.len, "{kind:?}");
            for i in [0, kind.size() / 2, kind.size() - 1] {
                let lo = words[lay.grid + 2 * i] as u64;
                let hi = words[lay.grid + 2 * i + 1] as u64;
                assert_eq!(lo | hi << 32, lat.grid[i], "{kind:?} point {i}");
            }
            // Every off-grid point's list, read through the words as a kernel reads it.
            for u in 0..KMAP_SIZE {
                let m = words[lay.map + u] as i32;
                assert_eq!(m, lat.map[u], "{kind:?} {u}");
                if m < 0 {
                    let start = lay.neighbours + (-m - 1) as usize;
                    let n = words[start] as usize;
                    let list: Vec<u16> = words[start + 1..start + 1 + n]
                        .iter()
                        .map(|&w| w as u16)
                        .collect();
                    assert_eq!(list, lat.neighbours_of(m), "{kind:?} {u}");
                }
            }
        }
    }
}
