// time_mix_v5.wgsl: the RWKV-5/6 multi-head WKV, group norm and gate, for packed slots.
// tm is [5, plane] f32 holding planes r, w, k, v, g, each [T, C] (C = H * N); y is [T, C].
// Decay per key channel: static w = vec[decay_off] (V5, already exp(-exp(time_decay))), or
// per token w = exp(-exp(vec[decay_off] + w_plane)) (V6). u (bonus) is vec[u_off].
// `wkv` (grid (H * ceil(N / ROWS), B), WKV_WG invocations), per slot and head, for each token
//     y = o_i = sum_j r_j (u_j k_j v_i + S_ij);  S_ij = k_j v_i + w_j S_ij  (raw; ROWS rows per workgroup).
// `wkv_lanes` (time_mix_v5_lanes.wgsl): the same recurrence for CPU adapters.
// `norm` (grid (H, T)), in place: y = group_norm(o) * ln_x  (times g when gated).
// `decode` (grid (H, B), DEC_WG invocations; steps where every slot has at most one token): wkv
//     and norm of one slot's token in one workgroup (layout in wkv_common.wgsl). Built with
//     decay_none.wgsl (kernel time_mix_v5) it reads V6's decay from the w plane; built with
//     decay_lora.wgsl (kernel time_mix_v6) it computes the decay LoRA second half itself.
// State S is [B, H, N, N] f32 (row = value index i, column = key index j).
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
    lora_at: u32,     // decay_lora.wgsl only: where W2 starts (vec4s of binding 8) ...
    hid_at: u32,      // ... and its inputs in a row of hid (elements), rows hid_stride apart
    hid_stride: u32,
    _pad: u32,
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
override N_HEAD: u32 = 64u;   // head size

// wkv: LANES invocations share a state row; lane l owns column groups l and l + LANES (4 columns
// each, held as vec4s s0, s1). Rows are independent: no barrier per token. r, w, k of TB tokens are
// staged at once in s_tok [3, TB, N4] (zero beyond column N), each invocation loading one column
// group of one token for the next block while the current one runs: 2 barriers per TB tokens.
const LANES: u32 = 8u;
const ROWS: u32 = 16u;
const TB: u32 = 8u;
const N4: u32 = MAX_N / 4u;
const WKV_WG: u32 = ROWS * LANES;   // = TB * N4 = TB * ROWS: one staged item per invocation
const SR: u32 = 0u;                 // planes of s_tok
const SW: u32 = 1u;
const SK: u32 = 2u;

var<workgroup> s_tok: array<vec4<f32>, 3u * TB * N4>;
var<workgroup> s_v: array<f32, TB * ROWS>;          // [TB, ROWS] v of this workgroup's rows
var<workgroup> s_o: array<vec4<f32>, TB * WKV_WG / 4u>;  // partial o per invocation [TB, ROWS, LANES]
var<workgroup> span: vec2<u32>;                    // 10.5 KiB of workgroup memory in all

// One invocation's share of a block of tokens: one column group of one token, and one v.
struct Staged {
    r: vec4<f32>,
    w: vec4<f32>,
    k: vec4<f32>,
    v: f32,
}

fn vec4_at(i: u32, j0: u32) -> vec4<f32> {
    let j = cols(j0) + i;
    return select(vec4<f32>(0.0), vec4<f32>(vec[j.x], vec[j.y], vec[j.z], vec[j.w]), in_head(j0));
}

// Tokens t.. of a block (clamped to the slot's last token `last`) of the head at column hc: this
// invocation's column group of token tid / N4, and v of row row0 + tid % ROWS of token tid / ROWS
// (a padding row beyond N reads row N - 1; its results are never stored).
fn fetch(tid: u32, t: u32, last: u32, hc: u32, row0: u32) -> Staged {
    let i = min(t + tid / N4, last) * p.c + hc;
    let j0 = tid % N4 * 4u;
    var x: Staged;
    x.r = tm4(R, i, j0);
    x.k = tm4(K, i, j0);
    if p.dynamic_decay != 0u {
        x.w = exp(-exp(vec4_at(p.decay_off + hc, j0) + tm4(W, i, j0)));
    } else {
        x.w = vec4_at(p.decay_off + hc, j0);
    }
    x.v = tm[V * p.plane + min(t + tid / ROWS, last) * p.c + hc + min(row0 + tid % ROWS, N_HEAD - 1u)];
    return x;
}

