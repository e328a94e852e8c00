// reduce_subgroup.wgsl: reduce.wgsl's reduce_sum for adapters with subgroups (same name, same
// use): each subgroup adds its values with subgroupAdd, its first invocation stores the sum, and
// every invocation adds those up: two barriers in all instead of two a halving. Subgroups may be
// of any size; they must hold consecutive local indices (as every subgroup kernel here assumes).
override WG: u32 = 64u;
var<workgroup> red: array<f32, WG>;

// Sum of `v` over the workgroup; every invocation must call it (it has barriers).
fn reduce_sum(lid: u32, v: f32) -> f32 {
    let s = subgroupAdd(v);
    let size = subgroupAdd(1u);
    if lid == subgroupBroadcastFirst(lid) { red[lid / size] = s; }
    workgroupBarrier();
    var total = 0.0;
    for (var i = 0u; i < WG / size; i++) { total += red[i]; }
    workgroupBarrier();
    return total;
}
