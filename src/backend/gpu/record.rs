//! Command recording for `Ctx`: dispatches, uploads and copies go into one pending command
//! encoder, submitted together (a flush) at a readback, at `sync`, when `MAX_PENDING_DISPATCHES`
//! are pending, or on drop. Each dispatch's parameters take one slot of a uniform ring buffer,
//! bound with a dynamic offset, so bind groups (cached by pipeline and bound ranges) never refer
//! to a per-op uniform buffer.
//!
//! Ordering: everything a kernel does is recorded into the encoder in program order (uploads are
//! copies from fresh staging buffers, zeroing is `clear_buffer`), and wgpu inserts barriers
//! between dispatches and copies inside one encoder. A pooled buffer returned to the pool while a
//! pending command still reads it and handed out again is therefore only overwritten by commands
//! recorded later. The only `queue.write_buffer` is the ring's, made right before the submit it
//! belongs to (a write_buffer is applied before the next submit, after every earlier one).
//!
//! Profiling (`Ctx::start_profiling`, off by default): each dispatch gets a compute pass of its
//! own with timestamp writes, and each flush resolves that recording's timestamps in the same
//! submit (`profile`).

use std::num::NonZeroU64;

/// Dispatches pending before a flush submits them. At ~20 dispatches per transformer layer this is
/// one submit per ~6 layers: the GPU starts on the first 128 while the host records the next, and
/// a submit's fixed cost (tens of µs on Vulkan) is spread over 128 dispatches. It also sizes the
/// uniform ring (128 × 256 B = 32 KiB).
pub const MAX_PENDING_DISPATCHES: usize = 128;

/// Bytes of one dispatch's parameters in the ring: the largest `min_uniform_buffer_offset_alignment`
/// WebGPU allows, so every slot offset is aligned on every adapter. Kernels' `Params` fit in it.
pub const PARAM_SLOT_BYTES: u64 = 256;

/// Bind groups kept before the cache is emptied (a 30-layer pass creates ~600 distinct ones).
const MAX_CACHED_BIND_GROUPS: usize = 4096;

/// What the context has done since the last `Ctx::reset_counters`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// `queue.submit` calls.
    pub submits: u64,
    /// Compute dispatches recorded.
    pub dispatches: u64,
    /// Map-and-wait round trips (each waits for the queue).
    pub readbacks: u64,
    /// Bytes copied back to the host.
    pub bytes_read: u64,
    /// Host-to-device uploads (recorded copies) and their bytes.
    pub uploads: u64,
    pub bytes_uploaded: u64,
    /// Bind groups created (cache misses and uncached dispatches).
    pub bind_groups: u64,
}

/// The open command encoder and compute pass, and the parameters of their dispatches.
#[derive(Default)]
pub(super) struct Pending {
    /// Dropped (ended) before `encoder` is used for anything else.
    pub pass: Option<wgpu::ComputePass<'static>>,
    pub encoder: Option<wgpu::CommandEncoder>,
    /// Host copy of the ring: one `PARAM_SLOT_BYTES` slot per pending dispatch.
    pub params: Vec<u8>,
    pub n_dispatch: usize,
    /// Dispatches per flush (0: `MAX_PENDING_DISPATCHES`); 1 submits each op on its own.
    pub max_pending: usize,
    pub counters: Counters,
    /// Per-dispatch timestamps (`Ctx::start_profiling`); None: off, nothing recorded.
    pub profiler: Option<super::profile::Profiler>,
}

impl Pending {
    /// Whether the next dispatch must go into a new submit.
    pub fn full(&self) -> bool {
        let cap = match self.max_pending {
            0 => MAX_PENDING_DISPATCHES,
            n => n.min(MAX_PENDING_DISPATCHES),
        };
        self.n_dispatch >= cap
    }

