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
// x again as vec4s, for the quantized one-token kernels' x8_fast (bound only where those run)
@group(0) @binding(6) var<storage, read> xv: array<vec4<f32>>;

// x[t, kb .. kb + 8], zero past K (x_reads.wgsl), as an array or as two vec4 columns.
fn x8(t: u32, kb: u32) -> array<f32, 8> {
    return x8_from(p.x_off + t * p.x_stride + kb, kb, p.k);
}

fn x_at(t: u32, kb: u32) -> mat2x4<f32> {
    return x_span(p.x_off + t * p.x_stride + kb, kb, p.k);
}

// What store_out adds to (y[t, row0 + r], and the gate when there is one), for rows and tokens
// in range; the one-token kernels load it before their sums instead of after (zeros otherwise).
fn prior_out(t: u32, r: u32) -> vec2<f32> {
    if p.accumulate == 0u || r >= p.rows || t >= count.n { return vec2<f32>(0.0); }
    let idx = p.y_off + t * p.y_stride + p.row0 + r;
    if p.accumulate == 2u { return vec2<f32>(y[idx], y[idx + p.gate]); }
    return vec2<f32>(y[idx], 0.0);
}

// store_out with y's old value (and gate) from prior_out: the same result.
fn store_prior(t: u32, r: u32, v: f32, prior: vec2<f32>) {
    if r >= p.rows || t >= count.n { return; }
    let idx = p.y_off + t * p.y_stride + p.row0 + r;
    let a = activate(v, p.act);
    if p.accumulate == 2u {
        y[idx] = prior.x + prior.y * a;
    } else if p.accumulate != 0u {
        y[idx] = prior.x + a;
    } else {
        y[idx] = a;
    }
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
