//! Peak arithmetic rates of known adapters, so `wquant bench` can say what fraction of the
//! hardware a kernel reaches. Dense figures (no structured sparsity) at boost clock, from the
//! vendors' data sheets: NVIDIA H200 (SXM: FP32 67 TFLOP/s, FP16 tensor 989.5 dense; NVL 60 /
//! 835), H100 (SXM 67 / 989.5; PCIe 51 / 756), A100 (19.5 / 312), L40S (91.6 / 362), L4
//! (30.3 / 121), A10 (31.2 / 125), T4 (8.1 / 65), GeForce RTX 4090 (82.6 / 165.2 with FP32
//! accumulation) and RTX 3090 (35.6 / 71); AMD Instinct MI300X (FP32 vector 163.4 / FP16 matrix
//! 1307.4). The f16 figure is the matrix unit's (tensor cores), reachable only through
//! cooperative-matrix kernels; plain WGSL f16 arithmetic runs at about twice the f32 rate.
//! Unknown adapters (software ones included) get no figure: nothing is guessed.

/// Peak rates of an adapter, TFLOP/s.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Peak {
    /// The table row that matched.
    pub name: &'static str,
    pub f32_tflops: f64,
    /// Dense f16 on the matrix units (f32 accumulation where the vendor lists both).
    pub f16_tflops: f64,
}

/// (substring of the adapter name, lower case; row name; f32; f16). More specific names first:
/// the first row whose key the name contains wins.
const TABLE: &[(&str, &str, f64, f64)] = &[
    ("h200 nvl", "NVIDIA H200 NVL", 60.0, 835.0),
    ("h200", "NVIDIA H200 SXM", 67.0, 989.5),
    ("h100 pcie", "NVIDIA H100 PCIe", 51.0, 756.0),
    ("h100", "NVIDIA H100 SXM", 67.0, 989.5),
    ("a100", "NVIDIA A100", 19.5, 312.0),
    ("l40s", "NVIDIA L40S", 91.6, 362.0),
    ("nvidia l4", "NVIDIA L4", 30.3, 121.0),
    ("nvidia a10", "NVIDIA A10", 31.2, 125.0),
    ("tesla t4", "NVIDIA T4", 8.1, 65.0),
    ("rtx 4090", "GeForce RTX 4090", 82.6, 165.2),
    ("rtx 3090", "GeForce RTX 3090", 35.6, 71.0),
    ("mi300x", "AMD Instinct MI300X", 163.4, 1307.4),
];

/// The peak of the adapter called `adapter_name` (as wgpu reports it), if wquant knows it.
pub fn peak_of(adapter_name: &str) -> Option<Peak> {
    let n = adapter_name.to_ascii_lowercase();
    // "NVIDIA A100" must not match "NVIDIA A10", nor "NVIDIA L40S" "NVIDIA L4": those keys
    // need the name to end or continue with a non-alphanumeric character after them.
    TABLE
        .iter()
        .find_map(|&(key, name, f32_tflops, f16_tflops)| {
            let at = n.find(key)?;
            let next = n[at + key.len()..].chars().next();
            if next.is_some_and(|c| c.is_ascii_alphanumeric()) {
                return None;
            }
            Some(Peak {
                name,
                f32_tflops,
                f16_tflops,
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_the_right_row() {
        let row = |n: &str| peak_of(n).map(|p| p.name);
        assert_eq!(row("NVIDIA H200"), Some("NVIDIA H200 SXM"));
        assert_eq!(row("NVIDIA H200 NVL"), Some("NVIDIA H200 NVL"));
        assert_eq!(row("NVIDIA H100 80GB HBM3"), Some("NVIDIA H100 SXM"));
        assert_eq!(row("NVIDIA H100 PCIe"), Some("NVIDIA H100 PCIe"));
        assert_eq!(row("NVIDIA A100-SXM4-80GB"), Some("NVIDIA A100"));
        assert_eq!(row("NVIDIA A10"), Some("NVIDIA A10"));
        assert_eq!(row("NVIDIA L40S"), Some("NVIDIA L40S"));
        assert_eq!(row("NVIDIA L4"), Some("NVIDIA L4"));
        assert_eq!(row("llvmpipe (LLVM 15.0.6, 256 bits)"), None);
    }
}
