// matmul_quant_subgroup.wgsl: y[t, row0 + r] (+)= act(sum_k W[r, k] x[t, k]) with quantized W (weights8
// from weights_quant.wgsl), for decoding on adapters with subgroups: LANES neighbouring invocations
// share a row (each decodes every LANES-th group of 8 weights) and sum through subgroup shuffles,
// one token per workgroup, as matmul_subgroup.wgsl with TOK = 1.
// Bindings as matmul_quant.wgsl. Grid: (ceil(R / (WGS / LANES)), T).
override LANES: u32 = 16u;  // invocations per row
override WGS: u32 = 128u;   // invocations per workgroup

@compute @workgroup_size(WGS)
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let lane = li % LANES;
    let r = wid.x * (WGS / LANES) + li / LANES;
    let t = wid.y;
    var acc = 0.0;
    if r < p.rows && t < count.n {
        for (var i = lane; i < p.kv; i += LANES) {
            let w = weights8(r, i);
            let v = x8(t, i * 8u);
            acc += dot(vec4<f32>(w[0], w[1], w[2], w[3]), vec4<f32>(v[0], v[1], v[2], v[3]))
                + dot(vec4<f32>(w[4], w[5], w[6], w[7]), vec4<f32>(v[4], v[5], v[6], v[7]));
        }
    }
    // butterfly over the LANES lanes of this row (all invocations take part)
    for (var s = LANES / 2u; s > 0u; s >>= 1u) {
        acc += subgroupShuffleXor(acc, s);
    }
    if lane == 0u {
        store_out(t, r, acc);
    }
}
