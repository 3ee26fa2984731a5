//! Buffer pool: storage buffers are reused by size class; counts the bytes allocated on the
//! device (pooled activations and weights) and their peak.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub struct Pool {
    device: wgpu::Device,
    /// Largest size a shader may bind: classes never round a bindable request past it.
    max_binding: u64,
    free: Mutex<HashMap<u64, Vec<wgpu::Buffer>>>,
    allocated: AtomicU64,
    peak: AtomicU64,
    /// VRAM budget: past it, free pooled buffers are released before allocating more.
    limit: AtomicU64,
    /// Bumped whenever device memory is freed, so caches holding buffer handles (bind groups)
    /// let go of them.
    generation: AtomicU64,
}

/// A storage buffer from the pool; goes back to the free list when dropped.
pub struct PooledBuffer {
    buf: Option<wgpu::Buffer>,
    class: u64,
    pool: Arc<Pool>,
}

impl PooledBuffer {
    pub fn buffer(&self) -> &wgpu::Buffer {
        self.buf.as_ref().expect("live buffer")
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        if let Some(b) = self.buf.take() {
            if let Ok(mut f) = self.pool.free.lock() {
                f.entry(self.class).or_default().push(b);
            }
        }
    }
}

/// Round up to a size class: multiples of 1/8 of the next power of two (≤ 12.5% waste), ≥ 256 B.
fn size_class(bytes: u64) -> u64 {
    let b = bytes.max(256);
    let p = b.next_power_of_two();
    let step = (p / 8).max(256);
    b.div_ceil(step) * step
}

impl Pool {
    pub fn new(device: wgpu::Device, max_binding: u64) -> Arc<Pool> {
        Arc::new(Pool {
            device,
            max_binding,
            free: Mutex::new(HashMap::new()),
            allocated: AtomicU64::new(0),
            peak: AtomicU64::new(0),
            limit: AtomicU64::new(u64::MAX),
            generation: AtomicU64::new(0),
        })
    }

    /// A storage buffer of at least `bytes` bytes (contents undefined).
    pub fn get(self: &Arc<Self>, bytes: u64) -> PooledBuffer {
        let mut class = size_class(bytes);
        if bytes <= self.max_binding && class > self.max_binding {
            class = bytes.div_ceil(256) * 256;
        }
        let reused = self
            .free
            .lock()
            .ok()
            .and_then(|mut f| f.get_mut(&class).and_then(|v| v.pop()));
        if reused.is_none() && self.allocated_bytes() + class > self.limit.load(Ordering::Relaxed) {
            self.trim();
        }
        let buf = reused.unwrap_or_else(|| {
            self.note_alloc(class);
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("pooled"),
                size: class,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        });
        PooledBuffer {
            buf: Some(buf),
            class,
            pool: self.clone(),
        }
    }

    /// Make room for `bytes` more under the limit by releasing free pooled buffers (call before
    /// creating a buffer outside the pool).
    pub fn reserve(&self, bytes: u64) {
        if self.allocated_bytes() + bytes > self.limit.load(Ordering::Relaxed) {
            self.trim();
        }
    }

    /// Count a buffer made outside the pool (weights).
    pub fn note_alloc(&self, bytes: u64) {
        let now = self.allocated.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }

    pub fn note_free(&self, bytes: u64) {
        self.allocated.fetch_sub(bytes, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    /// Changes whenever buffers are freed (see `note_free`).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Bytes currently allocated on the device (including free pooled buffers).
    pub fn allocated_bytes(&self) -> u64 {
        self.allocated.load(Ordering::Relaxed)
    }

    /// Keep allocations under `bytes` by releasing free buffers first (None: no limit).
    pub fn set_limit(&self, bytes: Option<u64>) {
        self.limit
            .store(bytes.unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Restart peak tracking from the current allocation.
    pub fn reset_peak(&self) {
        self.peak.store(self.allocated_bytes(), Ordering::Relaxed);
    }

    pub fn peak_bytes(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    /// Release the free list's buffers to the driver.
    pub fn trim(&self) {
        if let Ok(mut f) = self.free.lock() {
            for (class, v) in f.drain() {
                self.note_free(class * v.len() as u64);
            }
        }
    }
}
