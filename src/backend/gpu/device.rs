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
        // Only optional feature: subgroups, where offered (the register matmul shares activation
        // loads across a subgroup; without them it falls back to plain loads).
        let features = adapter.features() & wgpu::Features::SUBGROUP;
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
