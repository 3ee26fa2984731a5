//! GPU backend on wgpu: every graph op as a WGSL compute kernel (one `kernels/<op>.rs` per
//! `shaders/<op>.wgsl`). Ops, uploads and copies are recorded into one pending command encoder
//! and submitted together (`record`), in program order, so buffer reuse from the pool is safe.

pub mod device;
pub mod kernels;
pub mod pool;
pub mod profile;
pub mod record;
pub mod spirv;

use crate::backend::{
    AttnParams, Backend, DeviceMemory, RopeParams, StatsHost, StatsRows, WeightSource,
};
use crate::gguf::GgmlType;
use anyhow::{bail, Result};
use device::{DeviceSpec, GpuDevice};
use pool::{Pool, PooledBuffer};
pub use profile::{GpuProfile, OpClass};
pub use record::Counters;
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

/// Device, queue, pool, compiled pipelines and the pending command recording shared by the
/// kernels. Kernels record through `dispatch`/`dispatch_ranges`/`dispatch_entries`/`encode`;
/// uploads and readbacks go through `write`/`upload_*`/`read_*` so the recording stays in
/// program order (see `record`).
pub struct Ctx {
    pub dev: GpuDevice,
    pub pool: Arc<Pool>,
    pipelines: Mutex<HashMap<String, Arc<wgpu::ComputePipeline>>>,
    /// Each pipeline's key, for the profile's kernel names (read only while profiling).
    kernel_names: Mutex<HashMap<wgpu::ComputePipeline, Arc<str>>>,
    pending: Mutex<record::Pending>,
    /// Parameters of the pending dispatches, one `PARAM_SLOT_BYTES` slot each.
    ring: wgpu::Buffer,
    bind_groups: Mutex<record::BindCache>,
    /// Constant tables (RoPE cos/sin) by key, oldest first.
    tables: Mutex<Vec<(String, wgpu::Buffer)>>,
}

/// Constant tables kept on the device (one per RoPE shape in use).
const MAX_TABLES: usize = 8;

