// matmul_quant_group.wgsl: the products of matmul_group.wgsl with quantized weights of one kind (QUANT),
// for decoding on adapters with subgroups: one token per workgroup, each row's sum exactly as
// matmul_quant_subgroup.wgsl computes it (same words, same order), so a group gives the results of
// its products one by one. Bindings as matmul_group.wgsl, with w = the codes of every segment as
// 16-byte words (segment s from word w_off) and binding 7 = their scales (segment s from s_off).
// Segments marked `half` have f16 weights instead (binding 9, rows of kv words from w_off, as
// matmul_group.wgsl), summed as the f16 one-token kernel sums them: f16 products that are ready
// with the quantized ones (RWKV-6's decay LoRA first half, RWKV-7's LoRA first halves) need no
// dispatch of their own.
// Grid: (ceil(rows / (WGS / LANES)), T).
@group(0) @binding(7) var<storage, read> scales: array<f32>;
@group(0) @binding(9) var<storage, read> wh: array<vec4<u32>>;

override HALF: bool = false;  // whether any segment is `half` (else the kernel is the quantized one alone)

override LANES: u32 = 16u;  // invocations per row
override WGS: u32 = 128u;   // invocations per workgroup
override UNROLL: u32 = 1u;  // words of the row per lane in flight: 1 or 2

@compute @workgroup_size(WGS)
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    load_book(li);
    let lane = li % LANES;
    let row = wid.x * (WGS / LANES) + li / LANES;
    let t = wid.y;
    let g = segment_of(min(row, p.rows - 1u));
    let r = row - g.row0;
    let live = row < p.rows && r < g.rows;  // rows padding a segment to a multiple of 4 are idle
    let kp = g.kv * 8u;
    let words = words_per_row(kp);
    var acc = 0.0;
    if live && t < count.n {
        if HALF && g.half != 0u {
            acc = lane_sum_half(g.w_off + r * g.kv, g.kv, lane, g.x_off + t * g.x_stride, g.k);
        } else {
            acc = lane_sum_quant(g.w_off + r * words, words, lane, g.s_off + r * scales_per_row(kp),
                                 g.x_off + t * g.x_stride, g.k, kp);
        }
    }
    for (var s = LANES / 2u; s > 0u; s >>= 1u) {
        acc += subgroupShuffleXor(acc, s);
    }
    if lane == 0u && live {
        store_group(g, t, r, acc);
    }
}

// `decode_rows` (4-bit codes): the same with each lane summing RPL rows of one segment (segments start on
// multiples of 4 rows), as matmul_quant_subgroup.wgsl `decode_rows`.
// Grid: (ceil(rows / (RPL WGS / LANES)), T).
@compute @workgroup_size(WGS)
fn decode_rows(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    load_books(li, WGS);
    let lane = li % LANES;
    let row0 = (wid.x * (WGS / LANES) + li / LANES) * RPL;
    let t = wid.y;
    let g = segment_of(min(row0, p.rows - 1u));
    let r0 = row0 - g.row0;
    let kp = g.kv * 8u;
    let words = words_per_row(kp);
    let spr = scales_per_row(kp);
    var acc = vec4<f32>(0.0);
    if row0 < p.rows && r0 < g.rows && t < count.n {
        let live = min(g.rows - r0, p.rows - row0);
        if HALF && g.half != 0u {
            acc = rows_sum_half(g.w_off + r0 * g.kv, g.kv, live, lane, g.x_off + t * g.x_stride, g.k);
        } else {
            acc = rows_sum_quant(g.w_off + r0 * words, g.s_off + r0 * spr, words, spr, live, lane,
                                 g.x_off + t * g.x_stride, g.k);
        }
    }
    for (var s = LANES / 2u; s > 0u; s >>= 1u) {
        acc += subgroupShuffleXor(acc, s);
    }
    let r = r0 + lane;
    if lane < RPL && row0 + lane < p.rows && r < g.rows {
        store_group(g, t, r, acc[lane]);
    }
}

// One lane's partial sum over an f16 row's words base .. base + kv (every LANES-th from `lane`),
// in decode_row.wgsl lane_sum's order (the same sum whatever its UNROLL).
fn lane_sum_half(base: u32, kv: u32, lane: u32, xb: u32, k: u32) -> f32 {
    var acc = 0.0;
    for (var i = lane; i < kv; i += LANES) {
        acc += dot8(wh[base + i], x8_fast(xb + i * 8u, i * 8u, k));
    }
    return acc;
}

// `decode_rows` on a `half` segment: RPL rows from word `base` (`live` of them exist, at least 1;
// the others read the last again and are not stored), each summed as lane_sum_half sums it,
// a word of every row loaded with the x values they share.
fn rows_sum_half(base: u32, kv: u32, live: u32, lane: u32, xb: u32, k: u32) -> vec4<f32> {
    let at = vec4<u32>(base) + min(vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(min(RPL, live) - 1u)) * kv;
    var acc = vec4<f32>(0.0);
    for (var i = lane; i < kv; i += LANES) {
        let v = x8_fast(xb + i * 8u, i * 8u, k);
        acc.x += dot8(wh[at.x + i], v);
        if RPL > 1u { acc.y += dot8(wh[at.y + i], v); }
        if RPL > 2u {
            acc.z += dot8(wh[at.z + i], v);
            acc.w += dot8(wh[at.w + i], v);
        }
    }
    return acc;
}
