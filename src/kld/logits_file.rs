//! llama-perplexity's `--kl-divergence-base` file (SPEC §7.1): the base model's log-probs for
//! every scored token, each stored as 16-bit codes in a 16-nat window below the top logit.
//!
//! Layout (little-endian): `_logits_`, u32 n_ctx, i32 n_vocab, i32 n_chunk, i32 tokens
//! [n_chunk·n_ctx], then per chunk `n_ctx − 1 − n_ctx/2` records of
//! `nv = 2·((n_vocab+1)/2) + 4` u16: f32 scale, f32 min_log_prob, n_vocab codes, padding.
//!
//! The reader streams records (the files are GiBs) and validates everything it can: the header,
//! the exact file size, every token id, each record's scale and minimum. The writer streams to
//! `NAME.tmp` and renames on `finish`, so an interrupted run leaves no torn file.

use anyhow::{bail, Context, Result};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

pub const MAGIC: &[u8; 8] = b"_logits_";
/// Bytes before the token array.
pub const HEADER_BYTES: usize = 20;
/// Width of the log-prob window below the top logit, in nats.
pub const WINDOW_NATS: f32 = 16.0;

/// The file's header: the per-sequence context, vocabulary size and chunk count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BaseHeader {
    pub n_ctx: u32,
    pub n_vocab: u32,
    pub n_chunk: u32,
}

impl BaseHeader {
    /// First scored position of a chunk (llama-perplexity scores the second half).
    pub fn first(&self) -> usize {
        self.n_ctx as usize / 2
    }
    /// Records (scored tokens) per chunk: positions first..=n_ctx−2.
    pub fn records_per_chunk(&self) -> usize {
        records_per_chunk(self.n_ctx as usize)
    }
    /// u16 values per record, including the two f32 and the padding.
    pub fn record_u16s(&self) -> usize {
        record_u16s(self.n_vocab as usize)
    }
    pub fn record_bytes(&self) -> usize {
        2 * self.record_u16s()
    }
    pub fn n_tokens(&self) -> usize {
        self.n_chunk as usize * self.n_ctx as usize
    }
    /// Exact size of a complete file with this header.
    pub fn file_bytes(&self) -> u64 {
        HEADER_BYTES as u64
            + 4 * self.n_tokens() as u64
            + self.n_chunk as u64 * self.records_per_chunk() as u64 * self.record_bytes() as u64
    }

    /// Parse and check the first 20 bytes; `what` names the file in errors.
    pub fn parse(bytes: &[u8], what: &str) -> Result<BaseHeader> {
        if bytes.len() < HEADER_BYTES {
            bail!(
                "{what}: too short for a KL-divergence base file ({} bytes, header needs {HEADER_BYTES})",
                bytes.len()
            );
        }
        if &bytes[0..8] != MAGIC {
            bail!("{what}: does not look like a file of log-probabilities (no `_logits_` magic)");
        }
        let word = |o: usize| i32::from_le_bytes(bytes[o..o + 4].try_into().unwrap());
        let (n_ctx, n_vocab, n_chunk) = (word(8), word(12), word(16));
        if !(4..=1 << 24).contains(&n_ctx) {
            bail!("{what}: implausible n_ctx {n_ctx} in the header");
        }
        if !(1..=1 << 24).contains(&n_vocab) {
            bail!("{what}: implausible n_vocab {n_vocab} in the header");
        }
        if !(1..=1 << 24).contains(&n_chunk) {
            bail!("{what}: implausible n_chunk {n_chunk} in the header");
        }
        Ok(BaseHeader {
            n_ctx: n_ctx as u32,
            n_vocab: n_vocab as u32,
            n_chunk: n_chunk as u32,
        })
    }

