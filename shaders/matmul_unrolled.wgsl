// y = x·Wᵀ for CPU adapters (llvmpipe): the register variant whenever the adapter has subgroups of
// at least 8 and rows are whole 32-blocks (kernels/matmul.rs picks it; matmul.wgsl otherwise).
//
// On llvmpipe a storage-buffer load is a per-lane loop with a branch and a bounds check per word,
// several times dearer than an FMA, and big loops are not unrolled (arrays they index spill).
// So: the host generates `tile_block`/`tile_store` (prepended, fully unrolled, constant indices
// only), the activations come from a texture (texel fetches are branch-free gathers there), and
// each 8-lane subgroup fetches every 32-float slice of x once (4 floats per lane) and shares it
// with subgroupBroadcast. A lane owns TN weight rows (nb + 8r) and the subgroup TM tokens; the
// lane dequantizes each 32-block of its rows once for all TM tokens.
//
// Summation order as matmul.wgsl: per 32-block s = Σ_j x_j·w_j (j in order,
// from 0), then acc += s, blocks in order. Row t's result does not depend on the other rows of x.
struct Params {
    m: u32,         // rows of x (tokens)
    n: u32,         // weight rows in this slice
    k: u32,         // row length (a multiple of 32)
    row_bytes: u32, // bytes per weight row
    n0: u32,        // first output column of this slice
    ldy: u32,       // row stride of y
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> wq: array<u32>;
// x flattened row-major into texels of 4 floats (bit patterns), 1024 texels per texture row.
@group(0) @binding(2) var xt: texture_2d<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

// Floats 4i..4i+4 of x (flattened).
fn x4(i: u32) -> vec4<f32> {
    return bitcast<vec4<f32>>(textureLoad(xt, vec2<u32>(i & 1023u, i >> 10u), 0));
}

@compute @workgroup_size(8)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let nb = wg.x * (8u * TN) + li;
    let mb = wg.y * TM;
    var acc: array<f32, TM * TN>;
    for (var k0 = 0u; k0 < p.k; k0 += 32u) {
        tile_block(&acc, nb, mb, lane % 8u, k0);
    }
    tile_store(&acc, nb, mb);
}
