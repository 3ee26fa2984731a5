//! GPU backend on wgpu: every graph op as a WGSL compute kernel (one `kernels/<op>.rs` per
//! `shaders/<op>.wgsl`). Each op is recorded and submitted on its own; queue order keeps ops,
//! uploads and buffer reuse from the pool in program order.

pub mod device;
pub mod kernels;
pub mod pool;

use crate::backend::{
    AttnParams, Backend, DeviceMemory, RopeParams, StatsHost, StatsRows, WeightSource,
};
use crate::gguf::GgmlType;
use anyhow::{bail, Result};
use device::{DeviceSpec, GpuDevice};
use pool::{Pool, PooledBuffer};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use wgpu::util::DeviceExt;

/// Which matmul kernel runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatmulVariant {
    /// Register-blocked, no barriers (CPU adapters such as llvmpipe).
    Register,
    /// SGEMM tiles in workgroup memory (hardware GPUs): the few-token tile for up to
    /// `matmul_sgemm::FEW_TOKENS` tokens, the many-token tile above. Both sum each output in the
    /// same order, so the choice never changes bits.
    Tiled,
    /// The many-token SGEMM tile whatever the token count (conformance, tests, benches).
    TiledMany,
    /// The few-token SGEMM tile whatever the token count.
    TiledFew,
}

impl MatmulVariant {
    pub fn name(self) -> &'static str {
        match self {
            MatmulVariant::Register => "register",
            MatmulVariant::Tiled => "tiled",
            MatmulVariant::TiledMany => "tiled-many",
            MatmulVariant::TiledFew => "tiled-few",
        }
    }
}

/// Device, queue, pool and compiled pipelines shared by the kernels.
pub struct Ctx {
    pub dev: GpuDevice,
    pub pool: Arc<Pool>,
    pipelines: Mutex<HashMap<String, Arc<wgpu::ComputePipeline>>>,
    /// Bytes copied back to the host since the last `reset_counters`.
    bytes_read: std::sync::atomic::AtomicU64,
}

/// What a `Ctx` did since its last `reset_counters` (a minimal stand-in, readbacks only, until
/// the recording layer's full counters land).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Bytes read back to the host.
    pub bytes_read: u64,
}