    pub fn to_bytes(&self) -> [u8; HEADER_BYTES] {
        let mut b = [0u8; HEADER_BYTES];
        b[0..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&self.n_ctx.to_le_bytes());
        b[12..16].copy_from_slice(&(self.n_vocab as i32).to_le_bytes());
        b[16..20].copy_from_slice(&(self.n_chunk as i32).to_le_bytes());
        b
    }
}

pub fn records_per_chunk(n_ctx: usize) -> usize {
    n_ctx - 1 - n_ctx / 2
}

pub fn record_u16s(n_vocab: usize) -> usize {
    2 * n_vocab.div_ceil(2) + 4
}

/// llama.cpp's `nearest_int`: the 1.5·2²³ magic-number round (round half to even).
pub fn nearest_int(x: f32) -> i32 {
    let v = x + 12582912.0f32;
    (v.to_bits() as i32 & 0x007f_ffff) - 0x0040_0000
}

/// One position's base distribution: log p(i) = scale·q[i] + min_log_prob.
#[derive(Clone, Debug, PartialEq)]
pub struct BaseRecord {
    pub scale: f32,
    pub min_log_prob: f32,
    pub q: Vec<u16>,
}

/// max, log Σ exp(z − max) (f64 sum of f32 `expf`, then f32), and the index of the first max.
pub fn max_and_log_sum_exp(z: &[f32]) -> (f32, f32, usize) {
    let mut max = z[0];
    let mut imax = 0;
    for (i, &v) in z.iter().enumerate().skip(1) {
        if v > max {
            max = v;
            imax = i;
        }
    }
    let mut sum_exp = 0.0f64;
    for &v in z {
        sum_exp += (v - max).exp() as f64;
    }
    (max, sum_exp.ln() as f32, imax)
}

impl BaseRecord {
    /// Encode logits exactly as llama-perplexity's base run does (SPEC §7.1).
    pub fn from_logits(z: &[f32]) -> BaseRecord {
        let mut r = BaseRecord {
            scale: 0.0,
            min_log_prob: 0.0,
            q: vec![0; z.len()],
        };
        r.encode(z);
        r
    }

    /// `from_logits` into an existing record (no allocation).
    pub fn encode(&mut self, z: &[f32]) {
        let mut max = z[0];
        let mut min = z[0];
        for &v in &z[1..] {
            max = max.max(v);
            min = min.min(v);
        }
        let min = min.max(max - WINDOW_NATS);
        let (_, log_sum_exp, _) = max_and_log_sum_exp(z);
        self.min_log_prob = min - max - log_sum_exp;
        self.scale = (max - min) / 65535.0;
        self.q.resize(z.len(), 0);
        if self.scale != 0.0 {
            let inv_scale = 1.0 / self.scale;
            for (q, &v) in self.q.iter_mut().zip(z) {
                // The window is ≤ 65535 steps wide, so the code fits in u16.
                *q = if v > min {
                    nearest_int(inv_scale * (v - min)) as u16
                } else {
                    0
                };
            }
        } else {
            self.q.fill(0);
        }
    }

    /// Decoded log-prob of token `i`.
    #[inline]
    pub fn log_prob(&self, i: usize) -> f32 {
        self.scale * self.q[i] as f32 + self.min_log_prob
    }

    pub fn n_vocab(&self) -> usize {
        self.q.len()
    }

