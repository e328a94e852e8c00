// time_mix_v7.wgsl: the RWKV-7 time-mix core, for tokens of several slots packed in order.
// tm is [7, plane] f32 holding planes r, w, k, v, kk, a, g, each [T, C] (C = H * N).
// `prepare` (grid (H, T)): turns the raw projections into the kernel inputs, in place:
//     w = exp(-e^-0.5 * sigmoid(w0 + w)), a = sigmoid(a0 + a), kk = normalize_head(k * k_k),
//     k = k * (1 + (a - 1) * k_a), v = v + (v_first - v) * sigmoid(v0 + vgate) (layer 0 saves v_first).
// `wkv` (grid (H, B)): per slot and head, for each token in order
//     S = S * w[j] - (S kk) (kk * a)[j] + v k[j];  o = S r;  then per head
//     y = (group_norm(o) * ln_x + (sum r * k * r_k) * v) * g.
// State S is [B, H, N, N] f32 (row = value index, column = key index).
struct Params {
    c: u32,
    h: u32,
    n: u32,
    plane: u32,     // elements between two planes of tm
    slots: u32,
    layer0: u32,
    w0_off: u32,
    a0_off: u32,
    v0_off: u32,
    k_k_off: u32,
    k_a_off: u32,
    r_k_off: u32,
    lnw_off: u32,
    lnb_off: u32,
    eps: f32,
    _pad: u32,
}
@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> cursors: array<u32>;
@group(0) @binding(3) var<storage, read_write> tm: array<f32>;
@group(0) @binding(4) var<storage, read> vgate: array<f32>;
@group(0) @binding(5) var<storage, read_write> v_first: array<f32>;
@group(0) @binding(6) var<storage, read> vec: array<f32>;
@group(0) @binding(7) var<storage, read_write> state: array<f32>;
@group(0) @binding(8) var<storage, read_write> y: array<f32>;

const R: u32 = 0u;
const W: u32 = 1u;
const K: u32 = 2u;
const V: u32 = 3u;
const KK: u32 = 4u;
const A: u32 = 5u;
const G: u32 = 6u;
const MAX_N: u32 = 64u;
override N_HEAD: u32 = 64u;   // head size, a constant so loops over it unroll

var<workgroup> s_r: array<f32, MAX_N>;
var<workgroup> s_w: array<f32, MAX_N>;
var<workgroup> s_k: array<f32, MAX_N>;
var<workgroup> s_kk: array<f32, MAX_N>;
var<workgroup> s_ab: array<f32, MAX_N>;
var<workgroup> s_rk: array<f32, MAX_N>;
var<workgroup> span: vec2<u32>;

@compute @workgroup_size(WG)
fn prepare(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let h = wid.x;
    let t = wid.y;
    if t >= count.n { return; }
    let row = t * p.c + h * p.n;
    var q = 0.0;
    for (var i = lid.x; i < p.n; i += WG) {
        let kk = tm[K * p.plane + row + i] * vec[p.k_k_off + h * p.n + i];
        q += kk * kk;
    }
    let norm = max(sqrt(reduce_sum(lid.x, q)), 1e-12);
    for (var i = lid.x; i < p.n; i += WG) {
        let c = h * p.n + i;
        let e = row + i;
        let k = tm[K * p.plane + e];
        let a = sigmoid(vec[p.a0_off + c] + tm[A * p.plane + e]);
        tm[KK * p.plane + e] = k * vec[p.k_k_off + c] / norm;
        tm[A * p.plane + e] = a;
        tm[W * p.plane + e] = exp(-0.606531 * sigmoid(vec[p.w0_off + c] + tm[W * p.plane + e]));
        tm[K * p.plane + e] = k * (1.0 + (a - 1.0) * vec[p.k_a_off + c]);
        let v = tm[V * p.plane + e];
        if p.layer0 != 0u {
            v_first[e] = v;
        } else {
            tm[V * p.plane + e] = v + (v_first[e] - v) * sigmoid(vec[p.v0_off + c] + vgate[e]);
        }
    }
}

@compute @workgroup_size(WG)
fn wkv(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let h = wid.x;
    let s = wid.y;
    let i = lid.x;
    let n = N_HEAD;
    let live = i < n;
    if count.n == 0u { return; }
    if lid.x == 0u {
        span = vec2<u32>(cursors[2u * s], cursors[2u * s + 1u]);
    }
    let sp = workgroupUniformLoad(&span);
    var st: array<f32, MAX_N>;
    let sbase = ((s * p.h + h) * n + i) * n;
    if live {
        for (var j = 0u; j < n; j++) { st[j] = state[sbase + j]; }
        s_rk[i] = vec[p.r_k_off + h * n + i];
    }
    let c = h * n + i;
    for (var tt = 0u; tt < sp.y; tt++) {
        let e = (sp.x + tt) * p.c + c;
        var v = 0.0;
        if live {
            s_r[i] = tm[R * p.plane + e];
            s_w[i] = tm[W * p.plane + e];
            s_k[i] = tm[K * p.plane + e];
            let kk = tm[KK * p.plane + e];
            s_kk[i] = kk;
            s_ab[i] = kk * tm[A * p.plane + e];
            v = tm[V * p.plane + e];
        }
        workgroupBarrier();
        var o = 0.0;
        var bonus = 0.0;
        if live {
            var sa = 0.0;
            for (var j = 0u; j < n; j++) { sa += st[j] * s_kk[j]; }
            for (var j = 0u; j < n; j++) {
                let x = st[j] * s_w[j] - sa * s_ab[j] + v * s_k[j];
                st[j] = x;
                o += x * s_r[j];
                bonus += s_r[j] * s_k[j] * s_rk[j];
            }
        }
        let mean = reduce_sum(i, o) / f32(n);
        let d = select(0.0, o - mean, live);
        let inv = inverseSqrt(reduce_sum(i, d * d) / f32(n) + p.eps);
        if live {
            let gn = d * inv * vec[p.lnw_off + c] + vec[p.lnb_off + c];
            y[e] = (gn + bonus * v) * tm[G * p.plane + e];
        }
    }
    if live {
        for (var j = 0u; j < n; j++) { state[sbase + j] = st[j]; }
    }
}
