//! Device selection (`--device auto|cpu|gpu[:N]`), the one place every command picks its
//! backend:
//! - `cpu`: the CPU backend in its fast mode (`CpuBackend::fast()`, checked against the
//!   scalar reference `CpuBackend::new()` in tests/model_cpu_fast.rs);
//! - `gpu`, `gpu:N`: that adapter, whatever its kind, or an error (strict);
//! - `auto`: a hardware GPU when there is one; otherwise the CPU reference, with a message,
//!   because it runs the graph far faster than a software Vulkan adapter (lavapipe) does.
//!
//! Generic code runs on the chosen backend through `with_backend!`.

use super::cpu::CpuBackend;
use super::gpu::device::{auto_has_hardware_gpu, DeviceSpec, GpuDevice};
use super::gpu::GpuBackend;
use super::Precision;
use anyhow::{bail, Result};

/// The backend `--device` chose (one per process, so the variants' sizes do not matter).
#[allow(clippy::large_enum_variant)]
pub enum SelectedBackend {
    Cpu(CpuBackend),
    Gpu(GpuBackend),
}

impl SelectedBackend {
    pub fn is_gpu(&self) -> bool {
        matches!(self, SelectedBackend::Gpu(_))
    }
}

/// The backend `device` names for a command, its matmuls at `precision`; `purpose` prefixes the
/// message printed (unless `quiet`) when `auto` falls back to the CPU reference. `--precision
/// f16` where the CPU would run is an error: the CPU backends compute in f32 only, and running
/// f32 under an f16 flag would report figures the user did not ask for.
pub fn select(
    device: &str,
    precision: Precision,
    purpose: &str,
    quiet: bool,
) -> Result<SelectedBackend> {
    let spec = DeviceSpec::parse(device)?;
    let sel = select_device(spec, purpose, quiet)?;
    Ok(match sel {
        SelectedBackend::Cpu(_) if precision != Precision::F32 => bail!(
            "--precision {}: {purpose} would run on the CPU (--device {device}{}), which \
             computes in f32 only; drop --precision or pick a GPU with --device gpu[:N]",
            precision.name(),
            if spec == DeviceSpec::Auto {
                ", no hardware GPU found"
            } else {
                ""
            }
        ),
        SelectedBackend::Gpu(mut g) => {
            g.set_precision(precision)?;
            SelectedBackend::Gpu(g)
        }
        cpu => cpu,
    })
}

fn select_device(spec: DeviceSpec, purpose: &str, quiet: bool) -> Result<SelectedBackend> {
    Ok(match spec {
        DeviceSpec::Cpu => SelectedBackend::Cpu(CpuBackend::fast()),
        DeviceSpec::Auto => {
            // Probe without opening a device first: a software adapter's driver need not start.
            let gpu = auto_has_hardware_gpu()
                .then(|| GpuDevice::open(DeviceSpec::Auto))
                .and_then(|d| d.ok())
                .filter(|d| !d.is_cpu_adapter());
            match gpu {
                Some(dev) => SelectedBackend::Gpu(GpuBackend::from_device(dev)),
                None => {
                    if !quiet {
                        eprintln!(
                            "{purpose}: --device auto: no hardware GPU, using the CPU reference"
                        );
                    }
                    SelectedBackend::Cpu(CpuBackend::fast())
                }
            }
        }
        DeviceSpec::Gpu(_) => SelectedBackend::Gpu(GpuBackend::from_device(GpuDevice::open(spec)?)),
    })
}

/// A GPU adapter for commands that exist to check one (`wquant conformance`): `auto` and `gpu`
/// take the first adapter, software ones included; `cpu` is an error naming `purpose`.
pub fn select_gpu(device: &str, purpose: &str) -> Result<GpuBackend> {
    match DeviceSpec::parse(device)? {
        DeviceSpec::Cpu => bail!(
            "--device cpu: {purpose} compares a GPU adapter with the CPU reference; pick auto, \
             gpu or gpu:N"
        ),
        spec => Ok(GpuBackend::from_device(GpuDevice::open(spec)?)),
    }
}

/// Run generic code on the selected backend: `with_backend!(sel, |b| f(&b, ...))` binds `b` to
/// the `CpuBackend` or the `GpuBackend` (by value) and evaluates the body with it.
#[macro_export]
macro_rules! with_backend {
    ($sel:expr, |$b:ident| $body:expr) => {
        match $sel {
            $crate::backend::select::SelectedBackend::Cpu($b) => $body,
            $crate::backend::select::SelectedBackend::Gpu($b) => $body,
        }
    };
}