impl Ctx {
    pub fn new(dev: GpuDevice, pool: Arc<Pool>) -> Ctx {
        let ring = dev.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("params ring"),
            size: record::MAX_PENDING_DISPATCHES as u64 * record::PARAM_SLOT_BYTES,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Ctx {
            dev,
            pool,
            pipelines: Mutex::new(HashMap::new()),
            kernel_names: Mutex::new(HashMap::new()),
            pending: Mutex::new(record::Pending::default()),
            ring,
            bind_groups: Mutex::new(record::BindCache::new()),
            tables: Mutex::new(Vec::new()),
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, record::Pending> {
        self.pending.lock().expect("command recording")
    }

    /// The pipeline for `key`, compiled from `source()` on first use. Its layout comes from the
    /// shader's declarations, with the parameters (binding 0) at a dynamic offset into the ring;
    /// only pipelines made here can be dispatched.
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
        let d = &self.dev.device;
        let entries = record::layout_entries(key, &src);
        let bgl = d.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some(key),
            entries: &entries,
        });
        let layout = d.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(key),
            bind_group_layouts: &[Some(&bgl)],
            immediate_size: 0,
        });
        let module = d.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(key),
            source: wgpu::ShaderSource::Wgsl(src.into()),
        });
        let p = Arc::new(d.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(key),
            layout: Some(&layout),
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        }));
        map.insert(key.to_string(), p.clone());
        self.name_kernel(&p, key);
        p
    }

    /// The pipeline for `key`, built by `build` on first use (kernels that create their own
    /// module and layout: the SPIR-V passthrough of `spirv.rs`).
    pub fn pipeline_with(
        &self,
        key: &str,
        build: impl FnOnce(&wgpu::Device) -> wgpu::ComputePipeline,
    ) -> Arc<wgpu::ComputePipeline> {
        let mut map = self.pipelines.lock().expect("pipeline cache");
        if let Some(p) = map.get(key) {
            return p.clone();
        }
        let p = Arc::new(build(&self.dev.device));
        map.insert(key.to_string(), p.clone());
        self.name_kernel(&p, key);
        p
    }

    fn name_kernel(&self, p: &wgpu::ComputePipeline, key: &str) {
        self.kernel_names
            .lock()
            .expect("kernel names")
            .insert(p.clone(), key.into());
    }

    /// The key `pipe` was made under ("?" for a pipeline not made here).
    fn kernel_name(&self, pipe: &wgpu::ComputePipeline) -> Arc<str> {
        self.kernel_names
            .lock()
            .expect("kernel names")
            .get(pipe)
            .cloned()
            .unwrap_or_else(|| "?".into())
    }

    /// Record a dispatch binding `params` (uniform, binding 0) and whole `buffers` (bindings
    /// 1..). Callers keep tensors within the binding limit (the planner sizes batches so; see
    /// `plan::plan_run`).
    pub fn dispatch(
        &self,
        pipe: &wgpu::ComputePipeline,
        params: &[u32],
        buffers: &[&wgpu::Buffer],
        groups: [u32; 3],
    ) {
        let ranges: Vec<(&wgpu::Buffer, u64, u64)> =
            buffers.iter().map(|b| (*b, 0, b.size())).collect();
        self.dispatch_ranges(pipe, params, &ranges, groups)
    }

    /// As `dispatch`, binding (buffer, byte offset, byte size) ranges. The bind group is cached
    /// by pipeline and ranges.
    pub fn dispatch_ranges(
        &self,
        pipe: &wgpu::ComputePipeline,
        params: &[u32],
        buffers: &[(&wgpu::Buffer, u64, u64)],
        groups: [u32; 3],
    ) {
        let maxb = self.dev.limits.max_storage_buffer_binding_size;
        for &(b, _, size) in buffers {
            // An invariant, not an input check: the planner keeps every tensor under the limit
            // (plan::plan_run) and kernels bind larger ones in ranges.
            assert!(
                size <= maxb,
                "internal: a {size}-byte binding of a {}-byte buffer exceeds the adapter's \
                 max_storage_buffer_binding_size ({maxb}); use a smaller -b or -c",
                b.size()
            );
        }
        let key: record::BindKey = (
            pipe.clone(),
            buffers.iter().map(|&(b, o, s)| (b.clone(), o, s)).collect(),
        );
        let (bg, created) = {
            let mut cache = self.bind_groups.lock().expect("bind group cache");
            cache.refresh(self.pool.generation());
            match cache.map.get(&key) {
                Some(bg) => (bg.clone(), false),
                None => {
                    let entries: Vec<wgpu::BindGroupEntry> = buffers
                        .iter()
                        .enumerate()
                        .map(|(i, &(b, offset, size))| wgpu::BindGroupEntry {
                            binding: i as u32 + 1,
                            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                                buffer: b,
                                offset,
                                size: wgpu::BufferSize::new(size),
                            }),
                        })
                        .collect();
                    let bg = self.bind_group(pipe, &entries);
                    cache.map.insert(key, bg.clone());
                    (bg, true)
                }
            }
        };
        self.record_dispatch(pipe, params, &bg, created, groups);
    }

    /// Record a dispatch with explicit bind group `entries` for bindings 1.. (textures; not
    /// cached).
    pub fn dispatch_entries(
        &self,
        pipe: &wgpu::ComputePipeline,
        params: &[u32],
        entries: &[wgpu::BindGroupEntry],
        groups: [u32; 3],
    ) {
        let bg = self.bind_group(pipe, entries);
        self.record_dispatch(pipe, params, &bg, true, groups);
    }

    fn bind_group(
        &self,
        pipe: &wgpu::ComputePipeline,
        entries: &[wgpu::BindGroupEntry],
    ) -> wgpu::BindGroup {
        let mut all = vec![record::ring_entry(&self.ring)];
        all.extend(entries.iter().cloned());
        self.dev
            .device
            .create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &pipe.get_bind_group_layout(0),
                entries: &all,
            })
    }

    fn record_dispatch(
        &self,
        pipe: &wgpu::ComputePipeline,
        params: &[u32],
        bg: &wgpu::BindGroup,
        new_bind_group: bool,
        groups: [u32; 3],
    ) {
        let maxg = self.dev.limits.max_compute_workgroups_per_dimension;
        // An invariant: kernels fold or split their grids (`groups_1d`, `groups_rows`).
        assert!(
            groups.iter().all(|&g| g <= maxg),
            "internal: workgroup grid {groups:?} exceeds the adapter's \
             max_compute_workgroups_per_dimension ({maxg})"
        );
        let mut p = self.pending();
        if p.full() {
            p.flush(&self.dev.queue, &self.ring);
        }
        let offset = p.push_params(params);
        p.n_dispatch += 1;
        p.counters.dispatches += 1;
        p.counters.bind_groups += u64::from(new_bind_group);
        // Profiling: a timed pass of its own (ended when dropped); else the shared open pass.
        if let Some(mut pass) = p.timed_pass(&self.dev.device, || self.kernel_name(pipe)) {
            pass.set_pipeline(pipe);
            pass.set_bind_group(0, bg, &[offset]);
            pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
            return;
        }
        let pass = p.pass(&self.dev.device);
        pass.set_pipeline(pipe);
        pass.set_bind_group(0, bg, &[offset]);
        pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
    }

    /// Record commands outside a compute pass (copies), in order with the dispatches.
    pub fn encode<R>(&self, f: impl FnOnce(&mut wgpu::CommandEncoder) -> R) -> R {
        let mut p = self.pending();
        f(p.encoder(&self.dev.device))
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

    /// `x` workgroups by one per row, rows folded into z past 65535 (kernels take row
    /// `gid.z * 65535 + gid.y` and skip rows past the end).
    pub fn groups_rows(x: usize, rows: usize) -> [u32; 3] {
        [
            x.max(1) as u32,
            rows.clamp(1, 65535) as u32,
            rows.div_ceil(65535).max(1) as u32,
        ]
    }

    /// Record a copy of `data` into `buf` at byte `offset` (from a fresh staging buffer, so it
    /// takes its place in the recording: earlier commands see the old contents, later ones the
    /// new).
    pub fn write(&self, buf: &wgpu::Buffer, offset: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        assert!(
            data.len().is_multiple_of(4) && offset.is_multiple_of(4),
            "uploads are whole words"
        );
        let staging = self
            .dev
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("upload"),
                contents: data,
                usage: wgpu::BufferUsages::COPY_SRC,
            });
        let mut p = self.pending();
        p.counters.uploads += 1;
        p.counters.bytes_uploaded += data.len() as u64;
        p.encoder(&self.dev.device).copy_buffer_to_buffer(
            &staging,
            0,
            buf,
            offset,
            data.len() as u64,
        );
    }

    /// A storage buffer holding `data` (at least 4 bytes).
    pub fn upload_u32(&self, data: &[u32]) -> PooledBuffer {
        let b = self.pool.get((data.len() * 4).max(4) as u64);
        self.write(b.buffer(), 0, bytemuck::cast_slice(data));
        b
    }

    pub fn upload_f32(&self, data: &[f32]) -> PooledBuffer {
        let b = self.pool.get((data.len() * 4).max(4) as u64);
        self.write(b.buffer(), 0, bytemuck::cast_slice(data));
        b
    }

    /// A storage buffer of at least `bytes` bytes, all zero (a recorded clear, no upload).
    pub fn zeroed(&self, bytes: u64) -> PooledBuffer {
        let b = self.pool.get(bytes.max(4));
        self.encode(|enc| enc.clear_buffer(b.buffer(), 0, None));
        b
    }

    /// A constant f32 table kept on the device under `key` (built by `build` the first time;
    /// the few most recent keys are kept).
    pub fn table_f32(&self, key: &str, build: impl FnOnce() -> Vec<f32>) -> wgpu::Buffer {
        self.table_u32(key, || build().into_iter().map(f32::to_bits).collect())
    }

    /// As `table_f32`, for a table of u32 words (the IQ types' grids and lattice tables).
    pub fn table_u32(&self, key: &str, build: impl FnOnce() -> Vec<u32>) -> wgpu::Buffer {
        let mut tables = self.tables.lock().expect("tables");
        if let Some((_, b)) = tables.iter().find(|(k, _)| k == key) {
            return b.clone();
        }
        let mut data = build();
        if data.is_empty() {
            data.push(0);
        }
        // Created initialised (mapped at creation): nothing is queued.
        let buf = self
            .dev
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(key),
                contents: bytemuck::cast_slice(&data),
                usage: wgpu::BufferUsages::STORAGE,
            });
        self.pool.note_alloc(buf.size());
        {
            let mut p = self.pending();
            p.counters.uploads += 1;
            p.counters.bytes_uploaded += buf.size();
        }
        if tables.len() >= MAX_TABLES {
            let (_, old) = tables.remove(0);
            self.pool.note_free(old.size());
        }
        tables.push((key.to_string(), buf.clone()));
        buf
    }

    /// Submit what is recorded (the GPU starts on it; nothing waits).
    pub fn flush(&self) {
        self.pending().flush(&self.dev.queue, &self.ring);
    }

    /// Submit what is recorded and wait until the GPU has finished it.
    pub fn sync(&self) {
        self.flush();
        self.dev
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .expect("GPU device lost");
        self.harvest_profile();
    }

    /// Read the timestamps whose mappings completed (profiling only).
    fn harvest_profile(&self) {
        if let Some(prof) = self.pending().profiler.as_mut() {
            prof.harvest();
        }
    }

    /// Whether this device can time dispatches (`start_profiling`); Err says why not.
    pub fn profiling_support(&self) -> std::result::Result<(), String> {
        if self.dev.features.contains(wgpu::Features::TIMESTAMP_QUERY) {
            Ok(())
        } else {
            Err(format!(
                "adapter {} does not offer timestamp-query (see `wquant devices`)",
                self.dev.info.name
            ))
        }
    }

    /// Start timing every dispatch from here on (an error where the device lacks timestamp
    /// queries; nothing if already started). What is recorded before is submitted first, so
    /// it is not timed. Each dispatch then runs in a compute pass of its own: same results and
    /// counters, but the GPU's work is serialized — profile a separate run, not a timed one.
    pub fn start_profiling(&self) -> Result<()> {
        if let Err(why) = self.profiling_support() {
            bail!("cannot time GPU dispatches: {why}");
        }
        let mut p = self.pending();
        if p.profiler.is_none() {
            p.flush(&self.dev.queue, &self.ring);
            p.profiler = Some(profile::Profiler::new(&self.dev.device, &self.dev.queue));
        }
        Ok(())
    }

    pub fn is_profiling(&self) -> bool {
        self.pending().profiler.is_some()
    }

    /// Submit what is recorded, wait for it, stop timing and return what was measured since
    /// `start_profiling` (None if it was not started).
    pub fn finish_profiling(&self) -> Option<GpuProfile> {
        self.sync();
        let mut prof = self.pending().profiler.take()?;
        prof.harvest();
        // Every mapping has completed after the wait; one that has not is counted as lost.
        let mut profile = std::mem::take(&mut prof.profile);
        profile.lost += prof.unread_dispatches();
        Some(profile)
    }

    /// Copy the first `n_words` words of `buf` back to the host (submits and waits).
    pub fn read_u32(&self, buf: &wgpu::Buffer, n_words: usize) -> Vec<u32> {
        self.read_many(&[(buf, 0, n_words)])
            .pop()
            .expect("one read")
    }

    /// Copy (buffer, byte offset, words) ranges back in one submit and one wait.
    pub fn read_many(&self, ranges: &[(&wgpu::Buffer, u64, usize)]) -> Vec<Vec<u32>> {
        let total: u64 = ranges.iter().map(|r| r.2 as u64 * 4).sum();
        if total == 0 {
            return ranges.iter().map(|_| Vec::new()).collect();
        }
        let d = &self.dev.device;
        let staging = d.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: total,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        {
            let mut p = self.pending();
            let enc = p.encoder(d);
            let mut at = 0;
            for &(b, offset, n) in ranges {
                let bytes = n as u64 * 4;
                if bytes > 0 {
                    enc.copy_buffer_to_buffer(b, offset, &staging, at, bytes);
                }
                at += bytes;
            }
            p.flush(&self.dev.queue, &self.ring);
            p.counters.readbacks += 1;
            p.counters.bytes_read += total;
        }
        let (tx, rx) = std::sync::mpsc::channel();
        staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        d.poll(wgpu::PollType::wait_indefinitely())
            .expect("GPU device lost while waiting for results");
        self.harvest_profile();
        rx.recv()
            .expect("map callback")
            .expect("mapping the readback buffer failed");
        let out = {
            let view = staging
                .slice(..)
                .get_mapped_range()
                .expect("mapped readback range");
            let words: &[u32] = bytemuck::cast_slice(&view);
            let mut at = 0;
            ranges
                .iter()
                .map(|r| {
                    let v = words[at..at + r.2].to_vec();
                    at += r.2;
                    v
                })
                .collect()
        };
        staging.unmap();
        out
    }

    /// Submit `cmd` (copies into staging buffers recorded in an encoder of its own) after
    /// everything recorded, in one submit, counted as one readback of `bytes`; the caller maps
    /// and waits.
    pub fn submit_readback(&self, cmd: wgpu::CommandBuffer, bytes: u64) {
        let mut p = self.pending();
        p.flush_with(&self.dev.queue, &self.ring, Some(cmd));
        p.counters.readbacks += 1;
        p.counters.bytes_read += bytes;
    }

    /// What was done since the last `reset_counters`.
    pub fn counters(&self) -> Counters {
        self.pending().counters
    }

    pub fn reset_counters(&self) {
        self.pending().counters = Counters::default();
    }

    /// Submit after at most `n` dispatches (clamped to 1..=`record::MAX_PENDING_DISPATCHES`;
    /// 1 is the one-submit-per-op behaviour, for comparisons).
    pub fn set_max_pending(&self, n: usize) {
        let mut p = self.pending();
        p.flush(&self.dev.queue, &self.ring);
        p.max_pending = n.clamp(1, record::MAX_PENDING_DISPATCHES);
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        if let Ok(mut p) = self.pending.lock() {
            p.flush(&self.dev.queue, &self.ring);
        }
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
    /// `--precision`: the matmul tiles' storage (`kernels::matmul_sgemm::TileElem`).
    pub precision: crate::backend::Precision,
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
            dev.limits.max_storage_buffer_binding_size,
        );
        GpuBackend {
            ctx: Ctx::new(dev, pool),
            matmul_variant: variant,
            precision: Default::default(),
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
        if !ne0.is_multiple_of(t.block_size()) || row_bytes == 0 {
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
        let max_bytes = lim.max_storage_buffer_binding_size.min(lim.max_buffer_size) - 8;
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
        // An invariant, not an input check: the planner (plan::plan_run) rejects a -c whose
        // activations or logits exceed the binding limit and sizes -b's batches under it.
        assert!(
            bytes <= maxb,
            "internal: activation [{rows}, {cols}] needs {bytes} bytes, over the adapter's \
             max_buffer_size ({maxb}); use a smaller -b or -c"
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

    /// Whether the device compiles f16 shader arithmetic and storage (`shader-f16`).
    pub fn has_shader_f16(&self) -> bool {
        self.ctx.dev.features.contains(wgpu::Features::SHADER_F16)
    }

    /// The matmul tiles' element for this backend's `precision`.
    pub fn tile_elem(&self) -> kernels::matmul_sgemm::TileElem {
        kernels::matmul_sgemm::TileElem::of(self.precision)
    }

    /// Set `--precision`: f16 needs `shader-f16` (an error naming the flag and the adapter).
    pub fn set_precision(&mut self, p: crate::backend::Precision) -> Result<()> {
        if p == crate::backend::Precision::F16 && !self.has_shader_f16() {
            bail!(
                "--precision f16: adapter {} does not offer shader-f16 (see `wquant devices`); \
                 use --precision f32",
                self.adapter_name()
            );
        }
        self.precision = p;
        Ok(())
    }

    /// y = x·Wᵀ with an explicit kernel variant (the conformance suite checks both).
    pub fn matmul_with(&self, x: &GpuTensor, w: &GpuWeight, variant: MatmulVariant) -> GpuTensor {
        self.matmul_with_elem(x, w, variant, self.tile_elem())
    }

    /// y = x·Wᵀ with an explicit kernel variant and tile element (conformance).
    pub fn matmul_with_elem(
        &self,
        x: &GpuTensor,
        w: &GpuWeight,
        variant: MatmulVariant,
        elem: kernels::matmul_sgemm::TileElem,
    ) -> GpuTensor {
        assert_eq!(
            x.cols, w.ne0,
            "matmul: x has {} columns, weight {} has rows of {}",
            x.cols, w.name, w.ne0
        );
        let y = self.alloc(x.rows, w.ne1);
        kernels::matmul::run(&self.ctx, variant, elem, x, w, &y);
        y
    }

    /// Submit what is recorded and wait until it has finished (benches).
    pub fn sync(&self) {
        self.ctx.sync();
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
        self.ctx.write(t.buffer(), 0, bytemuck::cast_slice(data));
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

    fn gelu_mul(&self, g: &GpuTensor, u: &GpuTensor) -> GpuTensor {
        let y = self.alloc(g.rows, g.cols);
        kernels::gelu_mul::run(&self.ctx, g, u, &y);
        y
    }

    fn scale(&self, x: &mut GpuTensor, s: f32) {
        kernels::scale::run(&self.ctx, x, s);
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

    fn gram_add(&self, x: &GpuTensor, row0: usize, n: usize, acc: &mut GpuTensor) {
        kernels::gram::run(&self.ctx, x, row0, n, acc);
    }

    fn stats_new(&self, n_cols: usize, n_slots: usize) -> GpuStats {
        // A recorded clear: no upload.
        let buf = self.ctx.zeroed((2 * n_cols * n_slots) as u64 * 4);
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
            max_rows: lim.max_compute_workgroups_per_dimension as u64,
        })
    }

    fn set_memory_limit(&self, bytes: Option<u64>) {
        self.ctx.pool.set_limit(bytes);
    }
}