impl Ctx {
    /// The pipeline for `key`, compiled from `source()` on first use.
    pub fn pipeline(
        &self,
        key: &str,
        source: impl FnOnce() -> String,
    ) -> Arc<wgpu::ComputePipeline> {
        let mut map = self.pipelines.lock().expect("pipeline cache");
        if let Some(p) = map.get(key) {
            return p.clone();
        }
        let src = source();
        let module = self
            .dev
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(key),
                source: wgpu::ShaderSource::Wgsl(src.into()),
            });
        let p = Arc::new(self.dev.device.create_compute_pipeline(
            &wgpu::ComputePipelineDescriptor {
                label: Some(key),
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            },
        ));
        map.insert(key.to_string(), p.clone());
        p
    }

    /// Bind `params` (uniform, binding 0) and whole `buffers` (bindings 1..), dispatch, submit.
    pub fn dispatch(
        &self,
        pipe: &wgpu::ComputePipeline,
        params: &[u32],
        buffers: &[&wgpu::Buffer],
        groups: [u32; 3],
    ) {
        let maxb = self.dev.limits.max_storage_buffer_binding_size as u64;
        let ranges: Vec<(&wgpu::Buffer, u64, u64)> = buffers
            .iter()
            .map(|b| {
                assert!(
                    b.size() <= maxb,
                    "a {}-byte tensor exceeds the adapter's storage binding limit ({maxb} bytes): use fewer tokens per batch",
                    b.size()
                );
                (*b, 0, b.size())
            })
            .collect();
        self.dispatch_ranges(pipe, params, &ranges, groups)
    }

    /// As `dispatch`, binding (buffer, byte offset, byte size) ranges.
    pub fn dispatch_ranges(
        &self,
        pipe: &wgpu::ComputePipeline,
        params: &[u32],
        buffers: &[(&wgpu::Buffer, u64, u64)],
        groups: [u32; 3],
    ) {
        let d = &self.dev.device;
        let mut words = params.to_vec();
        while words.len() % 4 != 0 || words.is_empty() {
            words.push(0);
        }
        let ubuf = d.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("params"),
            contents: bytemuck::cast_slice(&words),
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: ubuf.as_entire_binding(),
        }];
        for (i, &(b, offset, size)) in buffers.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry {
                binding: i as u32 + 1,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: b,
                    offset,
                    size: wgpu::BufferSize::new(size),
                }),
            });
        }
        let bg = d.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipe.get_bind_group_layout(0),
            entries: &entries,
        });
        let mut enc = d.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: None,
                timestamp_writes: None,
            });
            pass.set_pipeline(pipe);
            pass.set_bind_group(0, &bg, &[]);
            pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
        }
        self.dev.queue.submit([enc.finish()]);
    }

    /// Workgroups (of 64) covering `n` elements, folded into y past 65535 (kernels index
    /// `gid.y * 65536 + gid.x`).
    pub fn groups_1d(n: usize) -> [u32; 3] {
        let g = n.div_ceil(64).max(1);
        if g <= 65535 {
            [g as u32, 1, 1]
        } else {
            [1024, n.div_ceil(65536) as u32, 1]
        }
    }

    /// A storage buffer holding `data` (at least 4 bytes).
    pub fn upload_u32(&self, data: &[u32]) -> PooledBuffer {
        let b = self.pool.get((data.len() * 4).max(4) as u64);
        if !data.is_empty() {
            self.dev
                .queue
                .write_buffer(b.buffer(), 0, bytemuck::cast_slice(data));
        }
        b
    }

    pub fn upload_f32(&self, data: &[f32]) -> PooledBuffer {
        let b = self.pool.get((data.len() * 4).max(4) as u64);
        if !data.is_empty() {
            self.dev
                .queue
                .write_buffer(b.buffer(), 0, bytemuck::cast_slice(data));
        }
        b
    }

    /// What was done since the last `reset_counters`.
    pub fn counters(&self) -> Counters {
        Counters {
            bytes_read: self.bytes_read.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    pub fn reset_counters(&self) {
        self.bytes_read
            .store(0, std::sync::atomic::Ordering::Relaxed);
    }

    /// Copy the first `n_words` words of `buf` back to the host (waits for the queue).
    pub fn read_u32(&self, buf: &wgpu::Buffer, n_words: usize) -> Vec<u32> {
        if n_words == 0 {
            return Vec::new();
        }
        let bytes = (n_words * 4) as u64;
        self.bytes_read
            .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
        let d = &self.dev.device;
        let staging = d.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = d.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        enc.copy_buffer_to_buffer(buf, 0, &staging, 0, bytes);
        self.dev.queue.submit([enc.finish()]);
        let (tx, rx) = std::sync::mpsc::channel();
        staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        d.poll(wgpu::PollType::wait_indefinitely())
            .expect("GPU device lost while waiting for results");
        rx.recv()
            .expect("map callback")
            .expect("mapping the readback buffer failed");
        let out = {
            let view = staging
                .slice(..)
                .get_mapped_range()
                .expect("mapped readback range");
            bytemuck::cast_slice::<u8, u32>(&view).to_vec()
        };
        staging.unmap();
        out
    }
}

/// An f32 activation matrix `[rows, cols]` on the device.
pub struct GpuTensor {
    pub(crate) buf: PooledBuffer,
    pub rows: usize,
    pub cols: usize,
}

impl GpuTensor {
    pub fn buffer(&self) -> &wgpu::Buffer {
        self.buf.buffer()
    }
}

/// Rows `row0..row0 + rows` of a weight in one buffer no larger than the adapter lets a shader
/// bind (128 MiB on lavapipe); each slice starts at a row so offsets inside it are row-relative.
pub struct WeightSlice {
    pub buf: wgpu::Buffer,
    pub row0: usize,
    pub rows: usize,
}

/// A weight matrix on the device: the GGUF bytes as they are, dequantized by the kernels.
pub struct GpuWeight {
    pub name: String,
    pub ggml_type: GgmlType,
    pub ne0: usize,
    pub ne1: usize,
    pub row_bytes: usize,
    pub slices: Vec<WeightSlice>,
    pool: Arc<Pool>,
}

impl Drop for GpuWeight {
    fn drop(&mut self) {
        for s in &self.slices {
            self.pool.note_free(s.buf.size());
        }
    }
}

/// Statistics of `n_slots` slots on the device: slot s holds Σx² (`n_cols` f32) then Σx at word
/// `s · 2 · n_cols` (shaders/mm_stats.wgsl); the row counts are known on the host.
pub struct GpuStats {
    pub(crate) buf: PooledBuffer,
    pub n_cols: usize,
    pub n_slots: usize,
    pub(crate) counts: Vec<u64>,
}

pub struct GpuBackend {
    pub ctx: Ctx,
    pub matmul_variant: MatmulVariant,
    /// Statistics dispatches and readbacks so far.
    pub stats_counts: kernels::mm_stats::StatsCounts,
}

impl GpuBackend {
    /// Open the adapter `--device` names.
    pub fn new(device: &str) -> Result<GpuBackend> {
        let spec = DeviceSpec::parse(device)?;
        Ok(Self::from_device(GpuDevice::open(spec)?))
    }

    pub fn from_device(dev: GpuDevice) -> GpuBackend {
        let variant = if dev.is_cpu_adapter() {
            MatmulVariant::Register
        } else {
            MatmulVariant::Tiled
        };
        let pool = Pool::new(
            dev.device.clone(),
            dev.limits.max_storage_buffer_binding_size as u64,
        );
        GpuBackend {
            ctx: Ctx {
                dev,
                pool,
                pipelines: Mutex::new(HashMap::new()),
                bytes_read: Default::default(),
            },
            matmul_variant: variant,
            stats_counts: Default::default(),
        }
    }

    /// Whether the adapter is a software one (lavapipe, WARP, SwiftShader).
    pub fn is_cpu_adapter(&self) -> bool {
        self.ctx.dev.is_cpu_adapter()
    }

    pub fn adapter_name(&self) -> String {
        let i = &self.ctx.dev.info;
        format!("{} ({:?}, {})", i.name, i.backend, i.driver_info)
    }

    /// Upload raw weight bytes (`ne1` rows of `ne0` elements of `t`).
    pub fn weight_from_bytes(
        &self,
        name: &str,
        t: GgmlType,
        ne0: usize,
        ne1: usize,
        bytes: &[u8],
    ) -> Result<GpuWeight> {
        if kernels::dq_helper(t).is_none() {
            bail!("tensor {name}: type {t} is not supported by the GPU kernels; use --device cpu");
        }
        let row_bytes = t.row_bytes(ne0 as u64).unwrap_or(0) as usize;
        if ne0 % t.block_size() != 0 || row_bytes == 0 {
            bail!("tensor {name}: row length {ne0} is not a multiple of {t}'s block size");
        }
        if bytes.len() < row_bytes * ne1 {
            bail!(
                "tensor {name}: {} bytes, expected {} for {ne1} rows of {ne0} {t}",
                bytes.len(),
                row_bytes * ne1
            );
        }
        let lim = &self.ctx.dev.limits;
        // Leave 8 bytes: rd32u may read one word past the last block.
        let max_bytes = (lim.max_storage_buffer_binding_size as u64).min(lim.max_buffer_size) - 8;
        let rows_per = (max_bytes as usize / row_bytes).max(1);
        if row_bytes as u64 > max_bytes {
            bail!("tensor {name}: one row ({row_bytes} bytes) exceeds the adapter's binding limit");
        }
        let mut slices = Vec::new();
        let mut row0 = 0;
        while row0 < ne1.max(1) {
            let rows = rows_per.min(ne1 - row0);
            let src = &bytes[row0 * row_bytes..(row0 + rows) * row_bytes];
            let mut padded = src.to_vec();
            padded.resize(src.len().div_ceil(4) * 4 + 8, 0);
            self.ctx.pool.reserve(padded.len() as u64);
            let buf = self
                .ctx
                .dev
                .device
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some(name),
                    contents: &padded,
                    usage: wgpu::BufferUsages::STORAGE,
                });
            self.ctx.pool.note_alloc(buf.size());
            slices.push(WeightSlice { buf, row0, rows });
            row0 += rows;
            if ne1 == 0 {
                break;
            }
        }
        Ok(GpuWeight {
            name: name.to_string(),
            ggml_type: t,
            ne0,
            ne1,
            row_bytes,
            slices,
            pool: self.ctx.pool.clone(),
        })
    }

    fn alloc(&self, rows: usize, cols: usize) -> GpuTensor {
        let bytes = (rows * cols * 4).max(4) as u64;
        let maxb = self.ctx.dev.limits.max_buffer_size;
        assert!(
            bytes <= maxb,
            "activation [{rows}, {cols}] needs {bytes} bytes, over the adapter's buffer limit {maxb}: use fewer tokens per batch"
        );
        GpuTensor {
            buf: self.ctx.pool.get(bytes),
            rows,
            cols,
        }
    }

    /// Attention with an explicit kernel (conformance checks both on every adapter).
    pub fn attention_with(
        &self,
        q: &GpuTensor,
        k: &GpuTensor,
        v: &GpuTensor,
        p: &AttnParams,
        variant: kernels::attention::AttentionVariant,
    ) -> GpuTensor {
        let o = self.alloc(q.rows, q.cols);
        kernels::attention::run_with(&self.ctx, variant, q, k, v, p, &o);
        o
    }

    /// y = x·Wᵀ with an explicit kernel variant (the conformance suite checks both).
    pub fn matmul_with(&self, x: &GpuTensor, w: &GpuWeight, variant: MatmulVariant) -> GpuTensor {
        assert_eq!(
            x.cols, w.ne0,
            "matmul: x has {} columns, weight {} has rows of {}",
            x.cols, w.name, w.ne0
        );
        let y = self.alloc(x.rows, w.ne1);
        kernels::matmul::run(&self.ctx, variant, x, w, &y);
        y
    }

    /// Wait until every submitted op has finished (benches).
    pub fn sync(&self) {
        self.ctx
            .dev
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .expect("GPU device lost");
    }

    /// Device bytes allocated now and at peak.
    pub fn memory(&self) -> (u64, u64) {
        (self.ctx.pool.allocated_bytes(), self.ctx.pool.peak_bytes())
    }
}

