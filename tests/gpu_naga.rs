//! Every shader, as the host assembles it (helpers prepended), must pass naga's WGSL parser and
//! its validator with the capabilities the device grants: wgpu grants `SHADER_FLOAT16_IN_FLOAT32`
//! (WGSL's `unpack2x16float`) to every WebGPU-core adapter; the optional features requested are
//! subgroups (`matmul_unrolled.wgsl`, used only where the adapter offers them) and shader-f16
//! (only the `--precision f16` SGEMM tiles, labelled `+tiles-F16`, may use it).

use wquant::backend::gpu::kernels;

/// The backend's kernels and the KLD kernels (`kld::gpu`, kept on the KLD side).
fn all_sources() -> Vec<(String, String)> {
    let mut v = kernels::all_sources();
    v.extend(wquant::kld::gpu::sources());
    v
}

fn shader_files() -> Vec<&'static str> {
    let mut v = kernels::shader_files();
    v.extend(wquant::kld::gpu::shader_files());
    v
}

#[test]
fn every_assembled_shader_parses_and_validates() {
    let sources = all_sources();
    assert!(sources.len() >= 40, "expected every kernel × weight type");
    let mut failures = Vec::new();
    for (label, src) in &sources {
        let module = match naga::front::wgsl::parse_str(src) {
            Ok(m) => m,
            Err(e) => {
                failures.push(format!("{label}: parse: {}", e.emit_to_string(src)));
                continue;
            }
        };
        let mut caps = naga::valid::Capabilities::SHADER_FLOAT16_IN_FLOAT32
            | naga::valid::Capabilities::SUBGROUP;
        if label.ends_with("+tiles-F16") {
            caps |= naga::valid::Capabilities::SHADER_FLOAT16;
        }
        let mut v = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps);
        if let Err(e) = v.validate(&module) {
            failures.push(format!("{label}: validate: {}", e.emit_to_string(src)));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_shader_file_is_covered() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .expect("shaders/ directory")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".wgsl"))
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = shader_files().iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(
        on_disk, listed,
        "shaders/*.wgsl and the listed shader files differ"
    );
    // Each listed file's text occurs in at least one assembled source.
    let all = all_sources();
    for f in &listed {
        let text = std::fs::read_to_string(dir.join(f)).unwrap();
        assert!(
            all.iter().any(|(_, s)| s.contains(&text)),
            "{f} is not part of any assembled shader"
        );
    }
}

#[test]
fn the_validator_rejects_a_broken_shader() {
    // Guards against a validator set up so loosely that it accepts anything: a type error that
    // the parser lets through must fail validation or parsing.
    let bad = "@group(0) @binding(0) var<storage, read_write> a: array<f32>;\n\
               @compute @workgroup_size(1) fn main() { a[0] = 1u; }";
    let parsed = naga::front::wgsl::parse_str(bad);
    let rejected = match parsed {
        Err(_) => true,
        Ok(m) => naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::empty(),
        )
        .validate(&m)
        .is_err(),
    };
    assert!(rejected);
}
