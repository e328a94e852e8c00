// time_mix_v5.wgsl: the RWKV-5/6 multi-head WKV, group norm and gate, for packed slots.
// tm is [5, plane] f32 holding planes r, w, k, v, g, each [T, C] (C = H * N).
// Decay per key channel: static w = vec[decay_off] (V5, already exp(-exp(time_decay))), or
// per token w = exp(-exp(vec[decay_off] + w_plane)) (V6). u (bonus) is vec[u_off].
// For each token:  o_i = sum_j r_j (u_j k_j v_i + S_ij);  S_ij = k_j v_i + w_j S_ij
//                  y = group_norm(o) * ln_x  (times g when gated).
// State S is [B, H, N, N] f32 (row = value index i, column = key index j).
// Grid: (H, B); WG >= N invocations, invocation i owns row i of S.
struct Params {
    c: u32,
    h: u32,
    n: u32,
    plane: u32,
    slots: u32,
    dynamic_decay: u32,
    gated: u32,
    decay_off: u32,
    u_off: u32,
    lnw_off: u32,
    lnb_off: u32,
    eps: f32,
}
@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> cursors: array<u32>;
@group(0) @binding(3) var<storage, read> tm: array<f32>;
@group(0) @binding(4) var<storage, read> vec: array<f32>;
@group(0) @binding(5) var<storage, read_write> state: array<f32>;
@group(0) @binding(6) var<storage, read_write> y: array<f32>;

const R: u32 = 0u;
const W: u32 = 1u;
const K: u32 = 2u;
const V: u32 = 3u;
const G: u32 = 4u;
const MAX_N: u32 = 64u;
override N_HEAD: u32 = 64u;   // head size, a constant so loops over it unroll

var<workgroup> s_r: array<f32, MAX_N>;
var<workgroup> s_w: array<f32, MAX_N>;
var<workgroup> s_k: array<f32, MAX_N>;
var<workgroup> s_u: array<f32, MAX_N>;
var<workgroup> span: vec2<u32>;

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let h = wid.x;
    let s = wid.y;
    let i = lid.x;
    let n = N_HEAD;
    let live = i < n;
    if count.n == 0u { return; }
    if i == 0u {
        span = vec2<u32>(cursors[2u * s], cursors[2u * s + 1u]);
    }
    let sp = workgroupUniformLoad(&span);
    let c = h * n + i;
    var st: array<f32, MAX_N>;
    let sbase = ((s * p.h + h) * n + i) * n;
    if live {
        for (var j = 0u; j < n; j++) { st[j] = state[sbase + j]; }
        s_u[i] = vec[p.u_off + c];
    }
    for (var tt = 0u; tt < sp.y; tt++) {
        let e = (sp.x + tt) * p.c + c;
        var v = 0.0;
        if live {
            s_r[i] = tm[R * p.plane + e];
            s_k[i] = tm[K * p.plane + e];
            if p.dynamic_decay != 0u {
                s_w[i] = exp(-exp(vec[p.decay_off + c] + tm[W * p.plane + e]));
            } else {
                s_w[i] = vec[p.decay_off + c];
            }
            v = tm[V * p.plane + e];
        }
        workgroupBarrier();
        var o = 0.0;
        if live {
            for (var j = 0u; j < n; j++) {
                let kv = s_k[j] * v;
                o += s_r[j] * (s_u[j] * kv + st[j]);
                st[j] = kv + s_w[j] * st[j];
            }
        }
        let mean = reduce_sum(i, o) / f32(n);
        let d = select(0.0, o - mean, live);
        let inv = inverseSqrt(reduce_sum(i, d * d) / f32(n) + p.eps);
        if live {
            var out = d * inv * vec[p.lnw_off + c] + vec[p.lnb_off + c];
            if p.gated != 0u {
                out *= tm[G * p.plane + e];
            }
            y[e] = out;
        }
    }
    if live {
        for (var j = 0u; j < n; j++) { state[sbase + j] = st[j]; }
    }
}
