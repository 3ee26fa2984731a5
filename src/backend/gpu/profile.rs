//! Opt-in GPU time per dispatch from timestamp queries (`Ctx::start_profiling`), where the
//! device has `wgpu::Features::TIMESTAMP_QUERY` (requested at device creation when the adapter
//! offers it).
//!
//! While profiling, every dispatch is recorded in a compute pass of its own whose beginning and
//! end write a timestamp (`ComputePassTimestampWrites`) into slot pair `2i, 2i+1` of one query
//! set, `i` the dispatch's index in the pending recording. At each flush the pairs of that
//! recording are resolved and copied into a fresh staging buffer in the same submit; the buffer
//! is mapped after the submit and read (`harvest`) once a wait has passed (`Ctx::sync`, a
//! readback, `Ctx::finish_profiling`). The query set is reused by the next recording: its writes
//! come in a later submit, after this one's resolve.
//!
//! Off (the default) nothing of this exists: dispatches share one pass, no query set is made.
//! On, the work and its order are the same (same kernels, bind groups and flush points), so
//! results are identical; only the one-pass-per-dispatch recording serializes the GPU's work, so
//! profiled runs are for the split of time, never for throughput.

use super::record::MAX_PENDING_DISPATCHES;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

/// What a kernel is, for the time table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OpClass {
    /// Every matmul kernel (`matmul/*`, `matmul_sgemm/*`, `matmul_unrolled/*`).
    Matmul,
    /// `attention`, `attention_flash …`.
    Attention,
    /// Activation statistics: `mm_stats` (imatrix Σx², Σx) and `gram` (GPTQ's Σ x·xᵀ).
    Statistics,
    /// Everything else: norms, RoPE, element-wise ops, row gathers, NLL/KLD reductions,
    /// quantization kernels.
    Other,
}

impl OpClass {
    pub const ALL: [OpClass; 4] = [
        OpClass::Matmul,
        OpClass::Attention,
        OpClass::Statistics,
        OpClass::Other,
    ];

    /// The class of a kernel from its pipeline key (`Ctx::pipeline`'s first argument).
    pub fn of_kernel(key: &str) -> OpClass {
        let name = key.split(['/', ' ', '@']).next().unwrap_or("");
        match name {
            "matmul" | "matmul_sgemm" | "matmul_unrolled" => OpClass::Matmul,
            "attention" | "attention_flash" => OpClass::Attention,
            "mm_stats" | "gram" => OpClass::Statistics,
            _ => OpClass::Other,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            OpClass::Matmul => "matmul",
            OpClass::Attention => "attention",
            OpClass::Statistics => "statistics",
            OpClass::Other => "other",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Dispatches and their summed GPU nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timed {
    pub dispatches: u64,
    pub ns: u64,
}

impl Timed {
    fn add(&mut self, ns: u64) {
        self.dispatches += 1;
        self.ns += ns;
    }
}

/// One timed dispatch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DispatchTime {
    /// The pipeline key (`Ctx::pipeline`), "?" for a pipeline not made by the context.
    pub kernel: Arc<str>,
    /// End minus beginning timestamp of its pass, in ns (0 where the end reads earlier).
    pub ns: u64,
}

/// Every dispatch kept in `GpuProfile::log` up to this many (the totals go on beyond).
pub const MAX_LOGGED_DISPATCHES: usize = 1 << 20;

/// What profiling measured between `Ctx::start_profiling` and `Ctx::finish_profiling`.
#[derive(Clone, Debug, Default)]
pub struct GpuProfile {
    /// Per `OpClass` (in `OpClass::ALL` order), summed as the timestamps are read.
    pub classes: [Timed; 4],
    /// Per kernel (pipeline key).
    pub kernels: BTreeMap<String, Timed>,
    /// The timed dispatches in recording order (the first `MAX_LOGGED_DISPATCHES`).
    pub log: Vec<DispatchTime>,
    /// Dispatches whose timestamps could not be read back (a failed mapping): not in any total.
    pub lost: u64,
    /// `queue.get_timestamp_period()`: nanoseconds per timestamp tick.
    pub period_ns: f32,
}

impl GpuProfile {
    pub fn class(&self, c: OpClass) -> Timed {
        self.classes[c.index()]
    }

    /// Timed dispatches and their GPU ns over every class.
    pub fn total(&self) -> Timed {
        self.classes.iter().fold(Timed::default(), |a, c| Timed {
            dispatches: a.dispatches + c.dispatches,
            ns: a.ns + c.ns,
        })
    }

    fn add(&mut self, kernel: &Arc<str>, ns: u64) {
        self.classes[OpClass::of_kernel(kernel).index()].add(ns);
        match self.kernels.get_mut(&**kernel) {
            Some(t) => t.add(ns),
            None => {
                let mut t = Timed::default();
                t.add(ns);
                self.kernels.insert(kernel.to_string(), t);
            }
        }
        if self.log.len() < MAX_LOGGED_DISPATCHES {
            self.log.push(DispatchTime {
                kernel: kernel.clone(),
                ns,
            });
        }
    }
}

type MapState = Arc<Mutex<Option<Result<(), wgpu::BufferAsyncError>>>>;

/// A flushed recording's timestamps on their way back.
struct InFlight {
    staging: wgpu::Buffer,
    kernels: Vec<Arc<str>>,
    state: MapState,
}

/// A recording's resolve, made before its submit (`Profiler::resolve`), mapped after it.
pub(super) struct Resolved(InFlight);

/// The profiling state of a `Ctx` (inside its pending recording, under the same lock).
pub(super) struct Profiler {
    device: wgpu::Device,
    queries: wgpu::QuerySet,
    /// The resolve target (QUERY_RESOLVE buffers cannot be mapped).
    resolved: wgpu::Buffer,
    /// Kernels of the dispatches recorded since the last flush: query pair i is dispatch i's.
    pub recorded: Vec<Arc<str>>,
    in_flight: VecDeque<InFlight>,
    pub profile: GpuProfile,
}

/// Timestamp slots: a pair per dispatch of one recording.
const QUERIES: u32 = 2 * MAX_PENDING_DISPATCHES as u32;

impl Profiler {
    pub fn new(device: &wgpu::Device, queue: &wgpu::Queue) -> Profiler {
        let queries = device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("wquant dispatch timestamps"),
            ty: wgpu::QueryType::Timestamp,
            count: QUERIES,
        });
        let resolved = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("timestamps resolved"),
            size: QUERIES as u64 * 8,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        Profiler {
            device: device.clone(),
            queries,
            resolved,
            recorded: Vec::new(),
            in_flight: VecDeque::new(),
            profile: GpuProfile {
                period_ns: queue.get_timestamp_period(),
                ..Default::default()
            },
        }
    }