impl Backend for GpuBackend {
    type Tensor = GpuTensor;
    type Weight = GpuWeight;
    type Stats = GpuStats;

    fn name(&self) -> String {
        format!("gpu: {}", self.adapter_name())
    }

    fn weight(&self, src: &WeightSource) -> Result<GpuWeight> {
        self.weight_from_bytes(&src.name, src.ggml_type, src.ne0, src.ne1, src.bytes())
    }

    fn upload(&self, data: &[f32], rows: usize, cols: usize) -> GpuTensor {
        assert_eq!(data.len(), rows * cols, "upload: data length vs shape");
        let t = self.alloc(rows, cols);
        if !data.is_empty() {
            self.ctx
                .dev
                .queue
                .write_buffer(t.buffer(), 0, bytemuck::cast_slice(data));
        }
        t
    }

    fn download(&self, t: &GpuTensor) -> Vec<f32> {
        let w = self.ctx.read_u32(t.buffer(), t.rows * t.cols);
        bytemuck::cast_slice(&w).to_vec()
    }

    fn shape(&self, t: &GpuTensor) -> (usize, usize) {
        (t.rows, t.cols)
    }

    fn get_rows(&self, w: &GpuWeight, ids: &[u32]) -> GpuTensor {
        let y = self.alloc(ids.len(), w.ne0);
        kernels::get_rows::run(&self.ctx, w, ids, &y);
        y
    }

