// matmul_subgroup.wgsl: the same product as matmul.wgsl, y[t, row0 + r] (+)= act(sum_k W[r, k] x[t, k]),
// for adapters with subgroups: LANES neighbouring invocations share a row, each reading every
// LANES-th 16-byte word of it, and sum their partials with subgroup shuffles (no workgroup
// memory, no barriers). Needs subgroups of at least LANES invocations in local-index order.
// Bindings as matmul.wgsl. Grid: (ceil(R / (WGS / LANES)), ceil(T / TOK)); workgroup of WGS.
// `decode` (one token per workgroup row of the grid) is `main` with TOK = 1 whose lanes load
// UNROLL (1, 2 or 4) words of the row before using them (decode_row.wgsl); same sums in the
// same order. Grid: (ceil(R / (WGS / LANES)), T). `decode_split` and `decode_parts`: the same
// with K in parts (below).
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;

override LANES: u32 = 8u;  // invocations per row: 8, 16 or 32
override WGS: u32 = 64u;   // invocations per workgroup
override TOK: u32 = 4u;    // tokens per workgroup, at most 4
override UNROLL: u32 = 1u; // decode: words of the row per lane in flight, 1, 2 or 4

@compute @workgroup_size(WGS)
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let lane = li % LANES;
    let r = wid.x * (WGS / LANES) + li / LANES;
    let t0 = wid.y * TOK;
    let n = count.n;
    var acc = vec4<f32>(0.0);
    if r < p.rows {
        let base = r * p.kv;
        for (var i = lane; i < p.kv; i += LANES) {
            let q = w[base + i];
            for (var j = 0u; j < TOK; j++) {
                if t0 + j < n { acc[j] += dot8(q, x8(t0 + j, i * 8u)); }
            }
        }
    }
    // butterfly over the LANES lanes of this row (all invocations take part)
    for (var s = LANES / 2u; s > 0u; s >>= 1u) {
        acc += subgroupShuffleXor(acc, s);
    }
    if lane == 0u {
        for (var j = 0u; j < TOK; j++) { store_out(t0 + j, r, acc[j]); }
    }
}

@compute @workgroup_size(WGS)
fn decode(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let lane = li % LANES;
    let r = wid.x * (WGS / LANES) + li / LANES;
    let t = wid.y;
    var prior = vec2<f32>(0.0);
    if lane == 0u { prior = prior_out(t, r); }
    var acc = 0.0;
    if r < p.rows && t < count.n {
        acc = lane_sum(r * p.kv, p.kv, lane, p.x_off + t * p.x_stride, p.k);
    }
    for (var s = LANES / 2u; s > 0u; s >>= 1u) {
        acc += subgroupShuffleXor(acc, s);
    }
    if lane == 0u { store_prior(t, r, acc, prior); }
}

// `decode_split`: `decode` with K cut in SPLIT parts (grid z) for rows too long for LANES lanes
// to keep enough loads in flight (one token through the FFN value matrix, K = 7168-8192): part z
// sums its share of the row's words and writes the raw sum as partial [SPLIT, T, R] (y bound to
// the scratch buffer), which matmul_tiled.wgsl `reduce` adds up and stores.
// Grid: (ceil(R / (WGS / LANES)), T, SPLIT).
override SPLIT: u32 = 2u;

// Part z of row r for token t, summed over the row's LANES lanes (every invocation calls it).
fn part_sum(r: u32, t: u32, z: u32, lane: u32) -> f32 {
    let per = (p.kv + SPLIT - 1u) / SPLIT;  // words per part
    let w0 = min(z * per, p.kv);
    let words = min(per, p.kv - w0);
    var acc = 0.0;
    if r < p.rows && t < count.n {
        // the part as a row of its own: words from w0, x from position 8 w0 (p.k > 8 w0 when words > 0)
        acc = lane_sum(r * p.kv + w0, words, lane, p.x_off + t * p.x_stride + w0 * 8u, select(0u, p.k - w0 * 8u, words > 0u));
    }
    for (var s = LANES / 2u; s > 0u; s >>= 1u) {
        acc += subgroupShuffleXor(acc, s);
    }
    return acc;
}

@compute @workgroup_size(WGS)
fn decode_split(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let lane = li % LANES;
    let r = wid.x * (WGS / LANES) + li / LANES;
    let t = wid.y;
    let acc = part_sum(r, t, wid.z, lane);
    if lane == 0u && r < p.rows && t < count.n {
        y[(wid.z * count.n + t) * p.rows + r] = acc;
    }
}

// `decode_parts`: `decode_split` with the parts added up in the workgroup instead of by a
// `reduce` dispatch: its WGS invocations are SPLIT parts x RPW rows x LANES lanes (RPW = WGS /
// (SPLIT LANES)); lane group g = li / LANES sums part g / RPW of row g % RPW, then invocation
// j < RPW adds the SPLIT sums of row j in part order (as `reduce` does) and stores the result.
// Grid: (ceil(R / RPW), T).
var<workgroup> part_sums: array<f32, 256>;  // [SPLIT, RPW] (WGS / LANES <= 256)

@compute @workgroup_size(WGS)
fn decode_parts(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let lane = li % LANES;
    let rpw = WGS / (SPLIT * LANES);
    let g = li / LANES;
    let z = g / rpw;
    let r = wid.x * rpw + g % rpw;
    let t = wid.y;
    let row = wid.x * rpw + li;
    var prior = vec2<f32>(0.0);
    if li < rpw { prior = prior_out(t, row); }
    let acc = part_sum(r, t, z, lane);
    if lane == 0u { part_sums[g] = acc; }
    workgroupBarrier();
    if li < rpw && row < p.rows && t < count.n {
        var sum = 0.0;
        for (var j = 0u; j < SPLIT; j++) { sum += part_sums[j * rpw + li]; }
        store_prior(t, row, sum, prior);
    }
}
