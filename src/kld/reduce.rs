//! The per-token KL-divergence reductions over logits that live on a backend's device: an
//! extension of `Backend` kept here, on the KLD side, so that `backend` does not depend on `kld`.
//! The default methods download the logits and run the CPU reference (`kld::stats`); the GPU
//! reduces on the device (`kld::gpu`) and reads back only an 8-word record per token.

use super::logits_file::BaseRecord;
use super::stats::{tokens_kld_from_logits, tokens_kld_from_records, TokenKld};
use crate::backend::cpu::{CpuBackend, CpuTensor};
use crate::backend::Backend;

pub trait KldReduce: Backend {
    /// Per-token KL(base‖quant), Δp, both nll and top-token agreement of `[targets.len(),
    /// n_vocab]` logits, row i scored against `targets[i]`.
    fn kld_tokens(
        &self,
        quant_logits: &Self::Tensor,
        base_logits: &Self::Tensor,
        targets: &[u32],
    ) -> Vec<TokenKld> {
        let (_, n_vocab) = self.shape(quant_logits);
        tokens_kld_from_logits(
            &self.download(quant_logits),
            &self.download(base_logits),
            n_vocab,
            targets,
        )
    }

    /// As `kld_tokens`, row i of the quant logits against base-file record `base[i]`
    /// (llama-perplexity's `--kl-divergence`).
    fn kld_tokens_from_records(
        &self,
        quant_logits: &Self::Tensor,
        base: &[BaseRecord],
        targets: &[u32],
    ) -> Vec<TokenKld> {
        let (_, n_vocab) = self.shape(quant_logits);
        tokens_kld_from_records(&self.download(quant_logits), n_vocab, base, targets)
    }
}

/// The logits are already on the host: the CPU reference itself, on them in place.
impl KldReduce for CpuBackend {
    fn kld_tokens(&self, quant: &CpuTensor, base: &CpuTensor, targets: &[u32]) -> Vec<TokenKld> {
        tokens_kld_from_logits(&quant.data, &base.data, quant.cols, targets)
    }

    fn kld_tokens_from_records(
        &self,
        quant: &CpuTensor,
        base: &[BaseRecord],
        targets: &[u32],
    ) -> Vec<TokenKld> {
        tokens_kld_from_records(&quant.data, quant.cols, base, targets)
    }
}
