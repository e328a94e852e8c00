// blend.wgsl: `affine`, x[t, c] = x[t, c] * mul[c] + add[c] in place (hooks: steering vectors,
// scaling). Bindings: x [T, x_stride] f32 at element offset x_off, coeffs = [mul (C), add (C)].
// Grid: (ceil(C / WG), T).
struct Params {
    c: u32,
    x_off: u32,
    x_stride: u32,
    _pad: u32,
}
@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(4) var<storage, read_write> x: array<f32>;
@group(0) @binding(5) var<storage, read> coeffs: array<f32>;

override WG: u32 = 64u;

@compute @workgroup_size(WG)
fn affine(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    let t = gid.y;
    if c >= p.c || t >= count.n { return; }
    let e = p.x_off + t * p.x_stride + c;
    x[e] = x[e] * coeffs[c] + coeffs[p.c + c];
}