    fn rms_norm(&self, x: &GpuTensor, w: &GpuWeight, eps: f32) -> GpuTensor {
        let y = self.alloc(x.rows, x.cols);
        kernels::rms_norm::run(&self.ctx, x, w, eps, &y);
        y
    }

    fn matmul(&self, x: &GpuTensor, w: &GpuWeight, stats: Option<&mut GpuStats>) -> GpuTensor {
        if let Some(s) = stats {
            let all = StatsRows {
                row0: 0,
                n: x.rows,
                slot: 0,
            };
            self.stats_add(x, &[all], s);
        }
        self.matmul_with(x, w, self.matmul_variant)
    }

    fn rope(
        &self,
        x: &mut GpuTensor,
        n_head: usize,
        head_dim: usize,
        seq_len: usize,
        p: &RopeParams,
    ) {
        kernels::rope::run(&self.ctx, x, n_head, head_dim, seq_len, p);
    }

    fn attention(&self, q: &GpuTensor, k: &GpuTensor, v: &GpuTensor, p: &AttnParams) -> GpuTensor {
        let variant = kernels::attention::AttentionVariant::for_adapter(&self.ctx);
        self.attention_with(q, k, v, p, variant)
    }

    fn silu_mul(&self, g: &GpuTensor, u: &GpuTensor) -> GpuTensor {
        let y = self.alloc(g.rows, g.cols);
        kernels::silu_mul::run(&self.ctx, g, u, &y);
        y
    }