    /// The timestamp writes of the next dispatch's pass (of `kernel`).
    pub fn next_writes(&mut self, kernel: Arc<str>) -> wgpu::ComputePassTimestampWrites<'_> {
        let i = self.recorded.len() as u32;
        assert!(
            i < QUERIES / 2,
            "internal: more dispatches in one recording than timestamp slots"
        );
        self.recorded.push(kernel);
        wgpu::ComputePassTimestampWrites {
            query_set: &self.queries,
            beginning_of_pass_write_index: Some(2 * i),
            end_of_pass_write_index: Some(2 * i + 1),
        }
    }

    /// Record the resolve of this recording's timestamps into `enc` (before its submit); None
    /// when nothing was timed.
    pub fn resolve(&mut self, enc: &mut wgpu::CommandEncoder) -> Option<Resolved> {
        if self.recorded.is_empty() {
            return None;
        }
        let n = 2 * self.recorded.len() as u32;
        let bytes = n as u64 * 8;
        enc.resolve_query_set(&self.queries, 0..n, &self.resolved, 0);
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("timestamps readback"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        enc.copy_buffer_to_buffer(&self.resolved, 0, &staging, 0, bytes);
        Some(Resolved(InFlight {
            staging,
            kernels: std::mem::take(&mut self.recorded),
            state: Arc::new(Mutex::new(None)),
        }))
    }

    /// After the submit holding `r`'s resolve: map its staging buffer (read at a later wait).
    pub fn submitted(&mut self, r: Resolved) {
        let r = r.0;
        let state = r.state.clone();
        r.staging.map_async(wgpu::MapMode::Read, .., move |res| {
            if let Ok(mut s) = state.lock() {
                *s = Some(res);
            }
        });
        self.in_flight.push_back(r);
        self.harvest();
    }

    /// Add every recording whose mapping has completed, in submit order (callbacks run inside
    /// the device's polls: after a wait, every earlier submit's mapping has).
    pub fn harvest(&mut self) {
        while let Some(f) = self.in_flight.front() {
            let done = f.state.lock().ok().and_then(|mut s| s.take());
            let Some(res) = done else { break };
            let f = self.in_flight.pop_front().expect("front exists");
            let view = res.ok().and_then(|()| f.staging.get_mapped_range(..).ok());
            match view {
                Some(view) => {
                    let ticks: &[u64] = bytemuck::cast_slice(&view);
                    let period = f64::from(self.profile.period_ns);
                    for (k, pair) in f.kernels.iter().zip(ticks.chunks_exact(2)) {
                        let ns = (pair[1].saturating_sub(pair[0]) as f64 * period).round() as u64;
                        self.profile.add(k, ns);
                    }
                    drop(view);
                    f.staging.unmap();
                }
                None => self.profile.lost += f.kernels.len() as u64,
            }
        }
    }

    /// Dispatches submitted whose timestamps have not been read yet.
    pub fn unread_dispatches(&self) -> u64 {
        self.in_flight.iter().map(|f| f.kernels.len() as u64).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_keys_map_to_classes() {
        for (key, want) in [
            ("matmul/F32", OpClass::Matmul),
            ("matmul_sgemm/Q4_K/128x128-8x8/v4/f32", OpClass::Matmul),
            ("matmul_unrolled/Q8_0", OpClass::Matmul),
            ("attention", OpClass::Attention),
            ("attention_flash hd64 tpr4 bc64", OpClass::Attention),
            ("mm_stats", OpClass::Statistics),
            ("gram", OpClass::Statistics),
            ("rms_norm", OpClass::Other),
            ("get_rows/F32", OpClass::Other),
            ("nll", OpClass::Other),
            ("kld_record", OpClass::Other),
            ("quant_q4_k@wgsl", OpClass::Other),
            ("matmulx", OpClass::Other),
            ("?", OpClass::Other),
        ] {
            assert_eq!(OpClass::of_kernel(key), want, "{key}");
        }
    }

    #[test]
    fn totals_add_up_per_class_and_kernel() {
        let mut p = GpuProfile::default();
        let mm: Arc<str> = "matmul/F32".into();
        let at: Arc<str> = "attention".into();
        p.add(&mm, 5);
        p.add(&at, 7);
        p.add(&mm, 11);
        assert_eq!(
            p.class(OpClass::Matmul),
            Timed {
                dispatches: 2,
                ns: 16
            }
        );
        assert_eq!(p.class(OpClass::Attention).ns, 7);
        assert_eq!(p.class(OpClass::Statistics), Timed::default());
        assert_eq!(
            p.total(),
            Timed {
                dispatches: 3,
                ns: 23
            }
        );
        assert_eq!(p.kernels["matmul/F32"].dispatches, 2);
        assert_eq!(p.log.len(), 3);
    }
}
