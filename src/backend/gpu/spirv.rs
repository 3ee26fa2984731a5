//! Kernels whose float semantics must be exact (the block quantizers): WGSL compiled here to
//! SPIR-V with naga, then every float add/sub/mul/div marked `NoContraction` (so no driver fuses
//! `a*b+c` into an FMA or reassociates) and, where the device supports them
//! (VK_KHR_shader_float_controls, core in Vulkan 1.2), the float-controls execution modes
//! DenormPreserve, RoundingModeRTE and SignedZeroInfNanPreserve for 32-bit floats. The module
//! reaches the driver through wgpu's SPIR-V passthrough (`Features::PASSTHROUGH_SHADERS`,
//! Vulkan only); elsewhere the WGSL goes through wgpu as usual (`Guarantees::spirv == false`).

use anyhow::{anyhow, Result};

/// What an adapter guarantees for the exact kernels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Guarantees {
    /// SPIR-V passthrough is used (Vulkan with `PASSTHROUGH_SHADERS`): every float op is
    /// `NoContraction`.
    pub spirv: bool,
    /// `DenormPreserve` declared for 32-bit floats (the device supports it).
    pub denorm_preserve: bool,
    /// `RoundingModeRTE` declared for 32-bit floats.
    pub rte: bool,
    /// `SignedZeroInfNanPreserve` declared for 32-bit floats.
    pub signed_zero_inf_nan: bool,
    /// The device's Vulkan API version is 1.2 or later (float controls are core there).
    vulkan_1_2: bool,
    /// SPIR-V version naga emits for the device.
    spirv_version: (u8, u8),
}

impl Guarantees {
    /// No passthrough: the WGSL path with nothing declared.
    pub const WGSL: Guarantees = Guarantees {
        spirv: false,
        denorm_preserve: false,
        rte: false,
        signed_zero_inf_nan: false,
        vulkan_1_2: false,
        spirv_version: (1, 0),
    };

    /// One line for `wquant devices` and the conformance notes.
    pub fn describe(&self) -> String {
        if !self.spirv {
            return "WGSL path (no SPIR-V passthrough): contraction not forbidden; \
                    CR div/sqrt and fma-rounded products in the kernels"
                .into();
        }
        let yes_no = |b: bool| if b { "yes" } else { "no" };
        format!(
            "SPIR-V {}.{} passthrough, NoContraction: yes, DenormPreserve: {}, RTE: {}, \
             SignedZeroInfNanPreserve: {}",
            self.spirv_version.0,
            self.spirv_version.1,
            yes_no(self.denorm_preserve),
            yes_no(self.rte),
            yes_no(self.signed_zero_inf_nan),
        )
    }

    /// Short label: `spirv` or `wgsl`.
    pub fn path(&self) -> &'static str {
        if self.spirv {
            "spirv"
        } else {
            "wgsl"
        }
    }
}

/// The guarantees for `adapter` when its device was created with `features` (passthrough must
/// have been requested: device.rs asks for it wherever it is offered).
pub fn guarantees(adapter: &wgpu::Adapter, features: wgpu::Features) -> Guarantees {
    if adapter.get_info().backend != wgpu::Backend::Vulkan
        || !features.contains(wgpu::Features::PASSTHROUGH_SHADERS)
    {
        return Guarantees::WGSL;
    }
    vulkan_float_controls(adapter).unwrap_or(Guarantees::WGSL)
}

/// Float-controls properties of a Vulkan adapter, read through wgpu-hal (as `device::vram_info`).
#[cfg(any(
    target_os = "linux",
    target_os = "windows",
    target_os = "android",
    target_os = "freebsd"
))]
fn vulkan_float_controls(adapter: &wgpu::Adapter) -> Option<Guarantees> {
    use ash::vk;
    // SAFETY: read-only queries on handles owned by `adapter`, which outlives this call.
    unsafe {
        let hal = adapter.as_hal::<wgpu::hal::api::Vulkan>()?;
        let inst = hal.shared_instance().raw_instance();
        let phys = hal.raw_physical_device();
        let api = inst.get_physical_device_properties(phys).api_version;
        let instance_api = hal.shared_instance().instance_api_version();
        // The SPIR-V version wgpu itself would use (Vulkan's SPIR-V environment table), capped
        // at 1.3: float controls then need the SPV_KHR_float_controls extension, allowed from
        // Vulkan 1.2 (where VK_KHR_shader_float_controls is core).
        let version = if api >= vk::API_VERSION_1_1 && instance_api >= vk::API_VERSION_1_1 {
            (1, 3)
        } else {
            (1, 0)
        };
        let mut g = Guarantees {
            spirv: true,
            spirv_version: version,
            ..Guarantees::WGSL
        };
        if api < vk::API_VERSION_1_2 || instance_api < vk::API_VERSION_1_2 {
            return Some(g);
        }
        g.vulkan_1_2 = true;
        let mut fc = vk::PhysicalDeviceFloatControlsProperties::default();
        let mut props = vk::PhysicalDeviceProperties2::default().push_next(&mut fc);
        inst.get_physical_device_properties2(phys, &mut props);
        // With independence NONE all widths must share one mode; only 32-bit floats are
        // declared, so require per-width independence (or 32-bit-only grouping).
        let independent =
            |i: vk::ShaderFloatControlsIndependence| i != vk::ShaderFloatControlsIndependence::NONE;
        g.denorm_preserve = fc.shader_denorm_preserve_float32 == vk::TRUE
            && independent(fc.denorm_behavior_independence);
        g.rte = fc.shader_rounding_mode_rte_float32 == vk::TRUE
            && independent(fc.rounding_mode_independence);
        g.signed_zero_inf_nan = fc.shader_signed_zero_inf_nan_preserve_float32 == vk::TRUE;
        Some(g)
    }
}