fn commit(tid: u32, x: Staged) {
    s_tok[SR * TB * N4 + tid] = x.r;
    s_tok[SW * TB * N4 + tid] = x.w;
    s_tok[SK * TB * N4 + tid] = x.k;
    s_v[tid] = x.v;
}

@compute @workgroup_size(WKV_WG)
fn wkv(@builtin(local_invocation_index) tid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let n = N_HEAD;
    let splits = (n + ROWS - 1u) / ROWS;
    let h = wid.x / splits;
    let row0 = wid.x % splits * ROWS;
    let s = wid.y;
    let lr = tid / LANES;
    let lane = tid % LANES;
    let g1 = lane + LANES;
    if count.n == 0u { return; }
    // The state loads do not wait for the slot's span: both are in flight together.
    let live = row0 + lr < n;   // a padding row works on a copy of row N - 1 and is not stored
    let sbase = ((s * p.h + h) * n + min(row0 + lr, n - 1u)) * n;
    var s0 = load_state(sbase, 4u * lane);
    var s1 = load_state(sbase, 4u * g1);
    if tid == 0u {
        span = vec2<u32>(cursors[2u * s], cursors[2u * s + 1u]);
    }
    let sp = workgroupUniformLoad(&span);
    if sp.y == 0u { return; }
    let hc = h * n;
    let last = sp.x + sp.y - 1u;
    let u0 = vec4_at(p.u_off + hc, 4u * lane);
    let u1 = vec4_at(p.u_off + hc, 4u * g1);
    var next = fetch(tid, sp.x, last, hc, row0);
    for (var t0 = 0u; t0 < sp.y; t0 += TB) {
        let nb = min(TB, sp.y - t0);
        commit(tid, next);
        workgroupBarrier();
        if t0 + TB < sp.y {
            next = fetch(tid, sp.x + t0 + TB, last, hc, row0);
        }
        for (var b = 0u; b < nb; b++) {
            let v = s_v[b * ROWS + lr];
            let kv0 = tok(SK, b, lane) * v;
            let kv1 = tok(SK, b, g1) * v;
            let o4 = tok(SR, b, lane) * (u0 * kv0 + s0) + tok(SR, b, g1) * (u1 * kv1 + s1);
            s0 = kv0 + tok(SW, b, lane) * s0;
            s1 = kv1 + tok(SW, b, g1) * s1;
            s_o[(b * WKV_WG + tid) / 4u][tid % 4u] = o4.x + o4.y + o4.z + o4.w;
        }
        workgroupBarrier();
        // Flush: invocation tid sums the partials of row tid % ROWS for token tid / ROWS.
        let ob = tid / ROWS;
        let orow = tid % ROWS;
        if ob < nb && row0 + orow < n {
            let q = (ob * ROWS + orow) * 2u;
            y[(sp.x + t0 + ob) * p.c + hc + row0 + orow] = row_sum(s_o[q], s_o[q + 1u]);
        }
    }
    if live {
        store_state(sbase, 4u * lane, s0);
        store_state(sbase, 4u * g1, s1);
    }
}

@compute @workgroup_size(WG)
fn norm(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let h = wid.x;
    let t = wid.y;
    if t >= count.n { return; }
    let n = p.n;
    let i = lid.x;
    let live = i < n;
    let e = t * p.c + h * n + i;
    var o = 0.0;
    if live { o = y[e]; }
    let mean = reduce_sum(i, o) / f32(n);
    let d = select(0.0, o - mean, live);
    let inv = inverseSqrt(reduce_sum(i, d * d) / f32(n) + p.eps);
    if live {
        var out = d * inv * vec[p.lnw_off + h * n + i] + vec[p.lnb_off + h * n + i];
        if p.gated != 0u {
            out *= tm[G * p.plane + e];
        }
        y[e] = out;
    }
}

