// time_mix_v7.wgsl: the RWKV-7 time-mix core, for tokens of several slots packed in order.
// tm is [7, plane] f32 holding planes r, w, k, v, kk, a, g, each [T, C] (C = H * N); y is [T, C].
// `prepare` (grid (H, T)): turns the raw projections into the kernel inputs, in place:
//     w = exp(-e^-0.5 * sigmoid(w0 + w)), a = sigmoid(a0 + a), kk = normalize_head(k * k_k),
//     k = k * (1 + (a - 1) * k_a), v = v + (v_first - v) * sigmoid(v0 + vgate) (layer 0 saves v_first).
// `wkv` (grid (H * ceil(N / ROWS), B), WKV_WG invocations): per slot and head, for each token
//     S = S * w[j] - (S kk) (kk * a)[j] + v k[j];  y = o = S r  (raw; ROWS state rows per workgroup).
// `norm` (grid (H, T)), in place: y = (group_norm(o) * ln_x + (sum r * k * r_k) * v) * g.
// `decode` (grid (H, B), DEC_WG invocations; steps where every slot has at most one token): the
//     LoRA second halves (w, a, v, g) for the head's channels, prepare, wkv and norm of one slot's
//     token in one workgroup; writes y, state and v_first (layer 0) and leaves tm as it is.
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
    // `decode` only: the LoRA second halves w, a, v, g (in that order in each vec4): where their
    // f16 rows start in binding 10 (vec4s) and where their inputs start in a row of hid (binding
    // 9, hid_stride elements a row). Their widths are the constants D_W, D_A, D_V, D_G.
    lora_at: vec4<u32>,
    hid_at: vec4<u32>,
    hid_stride: u32,
    _pad1: u32,
    _pad2: u32,
    _pad3: u32,
}
@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> cursors: array<u32>;
@group(0) @binding(3) var<storage, read_write> tm: array<f32>;
@group(0) @binding(4) var<storage, read> vgate: array<f32>;
@group(0) @binding(5) var<storage, read_write> v_first: array<f32>;
@group(0) @binding(6) var<storage, read> vec: array<f32>;
@group(0) @binding(7) var<storage, read_write> state: array<f32>;
@group(0) @binding(8) var<storage, read_write> y: array<f32>;
@group(0) @binding(9) var<storage, read> hid: array<f32>;
@group(0) @binding(10) var<storage, read> lora: array<vec4<u32>>;

const R: u32 = 0u;
const W: u32 = 1u;
const K: u32 = 2u;
const V: u32 = 3u;
const KK: u32 = 4u;
const A: u32 = 5u;
const G: u32 = 6u;
const MAX_N: u32 = 64u;
override N_HEAD: u32 = 64u;   // head size

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

// wkv: LANES invocations share a state row; lane l owns column groups l and l + LANES (4 columns
// each, held as vec4s s0, s1). One token costs one barrier (to sum S kk over the row). r, w, k, kk,
// kk * a of TB tokens are staged at once in s_tok [5, TB, N4] (zero beyond column N), each
// invocation loading one column group of one token for the next block while the current one runs:
// TB + 2 barriers per TB tokens.
const LANES: u32 = 8u;
const ROWS: u32 = 16u;
const TB: u32 = 8u;
const N4: u32 = MAX_N / 4u;
const WKV_WG: u32 = ROWS * LANES;   // = TB * N4 = TB * ROWS: one staged item per invocation
const SR: u32 = 0u;                 // planes of s_tok
const SW: u32 = 1u;
const SK: u32 = 2u;
const SKK: u32 = 3u;
const SAB: u32 = 4u;

var<workgroup> s_tok: array<vec4<f32>, 5u * TB * N4>;
var<workgroup> s_v: array<f32, TB * ROWS>;          // [TB, ROWS] v of this workgroup's rows
var<workgroup> s_sa: array<vec4<f32>, WKV_WG / 2u>;  // partial S kk per invocation [2 (parity of b), ROWS, LANES]
var<workgroup> s_o: array<vec4<f32>, TB * WKV_WG / 4u>;  // partial S r per invocation [TB, ROWS, LANES]
var<workgroup> span: vec2<u32>;                    // 15.5 KiB of workgroup memory in all

