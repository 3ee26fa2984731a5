//! Conformance rows of `Backend::gram_add` (the `imatrix --covariance` accumulation).

use super::{bits_equal, nmse, CheckRow};
use crate::backend::gpu::GpuBackend;
use crate::backend::Backend;
use crate::util::rng::Rng;

/// Σ xᵀ·x of two runs of rows (two sequences of a batch) into one accumulator, with a width
/// that is not a multiple of the kernel's tile: against the reference (NMSE); the GPU result is
/// symmetric bit for bit, and adding the runs as two batches (a run per upload) gives the same
/// bits as one upload holding both.
pub(super) fn check_gram<R: Backend>(gpu: &GpuBackend, r: &R, rng: &mut Rng) -> Vec<CheckRow> {
    let (m, k) = (300usize, 150usize);
    let x = rng.vec(m * k, 2.0);
    let zeros = vec![0f32; k * k];
    let runs = [(0usize, 137usize), (137, 163)];
    let (rx, gx) = (r.upload(&x, m, k), gpu.upload(&x, m, k));
    let (mut ra, mut ga) = (r.upload(&zeros, k, k), gpu.upload(&zeros, k, k));
    for &(row0, n) in &runs {
        r.gram_add(&rx, row0, n, &mut ra);
        gpu.gram_add(&gx, row0, n, &mut ga);
    }
    let (want, got) = (r.download(&ra), gpu.download(&ga));
    let shape = format!("{m}x{k}, 2 runs");
    let mut row = CheckRow::nmse("gram xᵀx", "-", shape.clone(), nmse(&got, &want));
    let symmetric =
        (0..k).all(|i| (0..k).all(|j| got[i * k + j].to_bits() == got[j * k + i].to_bits()));
    row.pass &= symmetric;
    row.note = format!("symmetric: {symmetric}");
    let mut rows = vec![row];

    // Each run uploaded on its own (another batch), added to a fresh accumulator in order.
    let mut ga2 = gpu.upload(&zeros, k, k);
    for &(row0, n) in &runs {
        let part = gpu.upload(&x[row0 * k..(row0 + n) * k], n, k);
        gpu.gram_add(&part, 0, n, &mut ga2);
    }
    let alone = gpu.download(&ga2);
    rows.push(CheckRow::exact(
        "gram runs=batches",
        "-",
        shape,
        bits_equal(&alone, &got),
        nmse(&alone, &got),
        "vs each run uploaded alone",
    ));
    rows
}