var<workgroup> d_r: array<vec4<f32>, N4>;
var<workgroup> d_w: array<vec4<f32>, N4>;
var<workgroup> d_k: array<vec4<f32>, N4>;
var<workgroup> d_u: array<vec4<f32>, N4>;
var<workgroup> d_v: array<f32, MAX_N>;

// The first weight words of an invocation's share of the decay LoRA (decay_lora.wgsl; unused
// with decay_none.wgsl).
struct DecayWords {
    a: vec4<u32>,
    b: vec4<u32>,
}

@compute @workgroup_size(DEC_WG)
fn decode(@builtin(local_invocation_index) tid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let n = N_HEAD;
    let h = wid.x;
    let s = wid.y;
    if count.n == 0u { return; }
    let i = tid / 4u;
    let q = tid % 4u;
    let live = i < n;  // a padding row works on a copy of row N - 1 and is not stored
    let sbase = ((s * p.h + h) * n + min(i, n - 1u)) * n;
    let st = load_quarter(sbase, q);
    let hc = h * n;
    let pre = decay_lora_words(tid, hc);
    let sp = slot_span(tid, s);
    if sp.y == 0u { return; }
    let t = sp.x;
    // the token's vectors for the head, one channel per invocation, loaded before the decay
    // LoRA's sums, which do not need them (zeros past N: workgroup memory is not cleared between
    // dispatches on every backend)
    let live_c = tid < n;
    let tc = hc + min(tid, n - 1u);
    let te = t * p.c + tc;
    var tr = 0.0;
    var tw = 0.0;
    var tk = 0.0;
    var tu = 0.0;
    var tv = 0.0;
    // and what the group norm's output takes (its weight, bias and the gate), so that nothing
    // waits on memory after the norm
    var lw = 0.0;
    var lb = 0.0;
    var gate = 1.0;
    if live_c {
        tr = tm[R * p.plane + te];
        tk = tm[K * p.plane + te];
        tv = tm[V * p.plane + te];
        tu = vec[p.u_off + tc];
        tw = vec[p.decay_off + tc];
        lw = vec[p.lnw_off + tc];
        lb = vec[p.lnb_off + tc];
        if p.gated != 0u { gate = tm[G * p.plane + te]; }
    }
    decay_lora_parts(tid, t, hc, pre);
    if tid < MAX_N {
        if live_c && p.dynamic_decay != 0u { tw = exp(-exp(tw + decay_delta(tid, te))); }
        d_r[tid / 4u][tid % 4u] = tr;
        d_w[tid / 4u][tid % 4u] = tw;
        d_k[tid / 4u][tid % 4u] = tk;
        d_u[tid / 4u][tid % 4u] = tu;
        d_v[tid] = tv;
    }
    workgroupBarrier();
    // wkv (as `wkv`): o_i = sum_j r_j (u_j k_j v_i + S_ij), then S_ij = k_j v_i + w_j S_ij
    let v = d_v[min(i, n - 1u)];
    let kv0 = d_k[q] * v;
    let kv1 = d_k[q + 4u] * v;
    let kv2 = d_k[q + 8u] * v;
    let kv3 = d_k[q + 12u] * v;
    let o4 = d_r[q] * (d_u[q] * kv0 + st.a) + d_r[q + 4u] * (d_u[q + 4u] * kv1 + st.b)
           + d_r[q + 8u] * (d_u[q + 8u] * kv2 + st.c) + d_r[q + 12u] * (d_u[q + 12u] * kv3 + st.d);
    d_part[tid] = o4.x + o4.y + o4.z + o4.w;
    if live {
        store_quarter(sbase, q, Quarter(kv0 + d_w[q] * st.a, kv1 + d_w[q + 4u] * st.b, kv2 + d_w[q + 8u] * st.c,
                                        kv3 + d_w[q + 12u] * st.d));
    }
    workgroupBarrier();
    // norm (as `norm`): group norm of o over the head, times g when gated
    let hn = head_norm(tid, row_total(min(tid, MAX_N - 1u)), n, p.eps);
    let dv = hn.x;
    let inv = hn.y;
    if live_c {
        y[te] = (dv * inv * lw + lb) * gate;
    }
}
