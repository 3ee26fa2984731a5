//! `MatmulObserver`: what the forward graph tells an observer about the inputs of its matmuls
//! (the imatrix statistics collector, `imatrix::collector::StatsCollector`, is one). The graph
//! knows nothing of the observer's rules. It shows each distinct input once, with the names of
//! every weight that multiplies it (q, k and v share the attention norm's output; gate and up
//! share the FFN norm's), so an observer can compute one set of statistics per input.

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
    /// Dense matmuls of the weights `names` are about to run on `x` (`[rows, cols]`, one row
    /// per token of the batch).
    fn dense(&mut self, b: &B, x: &B::Tensor, names: &[&str]);

    /// Expert `expert` (of `n_expert`) of the weights `names` is about to run on `x`, the rows
    /// routed to it; `pieces` say which sequence each run of rows belongs to.
    fn expert(
        &mut self,
        b: &B,
        x: &B::Tensor,
        names: &[&str],
        n_expert: usize,
        expert: usize,
        pieces: &[SeqRows],
    );

    /// The output head `name` (a model's own `output.weight`, never a tied embedding) is about
    /// to run on the final hidden states `x`.
    fn output_head(&mut self, b: &B, x: &B::Tensor, name: &str);
}