#[cfg(not(any(
    target_os = "linux",
    target_os = "windows",
    target_os = "android",
    target_os = "freebsd"
)))]
fn vulkan_float_controls(_adapter: &wgpu::Adapter) -> Option<Guarantees> {
    None
}

/// WGSL → SPIR-V (entry point `main`, compute) with the exact semantics `g` allows.
pub fn compile(wgsl: &str, g: &Guarantees) -> Result<Vec<u32>> {
    add_exact_semantics(&naga_spirv(wgsl, g.spirv_version)?, g)
}

/// naga's own SPIR-V for `wgsl` (entry point `main`, compute), before `add_exact_semantics`.
fn naga_spirv(wgsl: &str, lang_version: (u8, u8)) -> Result<Vec<u32>> {
    let module =
        naga::front::wgsl::parse_str(wgsl).map_err(|e| anyhow!("{}", e.emit_to_string(wgsl)))?;
    // Subgroup operations (the 8-lanes-per-block kernels) only run where the device has them
    // (`quant_block::runnable`), which on Vulkan means 1.1+ and SPIR-V 1.3 here.
    let info = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::SUBGROUP,
    )
    .subgroup_stages(naga::valid::ShaderStages::COMPUTE)
    .subgroup_operations(naga::valid::SubgroupOperationSet::all())
    .validate(&module)
    .map_err(|e| anyhow!("{}", e.emit_to_string(wgsl)))?;
    let options = naga::back::spv::Options {
        lang_version,
        flags: naga::back::spv::WriterFlags::empty(),
        // Resource bindings map one to one (group → set, binding → binding).
        fake_missing_bindings: true,
        // As wgpu does without robustBufferAccess2: indices clamped, never out of bounds.
        bounds_check_policies: naga::proc::BoundsCheckPolicies {
            index: naga::proc::BoundsCheckPolicy::Restrict,
            buffer: naga::proc::BoundsCheckPolicy::Restrict,
            image_load: naga::proc::BoundsCheckPolicy::Restrict,
            binding_array: naga::proc::BoundsCheckPolicy::Unchecked,
        },
        ..Default::default()
    };
    let pipeline = naga::back::spv::PipelineOptions {
        entry_point: "main".into(),
        shader_stage: naga::ShaderStage::Compute,
    };
    naga::back::spv::write_vec(&module, &info, &options, Some(&pipeline))
        .map_err(|e| anyhow!("SPIR-V generation: {e}"))
}

// SPIR-V opcodes, decorations, execution modes and capabilities used below (SPIR-V spec §3).
const OP_EXTENSION: u32 = 10;
const OP_CAPABILITY: u32 = 17;
const OP_ENTRY_POINT: u32 = 15;
const OP_EXECUTION_MODE: u32 = 16;
const OP_EXECUTION_MODE_ID: u32 = 331;
const OP_DECORATE: u32 = 71;
/// Float arithmetic that a compiler could contract or reassociate: OpFNegate is exact and
/// left alone; OpFAdd, OpFSub, OpFMul, OpFDiv, OpFRem, OpFMod, OpVectorTimesScalar, OpDot.
const FLOAT_ARITH: [u32; 8] = [129, 131, 133, 136, 140, 141, 142, 148];
const DECORATION_NO_CONTRACTION: u32 = 42;
const MODE_DENORM_PRESERVE: u32 = 4459;
const MODE_SIGNED_ZERO_INF_NAN_PRESERVE: u32 = 4461;
const MODE_ROUNDING_MODE_RTE: u32 = 4462;
const CAP_DENORM_PRESERVE: u32 = 4464;
const CAP_SIGNED_ZERO_INF_NAN_PRESERVE: u32 = 4466;
const CAP_ROUNDING_MODE_RTE: u32 = 4467;

