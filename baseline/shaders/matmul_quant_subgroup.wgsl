// matmul_quant_subgroup.wgsl: y[t, row0 + r] (+)= act(sum_k W[r, k] x[t, k]) with quantized W, for
// decoding on adapters with subgroups, one token per workgroup. LANES neighbouring invocations
// share a row; each lane reads every LANES-th 16-byte word of the codes (16 int8 or 32 4-bit
// weights, inside one scale block), UNROLL (1 or 2) of them in flight, and the lanes sum through
// subgroup shuffles. The 4-bit codebook sits in workgroup memory (indexing a private array costs a
// memory access per weight). Layouts in rwkv_webgpu/weights/quant.py; after quant_codebook.wgsl.
// Bindings: codes [R, KP/4 or KP/8] u32 read as vec4 words (binding 2), scales f32 (binding 5),
// x, y as matmul_quant.wgsl. Grid: (ceil(R / (WGS / LANES)), T).
@group(0) @binding(2) var<storage, read> codes: array<vec4<u32>>;
@group(0) @binding(5) var<storage, read> scales: array<f32>;

override LANES: u32 = 16u;  // invocations per row
override WGS: u32 = 128u;   // invocations per workgroup
override UNROLL: u32 = 1u;  // words of the row per lane in flight: 1 or 2

var<workgroup> book: array<f32, 16>;

// sum over the weights of word `wi` of row r (its codes `c`) times x[t, ...].
fn word_dot(c: vec4<u32>, r: u32, wi: u32, t: u32) -> f32 {
    let kp = p.kv * 8u;
    var s = 0.0;
    if QUANT == 0u {
        let nb = kp / INT8_BLOCK;
        let blk = (wi * 16u) / INT8_BLOCK;
        let lo = scales[r * 2u * nb + blk];
        let step = scales[r * 2u * nb + nb + blk] * 255.0;  // unorm gives code / 255
        for (var h = 0u; h < 2u; h++) {
            let v = x8(t, wi * 16u + h * 8u);
            let a = unpack4x8unorm(c[2u * h]) * step + lo;
            let b = unpack4x8unorm(c[2u * h + 1u]) * step + lo;
            s += dot(a, vec4<f32>(v[0], v[1], v[2], v[3])) + dot(b, vec4<f32>(v[4], v[5], v[6], v[7]));
        }
        return s;
    }
    let amax = scales[r * (kp / Q4_BLOCK) + (wi * 32u) / Q4_BLOCK];
    for (var h = 0u; h < 4u; h++) {
        let v = x8(t, wi * 32u + h * 8u);
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
    let r = wid.x * (WGS / LANES) + li / LANES;
    let t = wid.y;
    // words per row: 16 int8 or 32 4-bit weights each
    let words = select(p.kv / 4u, p.kv / 2u, QUANT == 0u);
    var acc = 0.0;
    if r < p.rows && t < count.n {
        let base = r * words;
        var i = lane;
        if UNROLL >= 2u {
            for (; i + LANES < words; i += 2u * LANES) {
                let c0 = codes[base + i];
                let c1 = codes[base + i + LANES];
                acc += word_dot(c0, r, i, t);
                acc += word_dot(c1, r, i + LANES, t);
            }
        }
        for (; i < words; i += LANES) {
            acc += word_dot(codes[base + i], r, i, t);
        }
    }
    for (var s = LANES / 2u; s > 0u; s >>= 1u) {
        acc += subgroupShuffleXor(acc, s);
    }
    if lane == 0u { store_out(t, r, acc); }
}
