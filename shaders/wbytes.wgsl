// Helper (prepended): little-endian byte access into raw GGUF weight bytes bound as `wq`.
fn rd8(o: u32) -> u32 {
    return (wq[o >> 2u] >> ((o & 3u) * 8u)) & 0xffu;
}

// Four bytes at any offset (blocks of 18, 22, 34 and 210 bytes are not word aligned).
fn rd32u(o: u32) -> u32 {
    let sh = (o & 3u) * 8u;
    let lo = wq[o >> 2u];
    if (sh == 0u) {
        return lo;
    }
    return (lo >> sh) | (wq[(o >> 2u) + 1u] << (32u - sh));
}

// Two bytes at an even offset.
fn rd16(o: u32) -> u32 {
    return (wq[o >> 2u] >> ((o & 2u) * 8u)) & 0xffffu;
}

fn rdf16(o: u32) -> f32 {
    return unpack2x16float(rd16(o)).x;
}

// The four bytes at offset 4·i + sh/8 of a run whose aligned words are lo = word i, hi = word i+1
// (sh = 0, 8, 16 or 24). Branch-free, so a block's words are loaded once each whatever its
// alignment: on llvmpipe every load is a per-lane loop, the dominant cost of dequantizing.
fn funnel(lo: u32, hi: u32, sh: u32) -> u32 {
    return (lo >> sh) | ((hi << (31u - sh)) << 1u);
}