    /// The encoder with no pass open (for copies).
    pub fn encoder(&mut self, device: &wgpu::Device) -> &mut wgpu::CommandEncoder {
        self.pass = None;
        self.encoder.get_or_insert_with(|| {
            device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("wquant"),
            })
        })
    }

    /// The open compute pass (begun on first use after a copy or a flush).
    pub fn pass(&mut self, device: &wgpu::Device) -> &mut wgpu::ComputePass<'static> {
        if self.pass.is_none() {
            let pass = self
                .encoder(device)
                .begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: None,
                    timestamp_writes: None,
                })
                .forget_lifetime();
            self.pass = Some(pass);
        }
        self.pass.as_mut().expect("pass just opened")
    }

    /// While profiling: a compute pass of its own for the next dispatch (of `kernel`), its
    /// beginning and end timestamped. None when not profiling.
    pub fn timed_pass(
        &mut self,
        device: &wgpu::Device,
        kernel: impl FnOnce() -> std::sync::Arc<str>,
    ) -> Option<wgpu::ComputePass<'_>> {
        let prof = self.profiler.as_mut()?;
        self.pass = None;
        let enc = self.encoder.get_or_insert_with(|| {
            device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("wquant"),
            })
        });
        Some(enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: None,
            timestamp_writes: Some(prof.next_writes(kernel())),
        }))
    }

    /// The ring slot for the next dispatch's `params` (zero-padded), as a dynamic offset.
    pub fn push_params(&mut self, params: &[u32]) -> u32 {
        let bytes: &[u8] = bytemuck::cast_slice(params);
        assert!(
            bytes.len() as u64 <= PARAM_SLOT_BYTES,
            "kernel parameters of {} bytes exceed a ring slot",
            bytes.len()
        );
        let offset = self.params.len();
        self.params.extend_from_slice(bytes);
        self.params.resize(offset + PARAM_SLOT_BYTES as usize, 0);
        offset as u32
    }

    /// Submit what is pending (the ring written first); nothing if nothing is.
    pub fn flush(&mut self, queue: &wgpu::Queue, ring: &wgpu::Buffer) {
        self.flush_with(queue, ring, None);
    }

    /// As `flush`, with `extra` (recorded elsewhere) after the pending commands in one submit.
    pub fn flush_with(
        &mut self,
        queue: &wgpu::Queue,
        ring: &wgpu::Buffer,
        extra: Option<wgpu::CommandBuffer>,
    ) {
        self.pass = None;
        let mut enc = self.encoder.take();
        if enc.is_none() && extra.is_none() {
            return;
        }
        // Timed dispatches were recorded into `enc`: resolve their timestamps in this submit.
        let resolved = match (&mut self.profiler, &mut enc) {
            (Some(prof), Some(e)) => prof.resolve(e),
            _ => None,
        };
        if !self.params.is_empty() {
            queue.write_buffer(ring, 0, &self.params);
        }
        queue.submit(enc.map(|e| e.finish()).into_iter().chain(extra));
        if let (Some(prof), Some(r)) = (&mut self.profiler, resolved) {
            prof.submitted(r);
        }
        self.params.clear();
        self.n_dispatch = 0;
        self.counters.submits += 1;
    }
}

/// Bind group cache key: the pipeline and each bound (buffer, offset, size) after the ring.
/// Holding the handles keeps their identities unique while cached.
pub(super) type BindKey = (wgpu::ComputePipeline, Vec<(wgpu::Buffer, u64, u64)>);

pub(super) struct BindCache {
    pub map: std::collections::HashMap<BindKey, wgpu::BindGroup>,
    /// The pool's generation when the map was last emptied (a buffer freed since may be held
    /// only by the cache).
    pub generation: u64,
}

impl BindCache {
    pub fn new() -> BindCache {
        BindCache {
            map: Default::default(),
            generation: 0,
        }
    }

    /// Empty the cache if buffers were freed since it was filled, or if it is full.
    pub fn refresh(&mut self, generation: u64) {
        if generation != self.generation || self.map.len() >= MAX_CACHED_BIND_GROUPS {
            self.map.clear();
            self.generation = generation;
        }
    }
}

/// The ring buffer's binding (binding 0, one slot, offset given per dispatch).
pub(super) fn ring_entry(ring: &wgpu::Buffer) -> wgpu::BindGroupEntry<'_> {
    wgpu::BindGroupEntry {
        binding: 0,
        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: ring,
            offset: 0,
            size: NonZeroU64::new(PARAM_SLOT_BYTES),
        }),
    }
}

