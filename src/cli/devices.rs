//! `wquant devices`: every wgpu adapter with its name, backend, driver, type, key limits and
//! the optional features the kernels could use, the float guarantees of the exact quantization
//! kernels (backend::gpu::spirv); marks the one `--device auto` picks.

use crate::backend::gpu::device::{adapters, auto_index, instance};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

const FEATURES: [(wgpu::Features, &str); 6] = [
    (wgpu::Features::SHADER_F16, "shader-f16"),
    (wgpu::Features::SUBGROUP, "subgroup"),
    (wgpu::Features::SHADER_F64, "shader-f64"),
    (wgpu::Features::SHADER_INT64, "shader-int64"),
    (wgpu::Features::TIMESTAMP_QUERY, "timestamp-query"),
    (
        wgpu::Features::SHADER_FLOAT32_ATOMIC,
        "shader-float32-atomic",
    ),
];

pub fn run(_g: &super::GlobalArgs, a: Args) -> anyhow::Result<()> {
    let inst = instance();
    let list = adapters(&inst);
    let auto = auto_index(&list);
    let mut json = Vec::new();
    if list.is_empty() && !a.json {
        println!("no wgpu adapters found (install a Vulkan driver; lavapipe works on any CPU)");
    }
    for (i, ad) in list.iter().enumerate() {
        let info = ad.get_info();
        let l = ad.limits();
        let f = ad.features();
        let feats: Vec<&str> = FEATURES
            .iter()
            .filter(|(x, _)| f.contains(*x))
            .map(|(_, n)| *n)
            .collect();
        let picked = auto == Some(i);
        // What the exact quantization kernels get on this adapter (device.rs requests
        // passthrough wherever it is offered).
        let exact = crate::backend::gpu::spirv::guarantees(ad, f);
        // The 256-value quantization kernels run 8 lanes of a subgroup per super-block.
        let lanes8 = crate::backend::gpu::kernels::quant_block::subgroups_fit(f, &info).is_ok();
        let vram = crate::backend::gpu::device::vram_info(ad);
        let vram_text = match vram {
            Some(v) => format!(
                "{} device-local heap, {} (Vulkan{}); default --vram-budget {}",
                mib(v.heap_bytes),
                v.budget_bytes
                    .map_or("no budget reported".to_string(), |b| format!("budget {}", mib(b))),
                if v.budget_bytes.is_some() {
                    ", VK_EXT_memory_budget"
                } else {
                    " heap size"
                },
                mib(v.default_budget())
            ),
            None => "unknown (no portable query on this backend): models over 2 GiB of weights need --vram-budget".to_string(),
        };
        if a.json {
            json.push(serde_json::json!({
                "index": i,
                "name": info.name,
                "backend": format!("{:?}", info.backend),
                "driver": info.driver,
                "driver_info": info.driver_info,
                "device_type": format!("{:?}", info.device_type),
                "auto": picked,
                "limits": {
                    "max_buffer_size": l.max_buffer_size,
                    "max_storage_buffer_binding_size": l.max_storage_buffer_binding_size,
                    "max_compute_workgroup_storage_size": l.max_compute_workgroup_storage_size,
                    "max_compute_invocations_per_workgroup": l.max_compute_invocations_per_workgroup,
                    "max_compute_workgroups_per_dimension": l.max_compute_workgroups_per_dimension,
                    "max_storage_buffers_per_shader_stage": l.max_storage_buffers_per_shader_stage,
                    "min_storage_buffer_offset_alignment": l.min_storage_buffer_offset_alignment,
                },
                "features": feats,
                "subgroup_min_size": info.subgroup_min_size,
                "subgroup_max_size": info.subgroup_max_size,
                "quantize_8_lane_kernels": lanes8,
                "exact_quantize": {
                    "path": exact.path(),
                    "no_contraction": exact.spirv,
                    "denorm_preserve": exact.denorm_preserve,
                    "rounding_mode_rte": exact.rte,
                    "signed_zero_inf_nan_preserve": exact.signed_zero_inf_nan,
                },
                "vram": vram.map(|v| serde_json::json!({
                    "heap_bytes": v.heap_bytes,
                    "budget_bytes": v.budget_bytes,
                    "default_budget_bytes": v.default_budget(),
                })),
            }));
            continue;
        }
        println!(
            "gpu:{i}{}  {}",
            if picked { " (auto)" } else { "" },
            info.name
        );
        println!("  backend {:?}, type {:?}", info.backend, info.device_type);
        println!("  driver  {} {}", info.driver, info.driver_info);
        println!(
            "  limits  buffer {}, storage binding {}, workgroup storage {}, invocations/workgroup {}, workgroups/dim {}, storage buffers/stage {}",
            mib(l.max_buffer_size),
            mib(l.max_storage_buffer_binding_size),
            kib(l.max_compute_workgroup_storage_size as u64),
            l.max_compute_invocations_per_workgroup,
            l.max_compute_workgroups_per_dimension,
            l.max_storage_buffers_per_shader_stage,
        );
        println!("  vram    {vram_text}");
        println!("  exact quantize: {}", exact.describe());
        println!(
            "  features {}",
            if feats.is_empty() {
                "-".to_string()
            } else {
                feats.join(", ")
            }
        );
        println!(
            "  subgroups {}–{} lanes: {}",
            info.subgroup_min_size,
            info.subgroup_max_size,
            if lanes8 {
                "the 8-lane quantization kernels run"
            } else {
                "no 8-lane quantization kernels (the CPU quantizes the 256-value types)"
            }
        );
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&json)?);
    }
    Ok(())
}

fn mib(b: u64) -> String {
    format!("{:.0} MiB", b as f64 / (1024.0 * 1024.0))
}

fn kib(b: u64) -> String {
    format!("{:.0} KiB", b as f64 / 1024.0)
}
