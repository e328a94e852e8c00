// reduce.wgsl: helper prepended to kernels that sum a value over their workgroup.
// Those kernels use `WG` as their workgroup size; it must be a power of two.
override WG: u32 = 64u;
var<workgroup> red: array<f32, WG>;

// Sum of `v` over the workgroup; every invocation must call it (it has barriers).
fn reduce_sum(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s { red[lid] += red[lid + s]; }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}
