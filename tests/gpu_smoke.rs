//! One trivial WGSL compute kernel on the default adapter (lavapipe in CI; never skipped).

use wgpu::util::DeviceExt;
use wquant::backend::gpu::device::{DeviceSpec, GpuDevice};

#[test]
fn trivial_kernel_runs_on_the_default_adapter() {
    let dev = GpuDevice::open(DeviceSpec::Auto).expect("a wgpu adapter (lavapipe in CI)");
    eprintln!(
        "adapter: {:?} {:?} {}",
        dev.info.name, dev.info.backend, dev.info.driver_info
    );
    let src = "@group(0) @binding(0) var<storage, read_write> a: array<u32>;\n\
               @compute @workgroup_size(64)\n\
               fn main(@builtin(global_invocation_id) g: vec3<u32>) {\n\
                 if (g.x < arrayLength(&a)) { a[g.x] = a[g.x] * 3u + g.x; }\n\
               }";
    let n = 1000u32;
    let input: Vec<u32> = (0..n).map(|i| i * 7 + 1).collect();
    let d = &dev.device;
    let buf = d.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: None,
        contents: bytemuck::cast_slice(&input),
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
    });
    let staging = d.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: (n * 4) as u64,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let module = d.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: None,
        source: wgpu::ShaderSource::Wgsl(src.into()),
    });
    let pipe = d.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: None,
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    });
    let bg = d.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &pipe.get_bind_group_layout(0),
        entries: &[wgpu::BindGroupEntry {
            binding: 0,
            resource: buf.as_entire_binding(),
        }],
    });
    let mut enc = d.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        pass.set_pipeline(&pipe);
        pass.set_bind_group(0, &bg, &[]);
        pass.dispatch_workgroups(n.div_ceil(64), 1, 1);
    }
    enc.copy_buffer_to_buffer(&buf, 0, &staging, 0, (n * 4) as u64);
    dev.queue.submit([enc.finish()]);
    staging
        .slice(..)
        .map_async(wgpu::MapMode::Read, |r| r.unwrap());
    d.poll(wgpu::PollType::wait_indefinitely()).unwrap();
    let out: Vec<u32> =
        bytemuck::cast_slice(&staging.slice(..).get_mapped_range().unwrap()).to_vec();
    let want: Vec<u32> = (0..n).map(|i| (i * 7 + 1) * 3 + i).collect();
    assert_eq!(out, want);
}

#[test]
fn device_spec_parsing() {
    assert_eq!(DeviceSpec::parse("auto").unwrap(), DeviceSpec::Auto);
    assert_eq!(DeviceSpec::parse("CPU").unwrap(), DeviceSpec::Cpu);
    assert_eq!(DeviceSpec::parse("gpu").unwrap(), DeviceSpec::Gpu(None));
    assert_eq!(
        DeviceSpec::parse("gpu:2").unwrap(),
        DeviceSpec::Gpu(Some(2))
    );
    let e = DeviceSpec::parse("gpu:x").unwrap_err().to_string();
    assert!(e.contains("--device"), "{e}");
    assert!(DeviceSpec::parse("tpu").is_err());
    assert!(GpuDevice::open(DeviceSpec::Gpu(Some(9999))).is_err());
}