    fn add_bias(&self, x: &mut GpuTensor, bias: &GpuWeight) {
        kernels::add_bias::run(&self.ctx, x, bias);
    }

    fn add_assign(&self, a: &mut GpuTensor, b: &GpuTensor) {
        kernels::add::run(&self.ctx, a, b);
    }

    fn gather_rows(&self, x: &GpuTensor, idx: &[u32]) -> GpuTensor {
        let y = self.alloc(idx.len(), x.cols);
        kernels::gather_rows::run(&self.ctx, x, idx, &y);
        y
    }

    fn scatter_add_scaled(&self, dst: &mut GpuTensor, src: &GpuTensor, idx: &[u32], scale: &[f32]) {
        kernels::scatter_add::run(&self.ctx, dst, src, idx, scale);
    }

    fn stats_add(&self, x: &GpuTensor, runs: &[StatsRows], s: &mut GpuStats) {
        kernels::mm_stats::run(&self.ctx, &self.stats_counts, x, runs, s);
    }

    fn stats_new(&self, n_cols: usize, n_slots: usize) -> GpuStats {
        let buf = self.ctx.upload_u32(&vec![0u32; 2 * n_cols * n_slots]);
        GpuStats {
            buf,
            n_cols,
            n_slots,
            counts: vec![0; n_slots],
        }
    }

    fn token_nlls(&self, logits: &GpuTensor, targets: &[u32]) -> Vec<f64> {
        kernels::nll::run(&self.ctx, logits, targets)
    }

    fn stats_read(&self, sets: &[&GpuStats]) -> Vec<Vec<StatsHost>> {
        let words = kernels::mm_stats::read_all(&self.ctx, &self.stats_counts, sets);
        let f = |w: &[u32]| w.iter().map(|&b| f32::from_bits(b)).collect::<Vec<f32>>();
        sets.iter()
            .zip(&words)
            .map(|(s, w)| {
                let k = s.n_cols;
                (0..s.n_slots)
                    .map(|j| {
                        let at = &w[j * 2 * k..(j + 1) * 2 * k];
                        StatsHost {
                            sum2: f(&at[..k]),
                            sum: f(&at[k..]),
                            count: s.counts[j],
                        }
                    })
                    .collect()
            })
            .collect()
    }

    fn device_memory(&self) -> Option<DeviceMemory> {
        let lim = &self.ctx.dev.limits;
        Some(DeviceMemory {
            max_binding_bytes: lim.max_storage_buffer_binding_size.min(lim.max_buffer_size),
            // Vulkan's VK_EXT_memory_budget (90% of it); other backends report nothing.
            driver_budget: device::vram_info(&self.ctx.dev.adapter).map(|v| v.default_budget()),
        })
    }

    fn set_memory_limit(&self, bytes: Option<u64>) {
        self.ctx.pool.set_limit(bytes);
    }
}