/// Instructions of the module's preamble (SPIR-V logical layout sections 1–8: capabilities
/// through annotations); the first instruction outside it starts the types and constants.
const PREAMBLE: [u32; 25] = [
    0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 14, 15, 16, 17, 71, 72, 73, 74, 75, 317, 330, 331, 332,
];

fn instr(op: u32, operands: &[u32]) -> Vec<u32> {
    let mut v = vec![((operands.len() as u32 + 1) << 16) | op];
    v.extend_from_slice(operands);
    v
}

/// A literal string operand: UTF-8, NUL-terminated, padded to whole little-endian words.
fn string_words(s: &str) -> Vec<u32> {
    let mut b = s.as_bytes().to_vec();
    b.push(0);
    while !b.len().is_multiple_of(4) {
        b.push(0);
    }
    b.chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// The module `words` with every float arithmetic result decorated `NoContraction` and, as `g`
/// allows, the float-controls capabilities, extension and execution modes (32-bit) on every
/// entry point.
pub fn add_exact_semantics(words: &[u32], g: &Guarantees) -> Result<Vec<u32>> {
    if words.len() < 5 || words[0] != 0x0723_0203 {
        return Err(anyhow!("not a SPIR-V module"));
    }
    // Split into instructions.
    let mut instrs: Vec<&[u32]> = Vec::new();
    let mut i = 5;
    while i < words.len() {
        let n = (words[i] >> 16) as usize;
        if n == 0 || i + n > words.len() {
            return Err(anyhow!("malformed SPIR-V instruction at word {i}"));
        }
        instrs.push(&words[i..i + n]);
        i += n;
    }
    let op = |w: &[u32]| w[0] & 0xffff;
    let mut modes = Vec::new();
    if g.vulkan_1_2 {
        if g.denorm_preserve {
            modes.push((CAP_DENORM_PRESERVE, MODE_DENORM_PRESERVE));
        }
        if g.rte {
            modes.push((CAP_ROUNDING_MODE_RTE, MODE_ROUNDING_MODE_RTE));
        }
        if g.signed_zero_inf_nan {
            modes.push((
                CAP_SIGNED_ZERO_INF_NAN_PRESERVE,
                MODE_SIGNED_ZERO_INF_NAN_PRESERVE,
            ));
        }
    }
    let entry_points: Vec<u32> = instrs
        .iter()
        .filter(|w| op(w) == OP_ENTRY_POINT)
        .map(|w| w[2])
        .collect();
    let arith_ids: Vec<u32> = instrs
        .iter()
        .filter(|w| FLOAT_ARITH.contains(&op(w)) && w.len() >= 3)
        .map(|w| w[2])
        .collect();
    let last_cap = instrs.iter().rposition(|w| op(w) == OP_CAPABILITY);
    let last_mode = instrs
        .iter()
        .rposition(|w| matches!(op(w), OP_EXECUTION_MODE | OP_EXECUTION_MODE_ID))
        .or_else(|| instrs.iter().rposition(|w| op(w) == OP_ENTRY_POINT));
    let body = instrs
        .iter()
        .position(|w| !PREAMBLE.contains(&op(w)))
        .unwrap_or(instrs.len());
    let (Some(last_cap), Some(last_mode)) = (last_cap, last_mode) else {
        return Err(anyhow!("SPIR-V module without capabilities or entry point"));
    };
    let mut out = words[..5].to_vec();
    for (k, w) in instrs.iter().enumerate() {
        if k == body {
            for &id in &arith_ids {
                out.extend(instr(OP_DECORATE, &[id, DECORATION_NO_CONTRACTION]));
            }
        }
        out.extend_from_slice(w);
        if k == last_cap && !modes.is_empty() {
            for &(cap, _) in &modes {
                out.extend(instr(OP_CAPABILITY, &[cap]));
            }
            // Core from SPIR-V 1.4; before that the extension (Vulkan 1.2 allows it).
            if g.spirv_version < (1, 4) {
                out.extend(instr(OP_EXTENSION, &string_words("SPV_KHR_float_controls")));
            }
        }
        if k == last_mode {
            for &ep in &entry_points {
                for &(_, mode) in &modes {
                    out.extend(instr(OP_EXECUTION_MODE, &[ep, mode, 32]));
                }
            }
        }
    }
    if body == instrs.len() {
        for &id in &arith_ids {
            out.extend(instr(OP_DECORATE, &[id, DECORATION_NO_CONTRACTION]));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = "@group(0) @binding(0) var<storage, read_write> d: array<f32>;
        @compute @workgroup_size(64)
        fn main(@builtin(global_invocation_id) g: vec3<u32>) {
            let a = d[g.x];
            d[g.x] = a * d[1] + a / d[2] - d[3];
        }";

    fn all_modes() -> Guarantees {
        Guarantees {
            spirv: true,
            denorm_preserve: true,
            rte: true,
            signed_zero_inf_nan: true,
            vulkan_1_2: true,
            spirv_version: (1, 3),
        }
    }

    /// (opcode, operands) of each instruction after the header.
    fn parse(words: &[u32]) -> Vec<(u32, Vec<u32>)> {
        let mut v = Vec::new();
        let mut i = 5;
        while i < words.len() {
            let n = (words[i] >> 16) as usize;
            assert!(n > 0 && i + n <= words.len(), "malformed at {i}");
            v.push((words[i] & 0xffff, words[i + 1..i + n].to_vec()));
            i += n;
        }
        v
    }

    #[test]
    fn every_float_op_is_no_contraction_and_modes_are_declared() {
        let words = compile(SRC, &all_modes()).unwrap();
        let ins = parse(&words);
        let arith: Vec<u32> = ins
            .iter()
            .filter(|(o, _)| FLOAT_ARITH.contains(o))
            .map(|(_, w)| w[1])
            .collect();
        // One multiply, one divide, one add and one subtract.
        assert_eq!(arith.len(), 4, "{ins:?}");
        let decorated: Vec<u32> = ins
            .iter()
            .filter(|(o, w)| *o == OP_DECORATE && w[1] == DECORATION_NO_CONTRACTION)
            .map(|(_, w)| w[0])
            .collect();
        assert_eq!(decorated, arith);
        let caps: Vec<u32> = ins
            .iter()
            .filter(|(o, _)| *o == OP_CAPABILITY)
            .map(|(_, w)| w[0])
            .collect();
        for c in [
            CAP_DENORM_PRESERVE,
            CAP_ROUNDING_MODE_RTE,
            CAP_SIGNED_ZERO_INF_NAN_PRESERVE,
        ] {
            assert!(caps.contains(&c), "capability {c}");
        }
        let ep = ins.iter().find(|(o, _)| *o == OP_ENTRY_POINT).unwrap().1[1];
        for m in [
            MODE_DENORM_PRESERVE,
            MODE_ROUNDING_MODE_RTE,
            MODE_SIGNED_ZERO_INF_NAN_PRESERVE,
        ] {
            assert!(
                ins.iter()
                    .any(|(o, w)| *o == OP_EXECUTION_MODE && w[..] == [ep, m, 32]),
                "mode {m}"
            );
        }
        assert!(ins.iter().any(
            |(o, w)| *o == OP_EXTENSION && w[..] == string_words("SPV_KHR_float_controls")[..]
        ));
        // Logical layout: every decoration before the first type, capabilities first.
        let first_type = ins.iter().position(|(o, _)| !PREAMBLE.contains(o)).unwrap();
        let last_decorate = ins.iter().rposition(|(o, _)| *o == OP_DECORATE).unwrap();
        assert!(last_decorate < first_type);
        let last_cap = ins.iter().rposition(|(o, _)| *o == OP_CAPABILITY).unwrap();
        assert!(ins[..last_cap].iter().all(|(o, _)| *o == OP_CAPABILITY));
    }

    #[test]
    fn without_float_controls_only_no_contraction_is_added() {
        let g = Guarantees {
            spirv: true,
            spirv_version: (1, 3),
            ..Guarantees::WGSL
        };
        let plain = naga_spirv(SRC, (1, 3)).unwrap();
        let words = compile(SRC, &g).unwrap();
        // Exactly four OpDecorate NoContraction instructions (3 words each) more.
        assert_eq!(words.len(), plain.len() + 4 * 3);
        let ins = parse(&words);
        assert!(!ins.iter().any(|(o, _)| *o == OP_EXTENSION));
        assert!(!ins
            .iter()
            .any(|(o, w)| *o == OP_CAPABILITY && w[0] == CAP_DENORM_PRESERVE));
    }

    #[test]
    fn malformed_input_is_an_error() {
        assert!(add_exact_semantics(&[1, 2, 3], &all_modes()).is_err());
        // An instruction claiming more words than are left.
        let mut w = compile(SRC, &all_modes()).unwrap();
        w.push((5 << 16) | 1);
        assert!(add_exact_semantics(&w, &all_modes()).is_err());
    }
}
