// matmul_group_subgroup.wgsl: the products of matmul_group.wgsl for decoding on adapters with subgroups,
// as matmul_subgroup.wgsl `decode` (same sums in the same order): LANES neighbouring invocations share
// a row (decode_row.wgsl: each lane reads every LANES-th 16-byte word of it, UNROLL of them in
// flight) and sum through subgroup shuffles, one token per workgroup. Bindings as matmul_group.wgsl.
// Grid: (ceil(rows / (WGS / LANES)), T).
override LANES: u32 = 16u;  // invocations per row
override WGS: u32 = 128u;   // invocations per workgroup
override UNROLL: u32 = 1u;  // words of the row per lane in flight: 1, 2 or 4

@compute @workgroup_size(WGS)
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let lane = li % LANES;
    let row = wid.x * (WGS / LANES) + li / LANES;
    let t = wid.y;
    let g = segment_of(min(row, p.rows - 1u));
    let r = row - g.row0;
    let live = row < p.rows && r < g.rows;  // rows padding a segment to a multiple of 4 are idle
    var acc = 0.0;
    if live && t < count.n {
        acc = lane_sum(g.w_off + r * g.kv, g.kv, lane, g.x_off + t * g.x_stride, g.k);
    }
    // butterfly over the LANES lanes of this row (all invocations take part)
    for (var s = LANES / 2u; s > 0u; s >>= 1u) {
        acc += subgroupShuffleXor(acc, s);
    }
    if lane == 0u && live {
        store_group(g, t, r, acc);
    }
}
