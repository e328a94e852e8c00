// row_sums.wgsl: a thread's share of the two sums of a layer norm over a row of x (layer_norm.wgsl,
// token_shift.wgsl `norm_mix`; after reduce.wgsl, whose reduce_sum adds the shares up). A thread
// takes every WG-th value from its own, four at a time into four running sums, so that four
// loads are in flight at once rather than one. No dispatch of its own.

// sum of (x[b + i] - shift), or of its square, over this thread's i < size
fn row_part(lid: u32, b: u32, size: u32, shift: f32, square: bool) -> f32 {
    var s = vec4<f32>(0.0);
    var i = lid;
    for (; i + 3u * WG < size; i += 4u * WG) {
        let v = vec4<f32>(x[b + i], x[b + i + WG], x[b + i + 2u * WG], x[b + i + 3u * WG]) - shift;
        s += select(v, v * v, square);
    }
    for (; i < size; i += WG) {
        let v = x[b + i] - shift;
        s.x += select(v, v * v, square);
    }
    return (s.x + s.y) + (s.z + s.w);
}