// One invocation's share of a block of tokens: one column group of one token, and one v.
struct Staged {
    r: vec4<f32>,
    w: vec4<f32>,
    k: vec4<f32>,
    kk: vec4<f32>,
    ab: vec4<f32>,
    v: f32,
}

// Tokens t.. of a block (clamped to the slot's last token `last`) of the head at column hc: this
// invocation's column group of token tid / N4, and v of row row0 + tid % ROWS of token tid / ROWS
// (a padding row beyond N reads row N - 1; its results are never stored).
fn fetch(tid: u32, t: u32, last: u32, hc: u32, row0: u32) -> Staged {
    let i = min(t + tid / N4, last) * p.c + hc;
    let j0 = tid % N4 * 4u;
    var x: Staged;
    x.r = tm4(R, i, j0);
    x.w = tm4(W, i, j0);
    x.k = tm4(K, i, j0);
    x.kk = tm4(KK, i, j0);
    x.ab = x.kk * tm4(A, i, j0);
    x.v = tm[V * p.plane + min(t + tid / ROWS, last) * p.c + hc + min(row0 + tid % ROWS, N_HEAD - 1u)];
    return x;
}

fn commit(tid: u32, x: Staged) {
    s_tok[SR * TB * N4 + tid] = x.r;
    s_tok[SW * TB * N4 + tid] = x.w;
    s_tok[SK * TB * N4 + tid] = x.k;
    s_tok[SKK * TB * N4 + tid] = x.kk;
    s_tok[SAB * TB * N4 + tid] = x.ab;
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
            let sa4 = s0 * tok(SKK, b, lane) + s1 * tok(SKK, b, g1);
            let par = b % 2u * WKV_WG / 4u;
            s_sa[par + tid / 4u][tid % 4u] = sa4.x + sa4.y + sa4.z + sa4.w;
            workgroupBarrier();
            let sa = row_sum(s_sa[par + 2u * lr], s_sa[par + 2u * lr + 1u]);
            s0 = s0 * tok(SW, b, lane) - sa * tok(SAB, b, lane) + v * tok(SK, b, lane);
            s1 = s1 * tok(SW, b, g1) - sa * tok(SAB, b, g1) + v * tok(SK, b, g1);
            let o4 = s0 * tok(SR, b, lane) + s1 * tok(SR, b, g1);
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
    let c = h * n + i;
    let e = t * p.c + c;
    var o = 0.0;
    var rkr = 0.0;
    if live {
        o = y[e];
        rkr = tm[R * p.plane + e] * tm[K * p.plane + e] * vec[p.r_k_off + c];
    }
    let bonus = reduce_sum(i, rkr);
    let mean = reduce_sum(i, o) / f32(n);
    let d = select(0.0, o - mean, live);
    let inv = inverseSqrt(reduce_sum(i, d * d) / f32(n) + p.eps);
    if live {
        let gn = d * inv * vec[p.lnw_off + c] + vec[p.lnb_off + c];
        y[e] = (gn + bonus * tm[V * p.plane + e]) * tm[G * p.plane + e];
    }
}

// decode: invocation tid works as (row i = tid / 4 of the head's state, quarter q = tid % 4 owning
// column groups q, q + 4, q + 8, q + 12; wkv_common.wgsl), and in the LoRA phase as (LoRA
// m = tid / 64, channel tid % 64). The head's vectors pass through workgroup memory (zero
// beyond column N).
var<workgroup> d_lora: array<f32, 4u * MAX_N>;  // raw w, a, vgate, g per channel
var<workgroup> d_r: array<vec4<f32>, N4>;
var<workgroup> d_w: array<vec4<f32>, N4>;
var<workgroup> d_k: array<vec4<f32>, N4>;
var<workgroup> d_kk: array<vec4<f32>, N4>;      // k * k_k, not yet divided by its norm
var<workgroup> d_a: array<vec4<f32>, N4>;
var<workgroup> d_v: array<f32, MAX_N>;