    /// Parse one record of `record_u16s(n_vocab)` u16 values; `what` locates it in errors.
    pub fn parse_into(
        &mut self,
        bytes: &[u8],
        n_vocab: usize,
        what: &dyn Fn() -> String,
    ) -> Result<()> {
        if bytes.len() != 2 * record_u16s(n_vocab) {
            bail!(
                "{}: record is {} bytes, expected {}",
                what(),
                bytes.len(),
                2 * record_u16s(n_vocab)
            );
        }
        let scale = f32::from_le_bytes(bytes[0..4].try_into().unwrap());
        let min_log_prob = f32::from_le_bytes(bytes[4..8].try_into().unwrap());
        // scale = window/65535 with window ≤ 16 nats; min_log_prob = min − max − lse ≤ 0.
        if !(scale.is_finite() && (0.0..=WINDOW_NATS / 65535.0 * 1.0001).contains(&scale)) {
            bail!(
                "{}: invalid scale {scale} (corrupt or not a base file)",
                what()
            );
        }
        if !(min_log_prob.is_finite() && min_log_prob <= 0.0 && min_log_prob > -1.0e4) {
            bail!(
                "{}: invalid minimum log-prob {min_log_prob} (corrupt file)",
                what()
            );
        }
        self.scale = scale;
        self.min_log_prob = min_log_prob;
        self.q.resize(n_vocab, 0);
        for (q, b) in self
            .q
            .iter_mut()
            .zip(bytes[8..8 + 2 * n_vocab].chunks_exact(2))
        {
            *q = u16::from_le_bytes([b[0], b[1]]);
        }
        Ok(())
    }

    pub fn parse(bytes: &[u8], n_vocab: usize, what: &str) -> Result<BaseRecord> {
        let mut r = BaseRecord {
            scale: 0.0,
            min_log_prob: 0.0,
            q: Vec::new(),
        };
        r.parse_into(bytes, n_vocab, &|| what.to_string())?;
        Ok(r)
    }

    /// Append the record's bytes (with padding) to `out`.
    pub fn write_bytes(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.scale.to_le_bytes());
        out.extend_from_slice(&self.min_log_prob.to_le_bytes());
        for &q in &self.q {
            out.extend_from_slice(&q.to_le_bytes());
        }
        if self.q.len() % 2 == 1 {
            out.extend_from_slice(&[0, 0]);
        }
    }
}

/// Streaming reader of a base file: header and tokens at open, then records in file order.
pub struct BaseFileReader {
    path: PathBuf,
    input: BufReader<File>,
    pub header: BaseHeader,
    /// The evaluation tokens, n_chunk·n_ctx ids (without BOS substitution).
    pub tokens: Vec<u32>,
    next_record: usize,
    buf: Vec<u8>,
}

