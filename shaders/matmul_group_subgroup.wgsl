// matmul_group_subgroup.wgsl: the products of matmul_group.wgsl for decoding on adapters with subgroups,
// as matmul_subgroup.wgsl `decode` (same sums in the same order): LANES neighbouring invocations share
// RPL rows (each lane reads every LANES-th 16-byte word of them, UNROLL words of each row in flight)
// and sum through subgroup shuffles, one token per workgroup. The RPL rows of a lane group lie in one
// segment (segments start at multiples of 4). Bindings as matmul_group.wgsl.
// Grid: (ceil(rows / (WGS / LANES * RPL)), T).
override LANES: u32 = 16u;  // invocations per row
override WGS: u32 = 128u;   // invocations per workgroup
override RPL: u32 = 2u;     // rows per LANES invocations: 1, 2 or 4
override UNROLL: u32 = 2u;  // words of each row per lane in flight, RPL * UNROLL <= 16

@compute @workgroup_size(WGS)
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let lane = li % LANES;
    let row0 = (wid.x * (WGS / LANES) + li / LANES) * RPL;
    let t = wid.y;
    let g = segment_of(min(row0, p.rows - 1u));
    let r0 = row0 - g.row0;
    let kv = g.kv;
    // rows past the segment (padding it to a multiple of 4) read its last row and store nothing
    var base: array<u32, 4>;
    for (var j = 0u; j < RPL; j++) { base[j] = g.w_off + min(r0 + j, g.rows - 1u) * kv; }
    var acc: array<f32, 4>;
    if row0 < p.rows && t < count.n {
        var i = lane;
        for (; i + (UNROLL - 1u) * LANES < kv; i += UNROLL * LANES) {
            var q: array<vec4<u32>, 16>;
            for (var u = 0u; u < UNROLL; u++) {
                for (var j = 0u; j < RPL; j++) { q[u * RPL + j] = w[base[j] + i + u * LANES]; }
            }
            for (var u = 0u; u < UNROLL; u++) {
                let v = x8g(g, t, (i + u * LANES) * 8u);
                for (var j = 0u; j < RPL; j++) { acc[j] += dot8(q[u * RPL + j], v); }
            }
        }
        for (; i < kv; i += LANES) {
            let v = x8g(g, t, i * 8u);
            for (var j = 0u; j < RPL; j++) { acc[j] += dot8(w[base[j] + i], v); }
        }
    }
    for (var j = 0u; j < RPL; j++) {
        var a = acc[j];
        for (var s = LANES / 2u; s > 0u; s >>= 1u) {
            a += subgroupShuffleXor(a, s);
        }
        if lane == 0u && row0 < p.rows { store_group(g, t, r0 + j, a); }
    }
}
