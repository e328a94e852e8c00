// layer_norm.wgsl: y[t, g*G + i] = (x - mean_g) / sqrt(var_g + eps) * weight + bias, per group g of
// G elements (G = C is a layer norm, G = N the per-head group norm).
// Bindings: x [T, groups*G] f32 (x_off, x_stride), y [T, groups*G] f32 (y_off, y_stride),
// vec f32 (weight at w_off, bias at b_off). Grid: (groups, T); WG threads share one group.
struct Params {
    size: u32,      // G
    x_off: u32,
    x_stride: u32,
    y_off: u32,
    y_stride: u32,
    w_off: u32,
    b_off: u32,
    eps: f32,
}
@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> vec: array<f32>;


@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let t = wid.y;
    if t >= count.n { return; }
    let g0 = wid.x * p.size;
    let xb = p.x_off + t * p.x_stride + g0;
    let mean = reduce_sum(lid.x, row_part(lid.x, xb, p.size, 0.0, false)) / f32(p.size);
    let inv = inverseSqrt(reduce_sum(lid.x, row_part(lid.x, xb, p.size, mean, true)) / f32(p.size) + p.eps);
    let yb = p.y_off + t * p.y_stride + g0;
    for (var i = lid.x; i < p.size; i += WG) {
        y[yb + i] = (x[xb + i] - mean) * inv * vec[p.w_off + g0 + i] + vec[p.b_off + g0 + i];
    }
}
