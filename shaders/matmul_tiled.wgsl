// matmul_tiled.wgsl: the same product as matmul.wgsl, y[t, row0 + r] (+)= act(sum_k W[r, k] x[t, k]),
// tiled for many tokens (prompts): a workgroup computes a 64-row x 64-token tile, staging
// 32-wide K slices of W (unpacked from f16 pairs) and x in workgroup memory; each of its
// 16 x 16 invocations accumulates a 4 x 4 block in f32.
// Bindings as matmul.wgsl: w [R, KP/8] vec4<u32>, x [T, K] f32, y [T, y_stride] f32.
// Grid: (ceil(R / 64), ceil(T / 64)).
struct Params {
    k: u32,
    kv: u32,
    rows: u32,
    row0: u32,
    x_off: u32,
    x_stride: u32,
    y_off: u32,
    y_stride: u32,
    act: u32,
    accumulate: u32,
}
@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> x: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

const TILE: u32 = 64u;   // rows and tokens per workgroup
const TK: u32 = 32u;     // K slice staged per iteration
const PER: u32 = 4u;     // rows and tokens per invocation

var<workgroup> ws: array<f32, 2048>;   // [TILE rows][TK]
var<workgroup> xs: array<f32, 2048>;   // [TILE tokens][TK]

@compute @workgroup_size(16, 16)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let n = count.n;
    let r0 = wid.x * TILE;
    let t0 = wid.y * TILE;
    // each invocation stages 8 consecutive K values of one W row and one token per slice
    let lr = tid / 4u;
    let lk = (tid % 4u) * 8u;
    var acc: array<array<f32, 4>, 4>;
    for (var k0 = 0u; k0 < p.kv * 8u; k0 += TK) {
        let kb = k0 + lk;
        let r = r0 + lr;
        if r < p.rows && kb < p.kv * 8u {
            let q = w[r * p.kv + kb / 8u];
            let a = unpack2x16float(q.x);
            let b = unpack2x16float(q.y);
            let c = unpack2x16float(q.z);
            let d = unpack2x16float(q.w);
            let o = lr * TK + lk;
            ws[o] = a.x; ws[o + 1u] = a.y; ws[o + 2u] = b.x; ws[o + 3u] = b.y;
            ws[o + 4u] = c.x; ws[o + 5u] = c.y; ws[o + 6u] = d.x; ws[o + 7u] = d.y;
        } else {
            for (var e = 0u; e < 8u; e++) { ws[lr * TK + lk + e] = 0.0; }
        }
        let t = t0 + lr;
        for (var e = 0u; e < 8u; e++) {
            var v = 0.0;
            if t < n && kb + e < p.k {
                v = x[p.x_off + t * p.x_stride + kb + e];
            }
            xs[lr * TK + lk + e] = v;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            var a: array<f32, 4>;
            var b: array<f32, 4>;
            for (var i = 0u; i < PER; i++) {
                a[i] = ws[(lid.y * PER + i) * TK + kk];
                b[i] = xs[(lid.x * PER + i) * TK + kk];
            }
            for (var i = 0u; i < PER; i++) {
                for (var j = 0u; j < PER; j++) {
                    acc[i][j] += a[i] * b[j];
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < PER; i++) {
        let r = r0 + lid.y * PER + i;
        for (var j = 0u; j < PER; j++) {
            let t = t0 + lid.x * PER + j;
            if r < p.rows && t < n {
                let idx = p.y_off + t * p.y_stride + p.row0 + r;
                let v = activate(acc[i][j], p.act);
                if p.accumulate != 0u {
                    y[idx] += v;
                } else {
                    y[idx] = v;
                }
            }
        }
    }
}
