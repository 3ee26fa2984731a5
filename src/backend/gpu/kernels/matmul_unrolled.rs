//! `shaders/matmul_unrolled.wgsl`: y = x·Wᵀ for CPU adapters, with the tile loops unrolled by
//! the host (`tile_block`, `tile_store` are generated here and prepended) and the activations read
//! from a texture. Dispatched by `matmul::run` for the register variant when [`usable`].

use super::super::{Ctx, GpuTensor, GpuWeight};
use crate::gguf::GgmlType;
use std::fmt::Write;

pub const SHADER: &str = include_str!("../../../../shaders/matmul_unrolled.wgsl");

/// Texels (4 floats each) per row of the activations texture; `x4()` in the shader agrees.
const TEX_WIDTH: usize = 1024;

/// Lanes per subgroup the kernel shares activations across (its workgroup size).
const LANES: usize = 8;

/// Tokens (TM) and weight rows per lane (TN) of one tile, the same for every type. A lane loads each
/// 32-block of its rows once per TM tokens (weight loads dominate: they are storage-buffer loads),
/// x's texel fetches are cheap, and llvmpipe's compile time grows with TN·(loads per block) and
/// TM·TN. Measured on lavapipe (SmolLM2 shapes): 32×2 is as fast as 16×4 or 32×4 for quantized
/// types and faster for F32, and compiles in half the time of 16×4.
pub const TM: usize = 32;
pub const TN: usize = 2;

/// The generated part: tile constants, `tile_block` and `tile_store`.
fn generated(tm: usize, tn: usize) -> String {
    let mut s = String::new();
    let tile = tm * tn;
    let _ = writeln!(s, "const TM: u32 = {tm}u;\nconst TN: u32 = {tn}u;\n");
    let _ = writeln!(
        s,
        "// One 32-block of k (from k0) for the whole tile (generated: constant indices only).\n\
         fn tile_block(acc: ptr<function, array<f32, {tile}>>, nb: u32, mb: u32, q: u32, k0: u32) {{"
    );
    for r in 0..tn {
        let _ = writeln!(s, "    var w{r}: array<f32, 32>;");
        let _ = writeln!(
            s,
            "    dq32(min(nb + {}u, p.n - 1u) * p.row_bytes, k0, &w{r});",
            LANES * r
        );
    }
    // Out-of-range tokens recompute the last one; tile_store drops them.
    let _ = writeln!(s, "    let kq = k0 / 4u + q;");
    for t in 0..tm {
        let _ = writeln!(
            s,
            "    let v{t} = x4(min(mb + {t}u, p.m - 1u) * (p.k / 4u) + kq);"
        );
    }
    for t in 0..tm {
        let _ = writeln!(s, "    {{");
        for l in 0..LANES {
            let _ = writeln!(s, "        let x{l} = subgroupBroadcast(v{t}, {l}u);");
        }
        for r in 0..tn {
            let _ = writeln!(s, "        var s{r} = 0.0;");
        }
        for j in 0..32 {
            let c = ["x", "y", "z", "w"][j % 4];
            for r in 0..tn {
                let _ = writeln!(s, "        s{r} += x{}.{c} * w{r}[{j}];", j / 4);
            }
        }
        for r in 0..tn {
            let _ = writeln!(s, "        (*acc)[{}] += s{r};", t * tn + r);
        }
        let _ = writeln!(s, "    }}");
    }
    let _ = writeln!(s, "}}\n");
    let _ = writeln!(
        s,
        "fn tile_store(acc: ptr<function, array<f32, {tile}>>, nb: u32, mb: u32) {{"
    );
    for t in 0..tm {
        for r in 0..tn {
            let n = LANES * r;
            let _ = writeln!(
                s,
                "    if (mb + {t}u < p.m && nb + {n}u < p.n) {{ y[(mb + {t}u) * p.ldy + p.n0 + nb + {n}u] = (*acc)[{}]; }}",
                t * tn + r
            );
        }
    }
    let _ = writeln!(s, "}}");
    s
}

