// token_shift.wgsl: RWKV's token shift, for tokens of several slots packed one after another.
// `mix`:      out[m, t, c] = x[t, c] + (prev[t, c] - x[t, c]) * mu[m, c]   for m < mixes, where prev is
//             the previous token of the same slot, or the slot's saved row for its first token;
//             with `store` set, the slot's last row then replaces its saved row.
//             With `with_delta` set, mu[m, c] + delta[m, t, c] replaces mu (RWKV-6's data-dependent mix).
// `mix_lora`: `mix` with RWKV-6's delta computed in place, delta[m, t, c] = sum_j W2[m][c, j] h[t, m * D + j]
//             (the second halves of the five mix LoRAs; W2[m] [C, D] f16 packed as matmul weights, at
//             lora_w + m * lora_step vec4s of binding 9; h [T, 5 D] at lora_h with row stride lora_hs,
//             binding 10). Any step: a workgroup per token (its inputs staged once), each
//             invocation summing the D weights of one mix of one channel; prev and the saved row
//             as in `mix`. D and the mix count are the constants LORA_D and LORA_MIXES
//             (mixes * D <= MAX_LORA_H).
// `norm_mix`: the layer norm before it fused in (xn = ln(x) is written too), for steps where every
//             slot has at most one token (decoding), so prev is always the saved row.
// `norm_lora`: norm_mix of one mix (mu at mu_off; the saved row is not replaced) followed by the
//             product that reads it, for decoding steps: h[t, r] = tanh(sum_c W1[r, c] mixed[t, c])
//             for r < lora_rows (RWKV-6's mix LoRA first half; W1 [rows, C] f16 packed as matmul
//             weights from vec4 lora_w of binding 9, rows lora_kv vec4s long; h at lora_h of out,
//             rows lora_hs apart). Each workgroup repeats the norm's sums, stages the mixed row in
//             workgroup memory (C <= MAX_NL_C) and computes WG / NL_LANES rows, NL_LANES
//             invocations a row, whose first weight words (and the inputs of each invocation's
//             first eight staged values) are loaded before the sums; workgroup 0 writes xn.
//             Grid (ceil(rows / (WG / NL_LANES)), T).
// Bindings: cursors u32 [2B slot (start, len) | T slot ids], x [T, C] f32, shift [B, C] f32,
// vec f32 (mu at mu_off, [mixes, C]; ln weight/bias at ln_w_off/ln_b_off), out [mixes, out_plane, C]
// f32, delta like out, xn [T, C] f32. Grid: `mix` (ceil(C / WG), T): an invocation per channel and
// token; the one of a slot's first token both reads and replaces the saved row, so they cannot race; `norm_mix`
// (ceil(C / WG), T): each workgroup repeats layer_norm.wgsl's sums over the row, then owns WG channels.
struct Params {
    c: u32,
    slots: u32,
    mixes: u32,
    mu_off: u32,
    x_off: u32,
    out_plane: u32,     // elements between two outputs m and m + 1
    store: u32,         // 1: `mix` also saves each slot's last row
    with_delta: u32,    // 1: add delta to mu (otherwise delta is never read)
    ln_w_off: u32,      // norm_mix only
    ln_b_off: u32,
    eps: f32,
    _pad: u32,
    lora_kv: u32,       // mix_lora only (its width D is the constant LORA_D): vec4s per row of W2[m] ...
    lora_w: u32,        // ... where W2[0] starts and how far apart they are (vec4s) ...
    lora_step: u32,
    lora_h: u32,        // ... and where h starts, with its row stride (elements)
    lora_hs: u32,
    lora_rows: u32,     // norm_lora only: rows of W1
    _pad2: u32,
    _pad3: u32,
}
@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> cursors: array<u32>;
@group(0) @binding(3) var<storage, read> x: array<f32>;
@group(0) @binding(4) var<storage, read_write> shift: array<f32>;
@group(0) @binding(5) var<storage, read> vec: array<f32>;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;
@group(0) @binding(7) var<storage, read> delta: array<f32>;
@group(0) @binding(8) var<storage, read_write> xn: array<f32>;
@group(0) @binding(9) var<storage, read> lora_w: array<vec4<u32>>;
@group(0) @binding(10) var<storage, read> lora_h: array<f32>;

