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
