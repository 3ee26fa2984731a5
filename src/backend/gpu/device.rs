//! Adapter choice (`--device auto|cpu|gpu[:N]`) and the opened wgpu device.

use anyhow::{anyhow, bail, Context, Result};

/// What `--device` asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceSpec {
    /// The first hardware GPU, else a CPU adapter (lavapipe).
    Auto,
    /// The scalar CPU reference backend (no adapter).
    Cpu,
    /// Adapter number N in `wquant devices` order; `gpu` alone behaves like `auto` but never
    /// falls back to the CPU reference.
    Gpu(Option<usize>),
}

impl DeviceSpec {
    pub fn parse(s: &str) -> Result<DeviceSpec> {
        let t = s.trim().to_ascii_lowercase();
        match t.as_str() {
            "auto" => Ok(DeviceSpec::Auto),
            "cpu" => Ok(DeviceSpec::Cpu),
            "gpu" => Ok(DeviceSpec::Gpu(None)),
            _ => {
                if let Some(n) = t.strip_prefix("gpu:") {
                    let i: usize = n.parse().map_err(|_| {
                        anyhow!("--device {s:?}: expected auto, cpu, gpu or gpu:N (N a number)")
                    })?;
                    Ok(DeviceSpec::Gpu(Some(i)))
                } else {
                    bail!("--device {s:?}: expected auto, cpu, gpu or gpu:N")
                }
            }
        }
    }
}

/// Silence the Vulkan loader's `XDG_RUNTIME_DIR is invalid` line with a private 0700 directory.
fn ensure_runtime_dir() {
    use std::os::unix::fs::PermissionsExt;
    let ok = std::env::var_os("XDG_RUNTIME_DIR")
        .map(|d| std::path::Path::new(&d).is_dir())
        .unwrap_or(false);
    if ok {
        return;
    }
    let dir = std::env::temp_dir().join(format!("wquant-xdg-{}", std::process::id()));
    if std::fs::create_dir_all(&dir).is_ok()
        && std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).is_ok()
    {
        // Single-threaded at start-up: nothing else reads the environment concurrently.
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", &dir) };
    }
}

pub fn instance() -> wgpu::Instance {
    #[cfg(unix)]
    ensure_runtime_dir();
    wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env())
}

/// Every adapter, in the order `wquant devices` lists them.
pub fn adapters(inst: &wgpu::Instance) -> Vec<wgpu::Adapter> {
    pollster::block_on(inst.enumerate_adapters(wgpu::Backends::all()))
}

/// Index (into `adapters`) that `auto` picks: the first hardware GPU, else the first CPU adapter.
pub fn auto_index(list: &[wgpu::Adapter]) -> Option<usize> {
    let hw = list.iter().position(|a| {
        matches!(
            a.get_info().device_type,
            wgpu::DeviceType::DiscreteGpu | wgpu::DeviceType::IntegratedGpu
        )
    });
    hw.or_else(|| {
        list.iter()
            .position(|a| a.get_info().device_type != wgpu::DeviceType::Other)
    })
    .or(if list.is_empty() { None } else { Some(0) })
}

/// Whether `--device auto` would pick a hardware GPU, found without opening a device (a
/// software adapter's driver need not start: commands use the CPU reference then).
pub fn auto_has_hardware_gpu() -> bool {
    let list = adapters(&instance());
    auto_index(&list).is_some_and(|i| {
        matches!(
            list[i].get_info().device_type,
            wgpu::DeviceType::DiscreteGpu | wgpu::DeviceType::IntegratedGpu
        )
    })
}

/// An opened device with the adapter's own limits.
pub struct GpuDevice {
    pub adapter: wgpu::Adapter,
    pub info: wgpu::AdapterInfo,
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub limits: wgpu::Limits,
    pub features: wgpu::Features,
}

impl GpuDevice {
    /// Open the adapter `spec` names (`cpu` is an error here: that is the CPU reference backend).
    pub fn open(spec: DeviceSpec) -> Result<GpuDevice> {
        let inst = instance();
        let list = adapters(&inst);
        let idx = match spec {
            DeviceSpec::Cpu => bail!("--device cpu selects the CPU reference, not a GPU adapter"),
            DeviceSpec::Auto | DeviceSpec::Gpu(None) => auto_index(&list).ok_or_else(|| {
                anyhow!("no GPU adapter found (install a Vulkan driver, e.g. mesa-vulkan-drivers for lavapipe)")
            })?,
            DeviceSpec::Gpu(Some(i)) => {
                if i >= list.len() {
                    bail!(
                        "--device gpu:{i}: only {} adapter(s) found (see `wquant devices`)",
                        list.len()
                    );
                }
                i
            }
        };
        let adapter = list.into_iter().nth(idx).expect("index checked");
        Self::from_adapter(adapter)
    }

