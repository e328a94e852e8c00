// matmul_io.wgsl: what every matmul kernel shares (prepended by the shader loader).
// y[t, row0 + r] (+)= act(sum_k W[r, k] x[t, k]); x [T, K] f32 at x_off with row stride x_stride,
// y [T, y_stride] f32 at y_off. The weight binding(s) 2 (and 5) come from the kernel or its weights_*.wgsl helper.
struct Params {
    k: u32,
    kv: u32,        // KP / 8: groups of 8 weights per (padded) row
    rows: u32,
    row0: u32,
    x_off: u32,
    x_stride: u32,
    y_off: u32,
    y_stride: u32,
    act: u32,
    accumulate: u32,    // 0: y = act(v); 1: y += act(v); 2: y += gate * act(v), gate in y's buffer
    gate: u32,          // elements from y[t, row0 + r] to its gate (2 only; u32 arithmetic wraps)
}
@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(3) var<storage, read> x: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

// x[t, kb .. kb + 8], zero past K.
fn x8(t: u32, kb: u32) -> array<f32, 8> {
    var v: array<f32, 8>;
    let base = p.x_off + t * p.x_stride + kb;
    if kb + 8u <= p.k {
        for (var e = 0u; e < 8u; e++) { v[e] = x[base + e]; }
    } else {
        for (var e = 0u; e < 8u; e++) { v[e] = select(0.0, x[base + e], kb + e < p.k); }
    }
    return v;
}

// x[t, kb .. kb + 8] as two vec4 columns, zero past K (x8 without an array: CPU adapters keep
// arrays in memory).
fn x_at(t: u32, kb: u32) -> mat2x4<f32> {
    let b = p.x_off + t * p.x_stride + kb;
    var a = vec4<f32>(x[b], x[b + 1u], x[b + 2u], x[b + 3u]);
    var c = vec4<f32>(x[b + 4u], x[b + 5u], x[b + 6u], x[b + 7u]);
    if kb + 8u > p.k {
        let e = vec4<u32>(kb) + vec4<u32>(0u, 1u, 2u, 3u);
        a = select(vec4<f32>(0.0), a, e < vec4<u32>(p.k));
        c = select(vec4<f32>(0.0), c, e + vec4<u32>(4u) < vec4<u32>(p.k));
    }
    return mat2x4<f32>(a, c);
}

// dot8 on x values from x_at: the same products summed the same way.
fn dot8v(q: vec4<u32>, v: mat2x4<f32>) -> f32 {
    let lo = vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y));
    let hi = vec4<f32>(unpack2x16float(q.z), unpack2x16float(q.w));
    return dot(lo, v[0]) + dot(hi, v[1]);
}

// Write (or add, or add times a gate) act(v) as y[t, row0 + r], for rows and tokens in range.
fn store_out(t: u32, r: u32, v: f32) {
    if r >= p.rows || t >= count.n { return; }
    let idx = p.y_off + t * p.y_stride + p.row0 + r;
    let a = activate(v, p.act);
    if p.accumulate == 2u {
        y[idx] += y[idx + p.gate] * a;  // the gate plane is never written by this dispatch
    } else if p.accumulate != 0u {
        y[idx] += a;
    } else {
        y[idx] = a;
    }
}