// Channel c of the row before token t of slot s (whose first token is `start`): the slot's
// saved row for its first token.
fn prev_value(s: u32, start: u32, t: u32, c: u32) -> f32 {
    if t == start { return shift[s * p.c + c]; }
    return x[p.x_off + (t - 1u) * p.c + c];
}

// Channel c of slot s's last row of this step: what replaces its saved row.
fn last_value(s: u32, start: u32, c: u32) -> f32 {
    return x[p.x_off + (start + cursors[2u * s + 1u] - 1u) * p.c + c];
}

@compute @workgroup_size(WG)
fn mix(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    let t = gid.y;
    if c >= p.c || t >= count.n { return; }
    let s = cursors[2u * p.slots + t];
    let start = cursors[2u * s];
    let cur = x[p.x_off + t * p.c + c];
    let prev = prev_value(s, start, t, c);
    // the slot's first token owns its saved row: read above, replaced here by the last row
    if t == start && p.store != 0u {
        shift[s * p.c + c] = last_value(s, start, c);
    }
    let d = prev - cur;
    for (var m = 0u; m < p.mixes; m++) {
        let e = m * p.out_plane + t * p.c + c;
        var mu = vec[p.mu_off + m * p.c + c];
        if p.with_delta != 0u { mu += delta[e]; }
        out[e] = cur + d * mu;
    }
}

// mix_lora: D and the number of mixes as constants (every loop over the weights runs a known
// number of times), the weight words loaded four at a time, and the token's LoRA inputs staged
// in workgroup memory (every channel reads all of them).
override LORA_D: u32 = 32u;
override LORA_MIXES: u32 = 5u;
const MAX_LORA_H: u32 = 1024u;  // LORA_MIXES * LORA_D at most
var<workgroup> lora_in: array<f32, MAX_LORA_H>;

// The 8 weights of word i of row c of W2[m], as f32 pairs of vec4s.
fn lora_w8(m: u32, c: u32, i: u32) -> vec4<u32> {
    return lora_w[p.lora_w + m * p.lora_step + c * p.lora_kv + i];
}

// sum_e W2[m][c, 8i + e] h[t, m * D + 8i + e] for one word, h staged in lora_in
fn lora_word(q: vec4<u32>, m: u32, i: u32) -> f32 {
    let lo = vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y));
    let hi = vec4<f32>(unpack2x16float(q.z), unpack2x16float(q.w));
    let j = m * LORA_D + i * 8u;
    if i * 8u + 8u <= LORA_D {
        return dot(lo, vec4<f32>(lora_in[j], lora_in[j + 1u], lora_in[j + 2u], lora_in[j + 3u]))
             + dot(hi, vec4<f32>(lora_in[j + 4u], lora_in[j + 5u], lora_in[j + 6u], lora_in[j + 7u]));
    }
    let w8 = array<f32, 8>(lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w);
    var acc = 0.0;
    for (var e = 0u; i * 8u + e < LORA_D; e++) { acc += w8[e] * lora_in[j + e]; }
    return acc;
}

// A workgroup is MIX_CH channels x LORA_MIXES mixes: invocation (x, y) computes mix y of channel
// x, so each waits on one mix's weight words instead of every mix's in turn. The slot's saved
// row is replaced (by the mix-0 invocation) only after every mix of the channel has read it.
override MIX_CH: u32 = 32u;