    pub fn from_adapter(adapter: wgpu::Adapter) -> Result<GpuDevice> {
        let info = adapter.get_info();
        let limits = adapter.limits();
        // Optional features, where offered: subgroups (the register matmul shares activation
        // loads across a subgroup; without them it falls back to plain loads) and SPIR-V
        // passthrough (the exact quantization kernels: spirv.rs); f16 in shaders (the
        // `--precision f16` matmul tiles; without it they round values but store f32);
        // timestamp queries (`Ctx::start_profiling`, `wquant bench`'s time per op class; unused
        // unless profiling is started).
        let features = adapter.features()
            & (wgpu::Features::SUBGROUP
                | wgpu::Features::PASSTHROUGH_SHADERS
                | wgpu::Features::SHADER_F16
                | wgpu::Features::TIMESTAMP_QUERY);
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("wquant"),
            required_features: features,
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .with_context(|| format!("opening device on adapter {:?}", info.name))?;
        Ok(GpuDevice {
            adapter,
            info,
            device,
            queue,
            limits,
            features,
        })
    }

    /// CPU adapters (llvmpipe) want the barrier-free register kernel; real GPUs the tiled one.
    pub fn is_cpu_adapter(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }
}

/// Device memory as the driver reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VramInfo {
    /// Size of the largest device-local heap.
    pub heap_bytes: u64,
    /// What this process may use of that heap now (VK_EXT_memory_budget), if reported.
    pub budget_bytes: Option<u64>,
}

impl VramInfo {
    /// The budget to plan with when the user gives none: 90% of the driver's budget (or heap).
    pub fn default_budget(&self) -> u64 {
        self.budget_bytes.unwrap_or(self.heap_bytes) / 10 * 9
    }
}

/// Device-local memory of a Vulkan adapter, read through wgpu-hal (wgpu has no portable query;
/// Metal and DX12 adapters return None).
#[cfg(any(
    target_os = "linux",
    target_os = "windows",
    target_os = "android",
    target_os = "freebsd"
))]
pub fn vram_info(adapter: &wgpu::Adapter) -> Option<VramInfo> {
    use ash::vk;
    // SAFETY: the instance and physical device handles are only used for read-only queries
    // while `adapter` (which owns them) is alive.
    unsafe {
        let hal = adapter.as_hal::<wgpu::hal::api::Vulkan>()?;
        let inst = hal.shared_instance().raw_instance();
        let phys = hal.raw_physical_device();
        let shared = hal.shared_instance();
        // vkGetPhysicalDeviceMemoryProperties2 is core in 1.1; a 1.0 instance reports heaps only.
        let v11 = shared.instance_api_version() >= vk::API_VERSION_1_1
            && inst.get_physical_device_properties(phys).api_version >= vk::API_VERSION_1_1;
        let has_budget = v11
            && inst
                .enumerate_device_extension_properties(phys)
                .map(|exts| {
                    exts.iter()
                        .any(|e| e.extension_name_as_c_str() == Ok(ash::ext::memory_budget::NAME))
                })
                .unwrap_or(false);
        let mut budget = vk::PhysicalDeviceMemoryBudgetPropertiesEXT::default();
        let mp = if has_budget {
            let mut props2 = vk::PhysicalDeviceMemoryProperties2::default().push_next(&mut budget);
            inst.get_physical_device_memory_properties2(phys, &mut props2);
            props2.memory_properties
        } else {
            inst.get_physical_device_memory_properties(phys)
        };
        let heaps = &mp.memory_heaps[..mp.memory_heap_count as usize];
        let (i, heap) = heaps
            .iter()
            .enumerate()
            .filter(|(_, h)| h.flags.contains(vk::MemoryHeapFlags::DEVICE_LOCAL))
            .max_by_key(|(_, h)| h.size)?;
        Some(VramInfo {
            heap_bytes: heap.size,
            budget_bytes: (has_budget && budget.heap_budget[i] > 0).then(|| budget.heap_budget[i]),
        })
    }
}

#[cfg(not(any(
    target_os = "linux",
    target_os = "windows",
    target_os = "android",
    target_os = "freebsd"
)))]
pub fn vram_info(_adapter: &wgpu::Adapter) -> Option<VramInfo> {
    None
}
