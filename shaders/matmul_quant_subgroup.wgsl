// matmul_quant_subgroup.wgsl: y[t, row0 + r] (+)= act(sum_k W[r, k] x[t, k]) with quantized W, for
// decoding on adapters with subgroups, one token per workgroup. LANES neighbouring invocations
// share a row; each lane reads every LANES-th 16-byte word of the codes, UNROLL (1 or 2) of them
// in flight (quant_word.wgsl), and the lanes sum through subgroup shuffles.
// Layouts in rwkv_webgpu/weights/quant.py.
// Bindings: codes [R, KP/4 or KP/8] u32 read as vec4 words (binding 2), scales f32 (binding 5),
// x, y as matmul_quant.wgsl. Grid: (ceil(R / (WGS / LANES)), T).
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;  // the codes
@group(0) @binding(5) var<storage, read> scales: array<f32>;

override LANES: u32 = 16u;  // invocations per row
override WGS: u32 = 128u;   // invocations per workgroup
override UNROLL: u32 = 1u;  // words of the row per lane in flight: 1 or 2

@compute @workgroup_size(WGS)
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    load_book(li);
    let lane = li % LANES;
    let r = wid.x * (WGS / LANES) + li / LANES;
    let t = wid.y;
    let kp = p.kv * 8u;
    let words = words_per_row(kp);
    var prior = vec2<f32>(0.0);
    if lane == 0u { prior = prior_out(t, r); }
    var acc = 0.0;
    if r < p.rows && t < count.n {
        acc = lane_sum_quant(r * words, words, lane, r * scales_per_row(kp), p.x_off + t * p.x_stride, p.k, kp);
    }
    for (var s = LANES / 2u; s > 0u; s >>= 1u) {
        acc += subgroupShuffleXor(acc, s);
    }
    if lane == 0u { store_prior(t, r, acc, prior); }
}

// `decode_rows` (4-bit codes): the same product with each lane summing RPL rows (quant_word.wgsl
// rows_sum_quant): lane group g of a workgroup takes rows RPL g .. RPL g + RPL; lane j < RPL
// stores row j of its group. Grid: (ceil(R / (RPL WGS / LANES)), T).
@compute @workgroup_size(WGS)
fn decode_rows(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    load_books(li, WGS);
    let lane = li % LANES;
    let r0 = (wid.x * (WGS / LANES) + li / LANES) * RPL;
    let t = wid.y;
    let kp = p.kv * 8u;
    let words = words_per_row(kp);
    let spr = scales_per_row(kp);
    var prior = vec2<f32>(0.0);
    if lane < RPL { prior = prior_out(t, r0 + lane); }
    var acc = vec4<f32>(0.0);
    if r0 < p.rows && t < count.n {
        acc = rows_sum_quant(r0 * words, r0 * spr, words, spr, p.rows - r0, lane, p.x_off + t * p.x_stride, p.k);
    }
    for (var s = LANES / 2u; s > 0u; s >>= 1u) {
        acc += subgroupShuffleXor(acc, s);
    }
    if lane < RPL { store_prior(t, r0 + lane, acc[lane], prior); }
}