/// Bind group layout entries of group 0 of a WGSL kernel, from its declarations: the uniform at
/// binding 0 takes a dynamic offset (the ring slot); storage buffers are read-only unless
/// written; sampled textures as declared.
pub(super) fn layout_entries(label: &str, src: &str) -> Vec<wgpu::BindGroupLayoutEntry> {
    use naga::{AddressSpace, ImageClass, ImageDimension, ScalarKind, TypeInner};
    let module = naga::front::wgsl::parse_str(src)
        .unwrap_or_else(|e| panic!("shader {label}: {}", e.emit_to_string(src)));
    let mut entries = Vec::new();
    for (_, var) in module.global_variables.iter() {
        let Some(rb) = &var.binding else { continue };
        assert_eq!(rb.group, 0, "shader {label}: only bind group 0 is used");
        let ty = match var.space {
            AddressSpace::Uniform => {
                assert_eq!(
                    rb.binding, 0,
                    "shader {label}: the only uniform is the parameters at binding 0"
                );
                wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Uniform,
                    has_dynamic_offset: true,
                    min_binding_size: None,
                }
            }
            AddressSpace::Storage { access } => wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Storage {
                    read_only: !access.contains(naga::StorageAccess::STORE),
                },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            AddressSpace::Handle => match &module.types[var.ty].inner {
                TypeInner::Image {
                    dim,
                    arrayed,
                    class: ImageClass::Sampled { kind, multi },
                } => wgpu::BindingType::Texture {
                    sample_type: match kind {
                        ScalarKind::Uint => wgpu::TextureSampleType::Uint,
                        ScalarKind::Sint => wgpu::TextureSampleType::Sint,
                        _ => wgpu::TextureSampleType::Float { filterable: false },
                    },
                    view_dimension: match (dim, arrayed) {
                        (ImageDimension::D1, _) => wgpu::TextureViewDimension::D1,
                        (ImageDimension::D2, false) => wgpu::TextureViewDimension::D2,
                        (ImageDimension::D2, true) => wgpu::TextureViewDimension::D2Array,
                        (ImageDimension::D3, _) => wgpu::TextureViewDimension::D3,
                        (ImageDimension::Cube, false) => wgpu::TextureViewDimension::Cube,
                        (ImageDimension::Cube, true) => wgpu::TextureViewDimension::CubeArray,
                    },
                    multisampled: *multi,
                },
                other => panic!("shader {label}: unsupported resource {other:?}"),
            },
            other => panic!("shader {label}: unsupported binding space {other:?}"),
        };
        entries.push(wgpu::BindGroupLayoutEntry {
            binding: rb.binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty,
            count: None,
        });
    }
    entries.sort_by_key(|e| e.binding);
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_from_declarations() {
        let src = "struct P { n: u32 }\n\
            @group(0) @binding(0) var<uniform> p: P;\n\
            @group(0) @binding(2) var<storage, read_write> y: array<f32>;\n\
            @group(0) @binding(1) var<storage, read> x: array<f32>;\n\
            @group(0) @binding(3) var t: texture_2d<u32>;\n\
            @compute @workgroup_size(1) fn main() { y[0] = x[0] + f32(p.n + textureLoad(t, vec2(0), 0).x); }";
        let e = layout_entries("t", src);
        let b: Vec<u32> = e.iter().map(|e| e.binding).collect();
        assert_eq!(b, [0, 1, 2, 3]);
        assert!(matches!(
            e[0].ty,
            wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Uniform,
                has_dynamic_offset: true,
                ..
            }
        ));
        assert!(matches!(
            e[1].ty,
            wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Storage { read_only: true },
                ..
            }
        ));
        assert!(matches!(
            e[2].ty,
            wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Storage { read_only: false },
                ..
            }
        ));
        assert!(matches!(
            e[3].ty,
            wgpu::BindingType::Texture {
                sample_type: wgpu::TextureSampleType::Uint,
                view_dimension: wgpu::TextureViewDimension::D2,
                multisampled: false
            }
        ));
    }

    #[test]
    fn params_take_aligned_slots() {
        let mut p = Pending::default();
        assert_eq!(p.push_params(&[1, 2, 3]), 0);
        assert_eq!(p.push_params(&[4]), PARAM_SLOT_BYTES as u32);
        assert_eq!(p.params.len() as u64, 2 * PARAM_SLOT_BYTES);
        assert_eq!(&p.params[256..260], &4u32.to_le_bytes());
        assert!(p.params[4 * 3..256].iter().all(|&b| b == 0));
    }
}