@compute @workgroup_size(MIX_CH, LORA_MIXES)
fn mix_lora(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let t = wid.y;
    if t >= count.n { return; }
    let c = wid.x * MIX_CH + lid.x;
    let m = lid.y;
    // what does not depend on the staged inputs is loaded first: the channel's values and the
    // first four weight words of its row (clamped into range; a word past the row is not summed)
    let cc = min(c, p.c - 1u);
    let kv = (LORA_D + 7u) / 8u;
    let q0 = lora_w8(m, cc, 0u);
    let q1 = lora_w8(m, cc, min(1u, kv - 1u));
    let q2 = lora_w8(m, cc, min(2u, kv - 1u));
    let q3 = lora_w8(m, cc, min(3u, kv - 1u));
    let s = cursors[2u * p.slots + t];
    let start = cursors[2u * s];
    let cur = x[p.x_off + t * p.c + cc];
    // a slot's first token reads its saved row (replaced below, by this workgroup only)
    let prev = prev_value(s, start, t, cc);
    let mu0 = vec[p.mu_off + m * p.c + cc];
    for (var j = lid.y * MIX_CH + lid.x; j < LORA_MIXES * LORA_D; j += MIX_CH * LORA_MIXES) {
        lora_in[j] = lora_h[p.lora_h + t * p.lora_hs + j];
    }
    workgroupBarrier();
    if c < p.c {
        // delta = sum_j W2[m][c, j] h[t, m * D + j], four words in flight at a time
        var acc = 0.0;
        acc += lora_word(q0, m, 0u);
        if kv > 1u { acc += lora_word(q1, m, 1u); }
        if kv > 2u { acc += lora_word(q2, m, 2u); }
        if kv > 3u { acc += lora_word(q3, m, 3u); }
        var i = 4u;
        for (; i + 4u <= kv; i += 4u) {
            let w0 = lora_w8(m, c, i);
            let w1 = lora_w8(m, c, i + 1u);
            let w2 = lora_w8(m, c, i + 2u);
            let w3 = lora_w8(m, c, i + 3u);
            acc += lora_word(w0, m, i);
            acc += lora_word(w1, m, i + 1u);
            acc += lora_word(w2, m, i + 2u);
            acc += lora_word(w3, m, i + 3u);
        }
        for (; i < kv; i++) {
            acc += lora_word(lora_w8(m, c, i), m, i);
        }
        out[m * p.out_plane + t * p.c + c] = cur + (prev - cur) * (mu0 + acc);
    }
    workgroupBarrier();
    if p.store != 0u && m == 0u && c < p.c && t == start {
        shift[s * p.c + c] = last_value(s, start, c);
    }
}

@compute @workgroup_size(WG)
fn norm_mix(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let t = wid.y;
    if t >= count.n { return; }
    let s = cursors[2u * p.slots + t];
    let xb = p.x_off + t * p.c;
    // this invocation's channel: its loads issued before the sums, which end in barriers
    let c = wid.x * WG + lid.x;
    let cc = min(c, p.c - 1u);
    let own = x[xb + cc];
    let lw = vec[p.ln_w_off + cc];
    let lb = vec[p.ln_b_off + cc];
    let prev = shift[s * p.c + cc];
    // the first six mix weights too (named values; a mix past p.mixes reads the last one)
    let mu0 = vec[p.mu_off + cc];
    let mu1 = vec[p.mu_off + min(1u, p.mixes - 1u) * p.c + cc];
    let mu2 = vec[p.mu_off + min(2u, p.mixes - 1u) * p.c + cc];
    let mu3 = vec[p.mu_off + min(3u, p.mixes - 1u) * p.c + cc];
    let mu4 = vec[p.mu_off + min(4u, p.mixes - 1u) * p.c + cc];
    let mu5 = vec[p.mu_off + min(5u, p.mixes - 1u) * p.c + cc];
    // every workgroup of the row sums the whole row (as layer_norm.wgsl), then mixes its WG channels
    let mean = reduce_sum(lid.x, row_part(lid.x, xb, p.c, 0.0, false)) / f32(p.c);
    let inv = inverseSqrt(reduce_sum(lid.x, row_part(lid.x, xb, p.c, mean, true)) / f32(p.c) + p.eps);
    if c >= p.c { return; }
    let cur = (own - mean) * inv * lw + lb;
    xn[t * p.c + c] = cur;
    let d = prev - cur;
    for (var m = 0u; m < p.mixes; m++) {
        let e = m * p.out_plane + t * p.c + c;
        var mu: f32;
        switch m {
            case 0u: { mu = mu0; }
            case 1u: { mu = mu1; }
            case 2u: { mu = mu2; }
            case 3u: { mu = mu3; }
            case 4u: { mu = mu4; }
            case 5u: { mu = mu5; }
            default: { mu = vec[p.mu_off + m * p.c + c]; }
        }
        if p.with_delta != 0u { mu += delta[e]; }
        out[e] = cur + d * mu;
    }
    if p.store != 0u {
        shift[s * p.c + c] = cur;
    }
}

