//! `shaders/mm_stats.wgsl`: imatrix statistics (Σx², Σx per column of a matmul's input) for
//! every slot (sequence of the batch, or an expert's sequence) of one input in one dispatch, and
//! the readback of many accumulators through one staging copy and one map/wait.

use super::super::{Ctx, GpuStats, GpuTensor};
use crate::backend::StatsRows;
use std::sync::atomic::{AtomicU64, Ordering};

pub const SHADER: &str = include_str!("../../../../shaders/mm_stats.wgsl");

/// Columns per workgroup (the shader's COLS).
const COLS: usize = 32;

/// How often the statistics kernel ran and how often statistics were read back (counted, for
/// tests and `wquant bench`: a pass should read back once).
#[derive(Debug, Default)]
pub struct StatsCounts {
    dispatches: AtomicU64,
    readbacks: AtomicU64,
}

impl StatsCounts {
    pub fn dispatches(&self) -> u64 {
        self.dispatches.load(Ordering::Relaxed)
    }

    pub fn readbacks(&self) -> u64 {
        self.readbacks.load(Ordering::Relaxed)
    }
}

/// Per slot of `s`, the indices of x's rows it takes, in the order of `runs`.
fn rows_by_slot(runs: &[StatsRows], x_rows: usize, n_slots: usize) -> Vec<Vec<u32>> {
    let mut by_slot: Vec<Vec<u32>> = vec![Vec::new(); n_slots];
    for r in runs {
        assert!(
            r.row0 + r.n <= x_rows,
            "statistics rows {}..{} past the input's {x_rows} rows",
            r.row0,
            r.row0 + r.n
        );
        assert!(
            r.slot < n_slots,
            "statistics slot {} of an accumulator with {n_slots}",
            r.slot
        );
        by_slot[r.slot].extend((r.row0..r.row0 + r.n).map(|i| i as u32));
    }
    by_slot
}

/// Add the rows `runs` give each slot of `s` to its sums: one dispatch for all slots (more only
/// past the adapter's workgroup-count limit).
pub fn run(ctx: &Ctx, counts: &StatsCounts, x: &GpuTensor, runs: &[StatsRows], s: &mut GpuStats) {
    assert_eq!(
        x.cols, s.n_cols,
        "statistics for {} columns fed a [{}, {}] input",
        s.n_cols, x.rows, x.cols
    );
    let by_slot = rows_by_slot(runs, x.rows, s.n_slots);
    let mut rows: Vec<u32> = Vec::new();
    let mut tab: Vec<u32> = Vec::new();
    for (slot, r) in by_slot.iter().enumerate() {
        if r.is_empty() {
            continue;
        }
        s.counts[slot] += r.len() as u64;
        tab.extend([
            rows.len() as u32,
            r.len() as u32,
            (slot * 2 * s.n_cols) as u32,
        ]);
        rows.extend_from_slice(r);
    }
    if tab.is_empty() || x.cols == 0 {
        return;
    }
    let n_entries = tab.len() / 3;
    let max = ctx.dev.limits.max_compute_workgroups_per_dimension.max(1) as usize;
    let blocks = x.cols.div_ceil(COLS);
    let gx = blocks.min(max);
    let gz = blocks.div_ceil(gx);
    let pipe = ctx.pipeline("mm_stats", || SHADER.to_string());
    let rows_buf = ctx.upload_u32(&rows);
    let tab_buf = ctx.upload_u32(&tab);
    let mut tab0 = 0;
    while tab0 < n_entries {
        let gy = (n_entries - tab0).min(max);
        let params = [x.cols as u32, gx as u32, tab0 as u32];
        ctx.dispatch(
            &pipe,
            &params,
            &[
                x.buffer(),
                rows_buf.buffer(),
                tab_buf.buffer(),
                s.buf.buffer(),
            ],
            [gx as u32, gy as u32, gz as u32],
        );
        counts.dispatches.fetch_add(1, Ordering::Relaxed);
        tab0 += gy;
    }
}

/// A staging buffer and the accumulators copied into it: (index in `sets`, byte offset, bytes).
type Staging = (wgpu::Buffer, Vec<(usize, u64, u64)>);

/// The device words of every accumulator in `sets` (each `n_slots · 2 · n_cols` f32 bits):
/// all copied into staging buffers in one submission and mapped with one wait.
pub fn read_all(ctx: &Ctx, counts: &StatsCounts, sets: &[&GpuStats]) -> Vec<Vec<u32>> {
    let d = &ctx.dev.device;
    let lim = ctx.dev.limits.max_buffer_size.max(4);
    // Staging buffers of at most the adapter's buffer size, each holding whole accumulators.
    let mut stagings: Vec<Staging> = Vec::new();
    let mut enc = d.create_command_encoder(&wgpu::CommandEncoderDescriptor {
        label: Some("stats readback"),
    });
    let mut group: Vec<(usize, u64, u64)> = Vec::new();
    let mut group_bytes = 0u64;
    let flush = |group: &mut Vec<(usize, u64, u64)>,
                 bytes: &mut u64,
                 enc: &mut wgpu::CommandEncoder,
                 stagings: &mut Vec<Staging>| {
        if group.is_empty() {
            return;
        }
        let staging = d.create_buffer(&wgpu::BufferDescriptor {
            label: Some("stats staging"),
            size: *bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        for &(i, off, n) in group.iter() {
            enc.copy_buffer_to_buffer(sets[i].buf.buffer(), 0, &staging, off, n);
        }
        stagings.push((staging, std::mem::take(group)));
        *bytes = 0;
    };
    for (i, s) in sets.iter().enumerate() {
        let n = (s.n_slots * 2 * s.n_cols * 4) as u64;
        if n == 0 {
            continue;
        }
        assert!(
            n <= lim,
            "statistics of {} bytes exceed the adapter's buffer limit ({lim} bytes)",
            n
        );
        if group_bytes + n > lim {
            flush(&mut group, &mut group_bytes, &mut enc, &mut stagings);
        }
        group.push((i, group_bytes, n));
        group_bytes += n;
    }
    flush(&mut group, &mut group_bytes, &mut enc, &mut stagings);
    let mut out: Vec<Vec<u32>> = vec![Vec::new(); sets.len()];
    if stagings.is_empty() {
        return out;
    }
    // After everything recorded (the statistics dispatches), in the same submit.
    let bytes = stagings.iter().map(|(b, _)| b.size()).sum();
    ctx.submit_readback(enc.finish(), bytes);
    let (tx, rx) = std::sync::mpsc::channel();
    for (k, (staging, _)) in stagings.iter().enumerate() {
        let tx = tx.clone();
        staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send((k, r));
        });
    }
    drop(tx);
    d.poll(wgpu::PollType::wait_indefinitely())
        .expect("GPU device lost while waiting for statistics");
    let mapped: Vec<_> = rx.try_iter().collect();
    assert_eq!(
        mapped.len(),
        stagings.len(),
        "statistics staging buffers not mapped"
    );
    for (_, r) in mapped {
        r.expect("mapping the statistics staging buffer failed");
    }
    counts.readbacks.fetch_add(1, Ordering::Relaxed);
    for (staging, group) in &stagings {
        {
            let view = staging
                .slice(..)
                .get_mapped_range()
                .expect("mapped statistics range");
            let words: &[u32] = bytemuck::cast_slice(&view);
            for &(i, off, n) in group {
                let (a, b) = ((off / 4) as usize, ((off + n) / 4) as usize);
                out[i] = words[a..b].to_vec();
            }
        }
        staging.unmap();
    }
    out
}