override D_W: u32 = 0u;  // decode: the LoRA widths (0: no such LoRA, v in layer 0), as
override D_A: u32 = 0u;  // constants so that every loop over a row runs a known number of times
override D_V: u32 = 0u;
override D_G: u32 = 0u;
const MAX_HID: u32 = 1024u;  // D_W + D_A + D_V + D_G at most
var<workgroup> d_hid: array<f32, MAX_HID>;  // the token's LoRA inputs, w a v g back to back

// The 8 inputs of word i of the LoRA whose inputs start at d_hid[hb].
fn hid8(hb: u32, i: u32) -> array<f32, 8> {
    let j = hb + i * 8u;
    return array<f32, 8>(d_hid[j], d_hid[j + 1u], d_hid[j + 2u], d_hid[j + 3u],
                         d_hid[j + 4u], d_hid[j + 5u], d_hid[j + 6u], d_hid[j + 7u]);
}

// sum_j W[ch, j] d_hid[hb + j] over the D inputs of the LoRA whose f16 rows start at vec4 `at`:
// eight words loaded before any is used (named values, so they are in flight together)
fn lora_dot(at: u32, d: u32, ch: u32, hb: u32) -> f32 {
    let kv = (d + 7u) / 8u;
    let wb = at + ch * kv;
    var acc = 0.0;
    var i = 0u;
    for (; i + 8u <= kv; i += 8u) {
        let q0 = lora[wb + i];
        let q1 = lora[wb + i + 1u];
        let q2 = lora[wb + i + 2u];
        let q3 = lora[wb + i + 3u];
        let q4 = lora[wb + i + 4u];
        let q5 = lora[wb + i + 5u];
        let q6 = lora[wb + i + 6u];
        let q7 = lora[wb + i + 7u];
        acc += dot8(q0, hid8(hb, i));
        acc += dot8(q1, hid8(hb, i + 1u));
        acc += dot8(q2, hid8(hb, i + 2u));
        acc += dot8(q3, hid8(hb, i + 3u));
        acc += dot8(q4, hid8(hb, i + 4u));
        acc += dot8(q5, hid8(hb, i + 5u));
        acc += dot8(q6, hid8(hb, i + 6u));
        acc += dot8(q7, hid8(hb, i + 7u));
    }
    for (; i < kv; i++) {
        acc += dot8(lora[wb + i], hid8(hb, i));
    }
    return acc;
}