const MAX_NL_C: u32 = 3072u;  // norm_lora: the longest row it stages
override NL_LANES: u32 = 64u;  // norm_lora: invocations a row (a power of two dividing WG)
var<workgroup> mixed: array<f32, MAX_NL_C>;

// Word i (values 8i .. 8i + 7) of the staged row.
fn mixed8(i: u32) -> array<f32, 8> {
    let j = i * 8u;
    return array<f32, 8>(mixed[j], mixed[j + 1u], mixed[j + 2u], mixed[j + 3u],
                         mixed[j + 4u], mixed[j + 5u], mixed[j + 6u], mixed[j + 7u]);
}

// Word i of the weight row at base (clamped into the row; a word past it is never summed).
fn nl_word(base: u32, i: u32) -> vec4<u32> {
    return lora_w[base + min(i, p.lora_kv - 1u)];
}

// dot8 of word q with staged word i, or 0 for a word past the row.
fn nl_dot(q: vec4<u32>, i: u32) -> f32 {
    return select(0.0, dot8(q, mixed8(min(i, p.lora_kv - 1u))), i < p.lora_kv);
}

// Staged value c of the mixed row (zero past C: the padding weights are zero, the values must be
// too); workgroup 0 also writes xn.
fn nl_stage(c: u32, x: f32, lw: f32, lb: f32, prev: f32, mu: f32, mean: f32, inv: f32, xo: u32, first: bool) {
    var v = 0.0;
    if c < p.c {
        let cur = (x - mean) * inv * lw + lb;
        if first { xn[xo + c] = cur; }
        v = cur + (prev - cur) * mu;
    }
    mixed[c] = v;
}

// What channels c0, c0 + WG, c0 + 2 WG and c0 + 3 WG of the mixed row are made of: x, the norm's
// weight and bias, the saved row and the mix (clamped into the row; past it they are not staged).
struct NlIn { x: vec4<f32>, lw: vec4<f32>, lb: vec4<f32>, pv: vec4<f32>, mu: vec4<f32> }

fn nl_load(c0: u32, xb: u32, sb: u32) -> NlIn {
    let k = min(vec4<u32>(c0) + vec4<u32>(0u, 1u, 2u, 3u) * WG, vec4<u32>(p.c - 1u));
    return NlIn(vec4<f32>(x[xb + k.x], x[xb + k.y], x[xb + k.z], x[xb + k.w]),
                vec4<f32>(vec[p.ln_w_off + k.x], vec[p.ln_w_off + k.y], vec[p.ln_w_off + k.z], vec[p.ln_w_off + k.w]),
                vec4<f32>(vec[p.ln_b_off + k.x], vec[p.ln_b_off + k.y], vec[p.ln_b_off + k.z], vec[p.ln_b_off + k.w]),
                vec4<f32>(shift[sb + k.x], shift[sb + k.y], shift[sb + k.z], shift[sb + k.w]),
                vec4<f32>(vec[p.mu_off + k.x], vec[p.mu_off + k.y], vec[p.mu_off + k.z], vec[p.mu_off + k.w]));
}