impl BaseFileReader {
    pub fn open(path: &Path) -> Result<BaseFileReader> {
        let what = path.display().to_string();
        let file = File::open(path).with_context(|| format!("{what}: cannot open base file"))?;
        let len = file
            .metadata()
            .with_context(|| format!("{what}: cannot stat"))?
            .len();
        let mut input = BufReader::with_capacity(1 << 20, file);
        let mut hb = [0u8; HEADER_BYTES];
        let got = read_full(&mut input, &mut hb).with_context(|| format!("{what}: read error"))?;
        let header = BaseHeader::parse(&hb[..got], &what)?;
        if len != header.file_bytes() {
            bail!(
                "{what}: size {len} bytes does not match its header (n_ctx {}, n_vocab {}, n_chunk {} \
                 need {} bytes){}",
                header.n_ctx,
                header.n_vocab,
                header.n_chunk,
                header.file_bytes(),
                if len < header.file_bytes() { ": truncated" } else { ": trailing data" }
            );
        }
        let mut tb = vec![0u8; 4 * header.n_tokens()];
        input
            .read_exact(&mut tb)
            .with_context(|| format!("{what}: cannot read the token array"))?;
        let mut tokens = Vec::with_capacity(header.n_tokens());
        for (i, b) in tb.chunks_exact(4).enumerate() {
            let t = i32::from_le_bytes(b.try_into().unwrap());
            if t < 0 || t as u32 >= header.n_vocab {
                bail!(
                    "{what}: token {i} has id {t}, outside the vocabulary of {}",
                    header.n_vocab
                );
            }
            tokens.push(t as u32);
        }
        Ok(BaseFileReader {
            path: path.to_path_buf(),
            input,
            buf: vec![0u8; header.record_bytes()],
            header,
            tokens,
            next_record: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Read the next record into `rec`; records run chunk by chunk, position by position.
    pub fn read_record(&mut self, rec: &mut BaseRecord) -> Result<()> {
        let per = self.header.records_per_chunk();
        let total = per * self.header.n_chunk as usize;
        let idx = self.next_record;
        let where_ = || {
            format!(
                "{}: record {} (chunk {}, position {})",
                self.path.display(),
                idx,
                idx / per,
                self.header.first() + idx % per
            )
        };
        if idx >= total {
            bail!("{}: past the last of {total} records", where_());
        }
        self.input
            .read_exact(&mut self.buf)
            .with_context(|| format!("{}: read error", where_()))?;
        rec.parse_into(&self.buf, self.header.n_vocab as usize, &where_)?;
        self.next_record += 1;
        Ok(())
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Streaming writer: header and tokens at creation, then every record in order, then `finish`.
/// Dropping it unfinished removes `NAME.tmp`.
pub struct BaseFileWriter {
    path: PathBuf,
    tmp: PathBuf,
    out: Option<BufWriter<File>>,
    pub header: BaseHeader,
    written: usize,
    buf: Vec<u8>,
}

impl BaseFileWriter {
    pub fn create(path: &Path, header: BaseHeader, tokens: &[u32]) -> Result<BaseFileWriter> {
        if tokens.len() != header.n_tokens() {
            bail!(
                "{}: {} tokens given for n_chunk {} × n_ctx {}",
                path.display(),
                tokens.len(),
                header.n_chunk,
                header.n_ctx
            );
        }
        let tmp = crate::util::tmp_path(path);
        let f = File::create(&tmp).with_context(|| format!("{}: cannot create", tmp.display()))?;
        let mut w = BaseFileWriter {
            path: path.to_path_buf(),
            tmp,
            out: Some(BufWriter::with_capacity(1 << 20, f)),
            header,
            written: 0,
            buf: Vec::with_capacity(header.record_bytes()),
        };
        let mut head = header.to_bytes().to_vec();
        for &t in tokens {
            head.extend_from_slice(&(t as i32).to_le_bytes());
        }
        w.write_raw(&head)?;
        Ok(w)
    }

    fn write_raw(&mut self, bytes: &[u8]) -> Result<()> {
        let out = self.out.as_mut().expect("writer used after finish");
        out.write_all(bytes)
            .with_context(|| format!("{}: write error", self.tmp.display()))
    }

    pub fn write_record(&mut self, rec: &BaseRecord) -> Result<()> {
        if rec.n_vocab() != self.header.n_vocab as usize {
            bail!(
                "{}: record has {} log-probs, the file's vocabulary is {}",
                self.path.display(),
                rec.n_vocab(),
                self.header.n_vocab
            );
        }
        let total = self.header.records_per_chunk() * self.header.n_chunk as usize;
        if self.written >= total {
            bail!("{}: more than {total} records written", self.path.display());
        }
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        rec.write_bytes(&mut buf);
        let r = self.write_raw(&buf);
        self.buf = buf;
        r?;
        self.written += 1;
        Ok(())
    }

    /// Check every record was written, fsync, rename over the destination.
    pub fn finish(mut self) -> Result<()> {
        let total = self.header.records_per_chunk() * self.header.n_chunk as usize;
        if self.written != total {
            bail!(
                "{}: {} of {total} records written",
                self.path.display(),
                self.written
            );
        }
        let out = self.out.take().expect("finish called twice");
        let f = out
            .into_inner()
            .map_err(|e| anyhow::anyhow!("{}: write error: {}", self.tmp.display(), e.error()))?;
        f.sync_all()
            .with_context(|| format!("{}: fsync", self.tmp.display()))?;
        std::fs::rename(&self.tmp, &self.path).with_context(|| {
            format!(
                "cannot rename {} to {}",
                self.tmp.display(),
                self.path.display()
            )
        })?;
        Ok(())
    }
}

impl Drop for BaseFileWriter {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
