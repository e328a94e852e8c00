// blend.wgsl: elementwise y[t, c] += a[t, c] * b[t, c] (the gated residual add of RWKV-4..6's
// channel mix). Bindings: a, b, y, all [T, C] f32 at element offsets a_off, b_off, y_off.
// Grid: (ceil(C / WG), T).
struct Params {
    c: u32,
    a_off: u32,
    b_off: u32,
    y_off: u32,
}
@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

override WG: u32 = 64u;

@compute @workgroup_size(WG)
fn add_mul(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    let t = gid.y;
    if c >= p.c || t >= count.n { return; }
    let e = t * p.c + c;
    y[p.y_off + e] += a[p.a_off + e] * b[p.b_off + e];
}

// `affine`: x[t, c] = x[t, c] * mul[c] + add[c] in place (hooks: steering vectors, scaling).
// Bindings: x at binding 4 (x_off, x_stride), vec at binding 5 = [mul (C), add (C)].
// Grid: (ceil(C / WG), T). Reads its Params through the same uniform as add_mul: c, then
// x_off in a_off's place and x_stride in b_off's place.
@group(0) @binding(5) var<storage, read> coeffs: array<f32>;

@compute @workgroup_size(WG)
fn affine(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    let t = gid.y;
    if c >= p.c || t >= count.n { return; }
    let e = p.a_off + t * p.b_off + c;
    y[e] = y[e] * coeffs[c] + coeffs[p.c + c];
}
