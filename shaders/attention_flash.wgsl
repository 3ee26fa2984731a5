// Flash-style causal attention with grouped-query heads: one pass with an online softmax;
// optionally inside a sliding window (the query at position i sees keys j with i − j < window;
// 0 = no window).
//
// The host prepends the tile constants (kernels/attention_flash.rs):
//   HD   head_dim               TPR  threads per query row (they split head_dim)
//   DPT  dims per thread        HDP  DPT·TPR (head_dim padded; padded dims are zeros)
//   BR   query rows per group   BC   keys per tile            WG  BR·TPR threads
//
// A workgroup takes BR consecutive "items" of one sequence and one KV head: item t is query
// position t / G of query head hk·G + t % G (G = n_head / n_head_kv), so all the query heads that
// share a KV head read the same K/V tiles. Tiles are counted from the sequence's first token and
// walked in order, and a group never mixes sequences: a row's bits do not depend on how many
// sequences the batch holds or where its sequence sits. Tiles before the group's first visible
// key are skipped; a row sees no key of them anyway, so skipping changes none of its bits.
//
// Per key tile: K tile → shared; each thread dots its HDP/TPR slice of q (registers) with every
// key the row may see; the TPR partials are summed in lane order; V tile → shared over K; each
// row rescales its accumulators (registers, DPT per thread) by exp(m_old − m_new) and adds
// Σ_j exp(s_j − m_new)·v_j.
struct Params {
    rows: u32,
    n_head: u32,
    n_head_kv: u32,
    seq_len: u32,
    scale: f32,
    // Workgroups per (sequence, KV head), and in all (the grid may be folded into y).
    n_blocks: u32,
    n_groups: u32,
    window: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read_write> o: array<f32>;

// K tile, then the V tile over it: [BC][HDP].
var<workgroup> kv: array<f32, BC * HDP>;
// Partial dot products: [row][key][lane].
var<workgroup> part: array<f32, WG * BC>;
// Scaled scores: [row][key].
var<workgroup> sc: array<f32, BR * BC>;

// Below any score; keeps the first tile's rescale finite (its accumulators are zero anyway).
const NO_MAX: f32 = -3.0e38;

fn load_tile(src_is_v: bool, tid: u32, row0: u32, nk: u32, ldkv: u32, col0: u32) {
    for (var e = tid; e < BC * HDP; e += WG) {
        let jj = e / HDP;
        let d = e % HDP;
        var x = 0.0;
        if (jj < nk && d < HD) {
            let at = (row0 + jj) * ldkv + col0 + d;
            if (src_is_v) {
                x = v[at];
            } else {
                x = k[at];
            }
        }
        kv[e] = x;
    }
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
) {
    let g = wid.x + wid.y * nwg.x;
    if (g >= p.n_groups) {
        return;
    }
    let group = p.n_head / p.n_head_kv;
    let blk = g % p.n_blocks;
    let hk = (g / p.n_blocks) % p.n_head_kv;
    let first = (g / (p.n_blocks * p.n_head_kv)) * p.seq_len;
    let n_items = p.seq_len * group;
    let ldq = p.n_head * HD;
    let ldkv = p.n_head_kv * HD;

    let r = tid / TPR;
    let lane = tid % TPR;
    let item = blk * BR + r;
    let valid = item < n_items;
    let pos = select(0u, item / group, valid);
    let h = hk * group + item % group;
    let qo = (first + pos) * ldq + h * HD;
    // The last position any row of this group sees: the tiles every thread walks (uniform).
    let last_pos = (min(blk * BR + BR, n_items) - 1u) / group;
    let n_tiles = last_pos / BC + 1u;
    // The first key this row may see, and the first tile any row of the group sees (uniform).
    var lo = 0u;
    var t0 = 0u;
    if (p.window > 0u) {
        if (pos + 1u > p.window) {
            lo = pos + 1u - p.window;
        }
        let first_pos = (blk * BR) / group;
        if (first_pos + 1u > p.window) {
            t0 = (first_pos + 1u - p.window) / BC;
        }
    }

    var qr: array<f32, DPT>;
    var acc: array<f32, DPT>;
    for (var i = 0u; i < DPT; i++) {
        let d = lane + i * TPR;
        var x = 0.0;
        if (valid && d < HD) {
            x = q[qo + d];
        }
        qr[i] = x;
        acc[i] = 0.0;
    }
    var m = NO_MAX;
    var l = 0.0;

    for (var t = t0; t < n_tiles; t++) {
        let j0 = t * BC;
        let nk = min(BC, p.seq_len - j0);
        // Keys j0 + ja .. j0 + nv of this tile that the row may see (causal, in the window).
        var nv = 0u;
        if (valid && pos >= j0) {
            nv = min(nk, pos + 1u - j0);
        }
        var ja = 0u;
        if (lo > j0) {
            ja = min(lo - j0, nv);
        }
        load_tile(false, tid, first + j0, nk, ldkv, hk * HD);
        workgroupBarrier();
        for (var jj = ja; jj < nv; jj++) {
            var s = 0.0;
            for (var i = 0u; i < DPT; i++) {
                s += qr[i] * kv[jj * HDP + lane + i * TPR];
            }
            part[(r * BC + jj) * TPR + lane] = s;
        }
        workgroupBarrier();
        load_tile(true, tid, first + j0, nk, ldkv, hk * HD);
        for (var jj = ja + lane; jj < nv; jj += TPR) {
            var s = 0.0;
            for (var u = 0u; u < TPR; u++) {
                s += part[(r * BC + jj) * TPR + u];
            }
            sc[r * BC + jj] = s * p.scale;
        }
        workgroupBarrier();
        if (nv > ja) {
            var mt = m;
            for (var jj = ja; jj < nv; jj++) {
                mt = max(mt, sc[r * BC + jj]);
            }
            let alpha = select(exp(m - mt), 0.0, m == NO_MAX);
            l *= alpha;
            for (var i = 0u; i < DPT; i++) {
                acc[i] *= alpha;
            }
            for (var jj = ja; jj < nv; jj++) {
                let pj = exp(sc[r * BC + jj] - mt);
                l += pj;
                for (var i = 0u; i < DPT; i++) {
                    acc[i] += pj * kv[jj * HDP + lane + i * TPR];
                }
            }
            m = mt;
        }
        workgroupBarrier();
    }

    if (valid) {
        let inv = 1.0 / l;
        for (var i = 0u; i < DPT; i++) {
            let d = lane + i * TPR;
            if (d < HD) {
                o[qo + d] = acc[i] * inv;
            }
        }
    }
}