// Copy the token's D inputs of one LoRA from hid (at hb) to d_hid (at db), zero up to a whole 8.
fn stage_hid(tid: u32, hb: u32, db: u32, d: u32) {
    for (var j = tid; j < (d + 7u) / 8u * 8u; j += DEC_WG) {
        d_hid[db + j] = select(0.0, hid[hb + min(j, d - 1u)], j < d);
    }
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
    var st = load_quarter(sbase, q);
    let hc = h * n;
    // the group norm's weight and bias for this invocation's channel, loaded now so that nothing
    // waits on memory after the norm
    let lw = vec[p.lnw_off + hc + min(tid, n - 1u)];
    let lb = vec[p.lnb_off + hc + min(tid, n - 1u)];
    let sp = slot_span(tid, s);
    if sp.y == 0u { return; }
    let t = sp.x;

    // the four LoRA second halves, one channel each, reading the inputs from workgroup memory
    let pw = (D_W + 7u) / 8u * 8u;  // where each LoRA's inputs start in d_hid
    let pa = pw + (D_A + 7u) / 8u * 8u;
    let pv = pa + (D_V + 7u) / 8u * 8u;
    let hb = t * p.hid_stride;
    stage_hid(tid, hb + p.hid_at[0], 0u, D_W);
    stage_hid(tid, hb + p.hid_at[1], pw, D_A);
    stage_hid(tid, hb + p.hid_at[2], pa, D_V);
    stage_hid(tid, hb + p.hid_at[3], pv, D_G);
    workgroupBarrier();
    let m = tid / MAX_N;
    let cl = tid % MAX_N;
    if cl < n {
        let ch = hc + cl;
        var x = 0.0;
        switch m {  // one arm per LoRA, so each loop runs a constant number of times
            case 0u: { x = lora_dot(p.lora_at[0], D_W, ch, 0u); }
            case 1u: { x = lora_dot(p.lora_at[1], D_A, ch, pw); }
            case 2u: { x = lora_dot(p.lora_at[2], D_V, ch, pa); }
            default: { x = lora_dot(p.lora_at[3], D_G, ch, pv); }
        }
        d_lora[m * MAX_N + cl] = x;
    }
    workgroupBarrier();

    // prepare (as `prepare`), one channel per invocation; zeros past N (workgroup memory is
    // not cleared between dispatches on every backend)
    if tid < MAX_N {
        var r = 0.0;
        var w = 0.0;
        var kn = 0.0;
        var kk = 0.0;
        var a = 0.0;
        var v = 0.0;
        var rkr = 0.0;
        if tid < n {
            let c = hc + tid;
            let e = t * p.c + c;
            let k = tm[K * p.plane + e];
            kk = k * vec[p.k_k_off + c];
            a = sigmoid(vec[p.a0_off + c] + d_lora[MAX_N + tid]);
            kn = k * (1.0 + (a - 1.0) * vec[p.k_a_off + c]);
            v = tm[V * p.plane + e];
            if p.layer0 != 0u {
                v_first[e] = v;
            } else {
                v = v + (v_first[e] - v) * sigmoid(vec[p.v0_off + c] + d_lora[2u * MAX_N + tid]);
            }
            r = tm[R * p.plane + e];
            w = exp(-0.606531 * sigmoid(vec[p.w0_off + c] + d_lora[tid]));
            rkr = r * kn * vec[p.r_k_off + c];
        }
        let g4 = tid / 4u;
        let g1 = tid % 4u;
        d_r[g4][g1] = r;
        d_w[g4][g1] = w;
        d_k[g4][g1] = kn;
        d_kk[g4][g1] = kk;
        d_a[g4][g1] = a;
        d_v[tid] = v;
        d_red[tid] = kk * kk;
        d_red[MAX_N + tid] = rkr;
    }
    workgroupBarrier();
    red_parts(tid);
    workgroupBarrier();
    let norm = max(sqrt(red_total(0u)), 1e-12);
    let bonus = red_total(1u);

    // wkv: sa = S kk over the row (four quarters), then the update and o = S r
    let kk0 = d_kk[q] / norm;
    let kk1 = d_kk[q + 4u] / norm;
    let kk2 = d_kk[q + 8u] / norm;
    let kk3 = d_kk[q + 12u] / norm;
    d_part[tid] = dot(st.a, kk0) + dot(st.b, kk1) + dot(st.c, kk2) + dot(st.d, kk3);
    workgroupBarrier();
    let sa = row_total(i);
    let v = d_v[min(i, n - 1u)];
    st.a = st.a * d_w[q] - sa * (kk0 * d_a[q]) + v * d_k[q];
    st.b = st.b * d_w[q + 4u] - sa * (kk1 * d_a[q + 4u]) + v * d_k[q + 4u];
    st.c = st.c * d_w[q + 8u] - sa * (kk2 * d_a[q + 8u]) + v * d_k[q + 8u];
    st.d = st.d * d_w[q + 12u] - sa * (kk3 * d_a[q + 12u]) + v * d_k[q + 12u];
    let o_part = dot(st.a, d_r[q]) + dot(st.b, d_r[q + 4u]) + dot(st.c, d_r[q + 8u]) + dot(st.d, d_r[q + 12u]);
    workgroupBarrier();  // every sa read before d_part is reused
    d_part[tid] = o_part;
    if live {
        store_quarter(sbase, q, st);
    }
    workgroupBarrier();

    // norm (as `norm`): group norm of o over the head, bonus, gate
    let hn = head_norm(tid, row_total(min(tid, MAX_N - 1u)), n, p.eps);
    let dv = hn.x;
    let inv = hn.y;
    if tid < n {
        let gn = dv * inv * lw + lb;
        y[t * p.c + hc + tid] = (gn + bonus * d_v[tid]) * d_lora[3u * MAX_N + tid];
    }
}
