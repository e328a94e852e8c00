// decay_lora.wgsl: RWKV-6's decay LoRA second half inside time_mix_v5.wgsl's `decode` (the kernel
// time_mix_v6): delta[c] = sum_j W2[c, j] hid[t, j] for the head's channels, computed in the
// workgroup instead of by a product into the w plane of tm. W2 [C, D_W] f16 is packed as the
// matmul weights (rows of ceil(D_W / 8) vec4s) from vec4 p.lora_at of binding 8; the token's
// D_W inputs start at p.hid_at of its row of p.hid_stride elements in binding 7.
// Invocation tid sums words tid / MAX_N, + 4, + 8, ... of channel tid % MAX_N's row into d_part.
// No dispatch of its own.
@group(0) @binding(7) var<storage, read> hid: array<f32>;
@group(0) @binding(8) var<storage, read> lora: array<vec4<u32>>;

override D_W: u32 = 64u;   // the LoRA's width
const MAX_DW: u32 = 256u;  // D_W at most
var<workgroup> d_hid: array<f32, MAX_DW>;

fn dhid8(i: u32) -> array<f32, 8> {
    let j = i * 8u;
    return array<f32, 8>(d_hid[j], d_hid[j + 1u], d_hid[j + 2u], d_hid[j + 3u],
                         d_hid[j + 4u], d_hid[j + 5u], d_hid[j + 6u], d_hid[j + 7u]);
}

const DW_STEP: u32 = DEC_WG / MAX_N;  // invocations a channel

// Words a row.
fn dw_kv() -> u32 {
    return (D_W + 7u) / 8u;
}

// Where channel tid % MAX_N's row starts (a channel past N reads row N - 1, never used).
fn dw_row(tid: u32, hc: u32) -> u32 {
    return p.lora_at + (hc + min(tid % MAX_N, N_HEAD - 1u)) * dw_kv();
}

// The first two words of invocation tid's share of its row (clamped into the row), loaded at
// the start of `decode`: they do not depend on the token.
fn decay_lora_words(tid: u32, hc: u32) -> DecayWords {
    let wb = dw_row(tid, hc);
    let i = tid / MAX_N;
    return DecayWords(lora[wb + min(i, dw_kv() - 1u)], lora[wb + min(i + DW_STEP, dw_kv() - 1u)]);
}

// Every invocation calls it (it has barriers); d_part holds the partial sums afterwards.
fn decay_lora_parts(tid: u32, t: u32, hc: u32, pre: DecayWords) {
    let kv = dw_kv();
    let hb = t * p.hid_stride + p.hid_at;
    for (var j = tid; j < kv * 8u; j += DEC_WG) {
        d_hid[j] = select(0.0, hid[hb + min(j, D_W - 1u)], j < D_W);
    }
    workgroupBarrier();
    let wb = dw_row(tid, hc);
    let i0 = tid / MAX_N;
    var acc = select(0.0, dot8(pre.a, dhid8(min(i0, kv - 1u))), i0 < kv)
            + select(0.0, dot8(pre.b, dhid8(min(i0 + DW_STEP, kv - 1u))), i0 + DW_STEP < kv);
    for (var i = i0 + 2u * DW_STEP; i < kv; i += DW_STEP) {
        acc += dot8(lora[wb + i], dhid8(i));
    }
    d_part[tid] = acc;
    workgroupBarrier();
}

// The decay LoRA output of invocation tid's channel (tid < MAX_N; e is not needed here).
fn decay_delta(tid: u32, e: u32) -> f32 {
    return (d_part[tid] + d_part[MAX_N + tid]) + (d_part[2u * MAX_N + tid] + d_part[3u * MAX_N + tid]);
}
