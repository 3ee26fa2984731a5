//! Attention conformance: both GPU kernels (per-row and flash) against the reference on head
//! widths 16…256, GQA ratios 1/3/7, sequences that end mid-tile, several sequences per batch and
//! sliding windows (gemma3's local layers: narrower than a tile, crossing tiles, of one key,
//! wider than the sequence); and the flash kernel's batch independence (a sequence alone and in
//! the middle of a batch of three: identical bits).

use super::{bits_equal, nmse, CheckRow};
use crate::backend::gpu::kernels::attention::AttentionVariant;
use crate::backend::gpu::kernels::attention_flash;
use crate::backend::gpu::GpuBackend;
use crate::backend::{AttnParams, Backend};
use crate::util::rng::Rng;

/// (n_head, n_head_kv, head_dim, seq_len, sequences per batch, sliding window or 0).
const CASES: [(usize, usize, usize, usize, usize, usize); 13] = [
    (4, 4, 16, 7, 1, 0),
    (9, 3, 64, 11, 2, 0),
    (6, 2, 24, 5, 3, 0),
    (2, 2, 64, 70, 2, 0),
    (6, 2, 128, 45, 3, 0),
    (7, 1, 256, 33, 2, 0),
    (14, 2, 64, 37, 2, 0),
    (3, 1, 256, 19, 1, 0),
    (4, 1, 256, 90, 2, 5),
    (4, 1, 256, 150, 2, 70),
    (9, 3, 64, 45, 2, 1),
    (6, 2, 128, 40, 3, 17),
    (2, 2, 64, 30, 2, 64),
];

struct Inputs {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    p: AttnParams,
    rows: usize,
}

impl Inputs {
    fn random(
        rng: &mut Rng,
        n_head: usize,
        n_head_kv: usize,
        hd: usize,
        seq: usize,
        nseq: usize,
        window: usize,
    ) -> Inputs {
        let rows = seq * nseq;
        Inputs {
            q: rng.vec(rows * n_head * hd, 1.5),
            k: rng.vec(rows * n_head_kv * hd, 1.5),
            v: rng.vec(rows * n_head_kv * hd, 1.0),
            p: AttnParams {
                n_head,
                n_head_kv,
                head_dim: hd,
                seq_len: seq,
                scale: 1.0 / (hd as f32).sqrt(),
                window,
            },
            rows,
        }
    }

    fn run<B: Backend>(
        &self,
        b: &B,
        f: impl Fn(&B::Tensor, &B::Tensor, &B::Tensor) -> B::Tensor,
    ) -> Vec<f32> {
        let (hq, hkv) = (
            self.p.n_head * self.p.head_dim,
            self.p.n_head_kv * self.p.head_dim,
        );
        let q = b.upload(&self.q, self.rows, hq);
        let k = b.upload(&self.k, self.rows, hkv);
        let v = b.upload(&self.v, self.rows, hkv);
        b.download(&f(&q, &k, &v))
    }

    fn gpu(&self, gpu: &GpuBackend, variant: AttentionVariant) -> Vec<f32> {
        self.run(gpu, |q, k, v| gpu.attention_with(q, k, v, &self.p, variant))
    }

    fn shape(&self) -> String {
        let p = &self.p;
        let window = match p.window {
            0 => String::new(),
            w => format!(", window {w}"),
        };
        format!(
            "{} rows, {}/{} heads x{}, seq {}{window}",
            self.rows, p.n_head, p.n_head_kv, p.head_dim, p.seq_len
        )
    }
}

fn tiles_note(t: &attention_flash::Tiles) -> String {
    format!(
        "{} rows x {} keys per tile, {} threads",
        t.rows,
        t.keys,
        t.workgroup_size()
    )
}

fn flash_note(gpu: &GpuBackend, hd: usize) -> String {
    match attention_flash::tiles(&gpu.ctx, hd) {
        Some(t) => tiles_note(&t),
        None => "no tiles".into(),
    }
}

pub fn check_attention<R: Backend>(gpu: &GpuBackend, r: &R, rng: &mut Rng) -> Vec<CheckRow> {
    let mut rows = Vec::new();
    for (n_head, n_head_kv, hd, seq, nseq, window) in CASES {
        let x = Inputs::random(rng, n_head, n_head_kv, hd, seq, nseq, window);
        let want = x.run(r, |q, k, v| r.attention(q, k, v, &x.p));
        for variant in [AttentionVariant::PerRow, AttentionVariant::Flash] {
            let got = x.gpu(gpu, variant);
            let mut row = CheckRow::nmse(
                &format!("attention/{}", variant.name()),
                "-",
                x.shape(),
                nmse(&got, &want),
            );
            if variant == AttentionVariant::Flash {
                row.note = flash_note(gpu, hd);
            }
            rows.push(row);
        }
    }

    // WebGPU's minimum workgroup memory (16 KiB): fewer keys per tile than most adapters get.
    for (n_head, n_head_kv, hd, seq, window) in [
        (7usize, 1usize, 256usize, 45usize, 0usize),
        (6, 2, 128, 40, 0),
        (4, 1, 256, 60, 9),
    ] {
        let x = Inputs::random(rng, n_head, n_head_kv, hd, seq, 2, window);
        let t = attention_flash::Tiles::choose(hd, 16384).expect("fits 16 KiB");
        let want = x.run(r, |q, k, v| r.attention(q, k, v, &x.p));
        let got = x.run(gpu, |q, k, v| {
            let o = gpu.upload(&vec![0.0; x.q.len()], x.rows, n_head * hd);
            attention_flash::run_tiles(&gpu.ctx, &t, q, k, v, &x.p, &o);
            o
        });
        let mut row = CheckRow::nmse("attention/flash 16K", "-", x.shape(), nmse(&got, &want));
        row.note = tiles_note(&t);
        rows.push(row);
    }

    // One sequence alone, then as the middle of a batch of three: the flash kernel's rows must
    // not see the batch.
    for (n_head, n_head_kv, hd, seq) in [(9usize, 3usize, 64usize, 45usize), (8, 1, 128, 29)] {
        let alone = Inputs::random(rng, n_head, n_head_kv, hd, seq, 1, 0);
        let mut batch = Inputs::random(rng, n_head, n_head_kv, hd, seq, 3, 0);
        let (lq, lkv) = (n_head * hd * seq, n_head_kv * hd * seq);
        batch.q[lq..2 * lq].copy_from_slice(&alone.q);
        batch.k[lkv..2 * lkv].copy_from_slice(&alone.k);
        batch.v[lkv..2 * lkv].copy_from_slice(&alone.v);
        let a = alone.gpu(gpu, AttentionVariant::Flash);
        let b = batch.gpu(gpu, AttentionVariant::Flash);
        let mid = &b[lq..2 * lq];
        rows.push(CheckRow::exact(
            "attention/flash 1 vs 3",
            "-",
            format!("{n_head}/{n_head_kv} heads x{hd}, seq {seq}, 2nd of 3"),
            bits_equal(mid, &a),
            nmse(mid, &a),
            "vs alone",
        ));
    }
    rows
}