/// The assembled source for weight type `t`.
pub fn source(t: GgmlType) -> String {
    super::assemble(&[
        super::WBYTES,
        &super::dq_helper(t).expect("supported weight type"),
        &generated(TM, TN),
        SHADER,
    ])
}

/// Whether this kernel can run `w` here: subgroups of at least 8 lanes and rows of whole
/// 32-blocks (so every texel of x is 4 floats of one row).
pub fn usable(ctx: &Ctx, w: &GpuWeight) -> bool {
    ctx.dev.features.contains(wgpu::Features::SUBGROUP)
        && ctx.dev.info.subgroup_min_size as usize >= LANES
        && w.ne0.is_multiple_of(32)
}

/// Most rows of x one call of `run` takes: the texture holds at most max_texture_dimension_2d
/// rows of TEX_WIDTH texels.
pub fn max_rows(ctx: &Ctx, k: usize) -> usize {
    let texels = ctx.dev.limits.max_texture_dimension_2d as usize * TEX_WIDTH;
    // Multiples of 64 rows keep later row ranges' byte offsets into y 256-aligned.
    (texels * 4 / k.max(1) / 64 * 64).max(64)
}

/// Record y[r0..r0+m] = x[r0..r0+m]·Wᵀ: x's rows copied into a texture, one dispatch per slice.
pub fn run(ctx: &Ctx, x: &GpuTensor, r0: usize, m: usize, w: &GpuWeight, y: &GpuTensor) {
    let t = w.ggml_type;
    let pipe = ctx.pipeline(&format!("matmul_unrolled/{t}"), || source(t));
    let d = &ctx.dev.device;
    let k = w.ne0;
    let texels = m * k / 4;
    let full = texels / TEX_WIDTH;
    let rest = texels % TEX_WIDTH;
    let tex = d.create_texture(&wgpu::TextureDescriptor {
        label: Some("matmul x"),
        size: wgpu::Extent3d {
            width: TEX_WIDTH as u32,
            height: (full + usize::from(rest > 0)) as u32,
            depth_or_array_layers: 1,
        },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: wgpu::TextureFormat::Rgba32Uint,
        usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
        view_formats: &[],
    });
    let x0 = (r0 * k * 4) as u64;
    let row_bytes = (TEX_WIDTH * 16) as u64;
    ctx.encode(|enc| {
        for (y0, height, width) in [(0, full, TEX_WIDTH), (full, usize::from(rest > 0), rest)] {
            if height == 0 {
                continue;
            }
            let mut dst = tex.as_image_copy();
            dst.origin.y = y0 as u32;
            enc.copy_buffer_to_texture(
                wgpu::TexelCopyBufferInfo {
                    buffer: x.buffer(),
                    layout: wgpu::TexelCopyBufferLayout {
                        offset: x0 + y0 as u64 * row_bytes,
                        bytes_per_row: Some(row_bytes as u32),
                        rows_per_image: None,
                    },
                },
                dst,
                wgpu::Extent3d {
                    width: width as u32,
                    height: height as u32,
                    depth_or_array_layers: 1,
                },
            );
        }
    });
    let view = tex.create_view(&wgpu::TextureViewDescriptor::default());
    let y_range = wgpu::BufferBinding {
        buffer: y.buffer(),
        offset: (r0 * w.ne1 * 4) as u64,
        size: wgpu::BufferSize::new((m * w.ne1 * 4) as u64),
    };
    for s in &w.slices {
        let params = [
            m as u32,
            s.rows as u32,
            k as u32,
            w.row_bytes as u32,
            s.row0 as u32,
            w.ne1 as u32,
        ];
        let entries = [
            wgpu::BindGroupEntry {
                binding: 1,
                resource: s.buf.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 2,
                resource: wgpu::BindingResource::TextureView(&view),
            },
            wgpu::BindGroupEntry {
                binding: 3,
                resource: wgpu::BindingResource::Buffer(y_range.clone()),
            },
        ];
        let g = [s.rows.div_ceil(LANES * TN) as u32, m.div_ceil(TM) as u32, 1];
        ctx.dispatch_entries(&pipe, &params, &entries, g);
    }
}