// Stage those four channels (the ones below n8, the padded row length).
fn nl_stage4(c0: u32, v: NlIn, n8: u32, mean: f32, inv: f32, xo: u32, first: bool) {
    if c0 < n8 { nl_stage(c0, v.x.x, v.lw.x, v.lb.x, v.pv.x, v.mu.x, mean, inv, xo, first); }
    if c0 + WG < n8 { nl_stage(c0 + WG, v.x.y, v.lw.y, v.lb.y, v.pv.y, v.mu.y, mean, inv, xo, first); }
    if c0 + 2u * WG < n8 { nl_stage(c0 + 2u * WG, v.x.z, v.lw.z, v.lb.z, v.pv.z, v.mu.z, mean, inv, xo, first); }
    if c0 + 3u * WG < n8 { nl_stage(c0 + 3u * WG, v.x.w, v.lw.w, v.lb.w, v.pv.w, v.mu.w, mean, inv, xo, first); }
}

@compute @workgroup_size(WG)
fn norm_lora(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let t = wid.y;
    if t >= count.n { return; }
    let lane = lid.x % NL_LANES;
    let r = wid.x * (WG / NL_LANES) + lid.x / NL_LANES;
    let base = p.lora_w + min(r, p.lora_rows - 1u) * p.lora_kv;
    // the lane's first 8 weight words, loaded before the norm's sums (they do not depend on them)
    let q0 = nl_word(base, lane);
    let q1 = nl_word(base, lane + NL_LANES);
    let q2 = nl_word(base, lane + 2u * NL_LANES);
    let q3 = nl_word(base, lane + 3u * NL_LANES);
    let q4 = nl_word(base, lane + 4u * NL_LANES);
    let q5 = nl_word(base, lane + 5u * NL_LANES);
    let q6 = nl_word(base, lane + 6u * NL_LANES);
    let q7 = nl_word(base, lane + 7u * NL_LANES);
    let s = cursors[2u * p.slots + t];
    let xb = p.x_off + t * p.c;
    let sb = s * p.c;
    // the inputs of this invocation's first eight channels of the mixed row, also loaded before
    // the sums (rows of up to 8 WG values: no load waits on them)
    let in0 = nl_load(lid.x, xb, sb);
    let in1 = nl_load(lid.x + 4u * WG, xb, sb);
    let mean = reduce_sum(lid.x, row_part(lid.x, xb, p.c, 0.0, false)) / f32(p.c);
    let inv = inverseSqrt(reduce_sum(lid.x, row_part(lid.x, xb, p.c, mean, true)) / f32(p.c) + p.eps);
    let n8 = p.lora_kv * 8u;
    let xo = t * p.c;
    let first = wid.x == 0u;
    nl_stage4(lid.x, in0, n8, mean, inv, xo, first);
    nl_stage4(lid.x + 4u * WG, in1, n8, mean, inv, xo, first);
    for (var c0 = lid.x + 8u * WG; c0 < n8; c0 += 4u * WG) {
        nl_stage4(c0, nl_load(c0, xb, sb), n8, mean, inv, xo, first);
    }
    workgroupBarrier();
    var acc = (nl_dot(q0, lane) + nl_dot(q1, lane + NL_LANES)) + (nl_dot(q2, lane + 2u * NL_LANES) + nl_dot(q3, lane + 3u * NL_LANES))
            + (nl_dot(q4, lane + 4u * NL_LANES) + nl_dot(q5, lane + 5u * NL_LANES)) + (nl_dot(q6, lane + 6u * NL_LANES) + nl_dot(q7, lane + 7u * NL_LANES));
    for (var i = lane + 8u * NL_LANES; i < p.lora_kv; i += NL_LANES) {
        acc += dot8(lora_w[base + i], mixed8(i));
    }
    // the row's NL_LANES sums added pairwise (a tree, not one invocation adding them in turn)
    red[lid.x] = acc;
    workgroupBarrier();
    for (var h = NL_LANES / 2u; h > 0u; h >>= 1u) {
        if lane < h { red[lid.x] += red[lid.x + h]; }
        workgroupBarrier();
    }
    if lane == 0u && r < p.lora_rows {
        out[p.lora_h + t * p.lora_hs + r] = tanh(red[lid.x]);
    }
}
