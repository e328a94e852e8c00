// matmul_quant_group.wgsl: the products of matmul_group.wgsl with quantized weights of one kind (QUANT),
// for decoding on adapters with subgroups: one token per workgroup, each row's sum exactly as
// matmul_quant_subgroup.wgsl computes it (same words, same order), so a group gives the results of
// its products one by one. Bindings as matmul_group.wgsl, with w = the codes of every segment as
// 16-byte words (segment s from word w_off) and binding 7 = their scales (segment s from s_off).
// Grid: (ceil(rows / (WGS / LANES)), T).
@group(0) @binding(7) var<storage, read> scales: array<f32>;

override LANES: u32 = 16u;  // invocations per row
override WGS: u32 = 128u;   // invocations per workgroup
override UNROLL: u32 = 1u;  // words of the row per lane in flight: 1 or 2

var<workgroup> book: array<f32, 16>;

// matmul_quant_subgroup.wgsl's word_dot for row r of segment g.
fn word_dot_g(c: vec4<u32>, g: Segment, r: u32, wi: u32, t: u32) -> f32 {
    let kp = g.kv * 8u;
    var s = 0.0;
    if QUANT == 0u {
        let nb = kp / INT8_BLOCK;
        let blk = (wi * 16u) / INT8_BLOCK;
        let lo = scales[g.s_off + r * 2u * nb + blk];
        let step = scales[g.s_off + r * 2u * nb + nb + blk] * 255.0;  // unorm gives code / 255
        for (var h = 0u; h < 2u; h++) {
            let v = x8g(g, t, wi * 16u + h * 8u);
            let a = unpack4x8unorm(c[2u * h]) * step + lo;
            let b = unpack4x8unorm(c[2u * h + 1u]) * step + lo;
            s += dot(a, vec4<f32>(v[0], v[1], v[2], v[3])) + dot(b, vec4<f32>(v[4], v[5], v[6], v[7]));
        }
        return s;
    }
    let amax = scales[g.s_off + r * (kp / Q4_BLOCK) + (wi * 32u) / Q4_BLOCK];
    for (var h = 0u; h < 4u; h++) {
        let v = x8g(g, t, wi * 32u + h * 8u);
        let q = c[h];
        for (var e = 0u; e < 8u; e++) { s += book[(q >> (4u * e)) & 15u] * v[e]; }
    }
    return s * amax;
}

@compute @workgroup_size(WGS)
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    if QUANT != 0u && li < 16u { book[li] = code4(li); }
    workgroupBarrier();
    let lane = li % LANES;
    let row = wid.x * (WGS / LANES) + li / LANES;
    let t = wid.y;
    let g = segment_of(min(row, p.rows - 1u));
    let r = row - g.row0;
    let live = row < p.rows && r < g.rows;  // rows padding a segment to a multiple of 4 are idle
    let words = select(g.kv / 4u, g.kv / 2u, QUANT == 0u);
    var acc = 0.0;
    if live && t < count.n {
        let base = g.w_off + r * words;
        var i = lane;
        if UNROLL >= 2u {
            for (; i + LANES < words; i += 2u * LANES) {
                let c0 = w[base + i];
                let c1 = w[base + i + LANES];
                acc += word_dot_g(c0, g, r, i, t);
                acc += word_dot_g(c1, g, r, i + LANES, t);
            }
        }
        for (; i < words; i += LANES) {
            acc += word_dot_g(w[base + i], g, r, i, t);
        }
    }
    for (var s = LANES / 2u; s > 0u; s >>= 1u) {
        acc += subgroupShuffleXor(acc, s);
    }
    if lane == 0u && live {
        store_group(g, t, r, acc);
    }
}
