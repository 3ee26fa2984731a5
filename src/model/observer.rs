//! `MatmulObserver`: what the forward graph tells an observer about the input of every matmul
//! it runs (the imatrix statistics collector, `imatrix::collector::StatsCollector`, is one).
//! The graph knows nothing of the observer's rules; the observer decides what to accumulate and
//! may hand back an accumulator for the matmul to fill as it runs (the fused statistics path).

use crate::backend::Backend;

/// Rows of an expert's input that belong to one sequence of the batch: rows `row0..row0 + n`
/// of the expert's gathered input come from sequence `seq` (counted from the start of the
/// batch), listed in the order the rows are accumulated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeqRows {
    pub row0: usize,
    pub n: usize,
    pub seq: usize,
}

pub trait MatmulObserver<B: Backend> {
    /// A dense matmul of weight `name` is about to run on `x` (`[rows, cols]`, one row per
    /// token of the batch). Returns an accumulator for the matmul to fill with all of x's rows,
    /// or None.
    fn dense(&mut self, b: &B, x: &B::Tensor, name: &str) -> Option<&mut B::Stats>;

    /// Expert `expert` (of `n_expert`) of weight `name` is about to run on `x`, the rows routed
    /// to it; `pieces` say which sequence each run of rows belongs to. Returns an accumulator
    /// for the matmul to fill with all of x's rows, or None.
    fn expert(
        &mut self,
        b: &B,
        x: &B::Tensor,
        name: &str,
        n_expert: usize,
        expert: usize,
        pieces: &[SeqRows],
    ) -> Option<&mut B::Stats>;

    /// The output head `name` (a model's own `output.weight`, never a tied embedding) is about
    /// to run on the final hidden states `x`. The head may run in row slices, so the observer
    /// accumulates here rather than through the matmul.
    fn output_head(&mut self, b: &B, x: &B::Tensor, name: &str);
}
