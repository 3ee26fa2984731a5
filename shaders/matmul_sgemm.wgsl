// y = x·Wᵀ for hardware GPUs, built like an SGEMM. The host (kernels/matmul_sgemm.rs) prepends the
// tile constants (BM tokens × BN weight rows per workgroup, MV·NV vec4 accumulators of 4×4
// outputs per thread, THREADS), the activation reader `x4` and the unrolled `tile_mac` and
// `tile_store`.
//
// Per 32-wide K slice: each weight row of the tile is dequantized ONCE (dq32) into workgroup
// memory stored transposed, ws[k][n]; activations are loaded as vec4s (consecutive threads take
// consecutive rows, so the transposing stores hit distinct banks) into xs[k][m]; then 32 steps of
// a register outer product (vec4 loads from both tiles, 4·MV·NV vec4 FMAs).
//
// Summation order, for every tile shape and precision: each output starts at 0 and takes acc = fma(x_k, w_k,
// acc) for k = 0, 1, … in order (a ragged last slice adds fma(0, 0, acc)). So a row's bits never
// depend on m, on the row's position in the batch or on which tile shape the host picked.
struct Params {
    m: u32,         // rows of x (tokens)
    n: u32,         // weight rows in this slice
    k: u32,         // row length (input features)
    row_bytes: u32, // bytes per weight row
    n0: u32,        // first output column of this slice
    ldy: u32,       // row stride of y
    tile_n0: u32,   // first tile of this dispatch along n (grids over 65,535 are split)
    tile_m0: u32,   // first tile of this dispatch along m
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> wq: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

// The tiles `xs` ([k][m]) and `ws` ([k][n]), vec4s along m and n, are generated with their
// element type: f32, or f16 for `--precision f16` (put_x/put_w round each value to f16 once, as
// it is stored; tile_mac widens back to f32, so every product and sum is f32 as above).

@compute @workgroup_size(THREADS)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let nb = (wg.x + p.tile_n0) * BN;
    let mb = (wg.y + p.tile_m0) * BM;
    // This thread's 4-wide columns: tx + h·BN/(4·NV), ty + g·BM/(4·MV) (vec4 indices).
    let tx = li % (BN / (4u * NV));
    let ty = li / (BN / (4u * NV));
    var acc: array<vec4<f32>, 4u * MV * NV>;
    var w: array<f32, 32>;
    for (var k0 = 0u; k0 < p.k; k0 += 32u) {
        let kn = min(32u, p.k - k0);
        // Activations: 8 vec4s per row; rows past m repeat the last one (never stored).
        for (var i = li; i < 8u * BM; i += THREADS) {
            let mr = i % BM;
            let q = i / BM;
            let v = x4(min(mb + mr, p.m - 1u), k0 / 4u + q);
            for (var c = 0u; c < 4u; c++) {
                put_x((4u * q + c) * (BM / 4u) + mr / 4u, mr % 4u, v[c]);
            }
        }
        // Weights: one thread per row of the tile; rows past n repeat the last one.
        for (var r = li; r < BN; r += THREADS) {
            let row = min(nb + r, p.n - 1u) * p.row_bytes;
            if (kn == 32u) {
                dq32(row, k0, &w);
            } else {
                // Ragged tail (float rows only): zeros past k, so they add fma(0, 0, acc).
                for (var j = 0u; j < 32u; j++) {
                    w[j] = 0.0;
                    if (j < kn) {
                        w[j] = dq1(row, k0 + j);
                    }
                }
            }
            for (var j = 0u; j < 32u; j++) {
                put_w(j * (BN / 4u) + r / 4u, r % 4u, w[j]);
            }
        }
        workgroupBarrier();
        for (var k = 0u; k < 32u; k++) {
            tile_mac(&acc, k, tx, ty);
        }
        workgroupBarrier();
    }
    tile_store(&acc, mb, nb, tx, ty);
}
