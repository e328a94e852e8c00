// common.wgsl: prepended to every kernel.
// Binding 0 of every kernel is the step's row count (tokens, or rows sent to the head);
// kernels return early for rows >= count.n, so one recorded graph serves any chunk size.
struct Count { n: u32, _pad0: u32, _pad1: u32, _pad2: u32 }
@group(0) @binding(0) var<uniform> count: Count;

fn sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}

// tanh that cannot overflow to NaN on backends that compute it through exp(2x).
fn tanh_safe(x: f32) -> f32 {
    let e = exp(-2.0 * abs(x));
    let t = (1.0 - e) / (1.0 + e);
    return select(-t, t, x >= 0.0);
}

// Activations applied by kernels that take an `act` parameter.
const ACT_NONE: u32 = 0u;
const ACT_TANH: u32 = 1u;
const ACT_SIGMOID: u32 = 2u;
const ACT_RELU_SQ: u32 = 3u;
const ACT_SILU: u32 = 4u;

fn activate(x: f32, act: u32) -> f32 {
    switch act {
        case 1u: { return tanh_safe(x); }
        case 2u: { return sigmoid(x); }
        case 3u: { let r = max(x, 0.0); return r * r; }
        case 4u: { return x * sigmoid(x); }
        default: { return x; }
    }
}

// The 8 f16 weights packed in a vec4<u32> (low half of each u32 first) as f32.
fn f16x8(q: vec4<u32>) -> array<f32, 8> {
    let a = unpack2x16float(q.x);
    let b = unpack2x16float(q.y);
    let c = unpack2x16float(q.z);
    let d = unpack2x16float(q.w);
    return array<f32, 8>(a.x, a.y, b.x, b.y, c.x, c.y, d.x, d.y);
}

// sum_e W[e] x[e] over 8 f16 weights packed in a vec4<u32> (low half of each u32 first).
fn dot8(q: vec4<u32>, v: array<f32, 8>) -> f32 {
    let lo = vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y));
    let hi = vec4<f32>(unpack2x16float(q.z), unpack2x16float(q.w));
    return dot(lo, vec4<f32>(v[0], v[1], v[2], v[3])) + dot(hi, vec4<f32>(v[4], v[5], v[6], v[7]));
}

// dot8 on the 8 values as two vec4 columns (x_reads.wgsl's x_span): the same products, summed
// the same way.
fn dot8v(q: vec4<u32>, v: mat2x4<f32>) -> f32 {
    let lo = vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y));
    let hi = vec4<f32>(unpack2x16float(q.z), unpack2x16float(q.w));
    return dot(lo, v[0]) + dot(hi, v[1]);
}
