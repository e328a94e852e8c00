// wkv_common.wgsl: helpers of the WKV recurrence kernels (time_mix_v5.wgsl, time_mix_v7.wgsl),
// prepended to them. They use what each kernel declares: p.plane, tm [planes, T, C] f32, state
// [B, H, N, N] f32, the staging array s_tok [planes, TB, N4] vec4 and the constants N_HEAD, TB, N4.
// An invocation owns groups of four state columns; columns past N read as zero and are not stored.
// The one-token kernels (`decode`, grid (H, B)) run a head in one workgroup of DEC_WG invocations:
// invocation tid owns quarter tid % 4 of state row tid / 4 (column groups q, q + 4, q + 8,
// q + 12) and sums head-wide values through d_red (red_parts, red_total).
// No dispatch of its own.

fn cols(j0: u32) -> vec4<u32> {
    return min(vec4<u32>(j0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(N_HEAD - 1u));
}

fn in_head(j0: u32) -> vec4<bool> {
    return vec4<u32>(j0) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(N_HEAD);
}

// Plane `pl` of tm, columns j0..j0+3 of the head whose column 0 is element i. Indices are clamped
// so that every load is in bounds without a branch (the loads issue together); zero beyond N.
fn tm4(pl: u32, i: u32, j0: u32) -> vec4<f32> {
    let j = cols(j0) + pl * p.plane + i;
    return select(vec4<f32>(0.0), vec4<f32>(tm[j.x], tm[j.y], tm[j.z], tm[j.w]), in_head(j0));
}

// Staged vector `pl`, token b of the block, column group g.
fn tok(pl: u32, b: u32, g: u32) -> vec4<f32> {
    return s_tok[(pl * TB + b) * N4 + g];
}

// The sum of a row's LANES = 8 partials, stored as two vec4s.
fn row_sum(a: vec4<f32>, b: vec4<f32>) -> f32 {
    return dot(a + b, vec4<f32>(1.0));
}

// Columns j0..j0+3 of the state row starting at element base (zero beyond N).
fn load_state(base: u32, j0: u32) -> vec4<f32> {
    let j = cols(j0) + base;
    return select(vec4<f32>(0.0), vec4<f32>(state[j.x], state[j.y], state[j.z], state[j.w]), in_head(j0));
}

fn store_state(base: u32, j0: u32, x: vec4<f32>) {
    if j0 + 3u < N_HEAD {
        state[base + j0] = x.x;
        state[base + j0 + 1u] = x.y;
        state[base + j0 + 2u] = x.z;
        state[base + j0 + 3u] = x.w;
    } else {
        for (var e = 0u; e < 4u; e++) {
            if j0 + e < N_HEAD { state[base + j0 + e] = x[e]; }
        }
    }
}

const DEC_WG: u32 = 256u;
var<workgroup> d_red: array<f32, 2u * 64u>;   // two head-wide sums (N <= 64) at a time
var<workgroup> d_part: array<f32, DEC_WG>;   // per-invocation partial row sums
var<workgroup> d_sums: array<f32, 8u>;

// After a barrier: invocations 0..7 add up d_red in 8 runs of 16 (runs 0-3: the first 64
// values, 4-7: the second); after another barrier red_total(0 or 1) reads either sum.
fn red_parts(tid: u32) {
    if tid < 8u {
        let per = 16u;
        var acc = 0.0;
        for (var e = 0u; e < per; e++) { acc += d_red[tid * per + e]; }
        d_sums[tid] = acc;
    }
}

fn red_total(which: u32) -> f32 {
    let b = which * 4u;
    return (d_sums[b] + d_sums[b + 1u]) + (d_sums[b + 2u] + d_sums[b + 3u]);
}

// The token of slot s, uniform over the workgroup (x: its index, y: 0 for an empty slot; the
// one-token kernels' slots hold at most one). Uses the kernel's `cursors` and `span`; every
// invocation calls it (it ends in a barrier).
fn slot_span(tid: u32, s: u32) -> vec2<u32> {
    if tid == 0u {
        span = vec2<u32>(cursors[2u * s], cursors[2u * s + 1u]);
    }
    return workgroupUniformLoad(&span);
}

// The sum of state row i's four partials in d_part (written by the row's four invocations).
fn row_total(i: u32) -> f32 {
    return (d_part[4u * i] + d_part[4u * i + 1u]) + (d_part[4u * i + 2u] + d_part[4u * i + 3u]);
}

// Group norm over the head of the values o of rows tid < n (the others pass anything): this
// row's o - mean and 1 / sqrt(variance + eps). After a barrier (d_part complete); every
// invocation calls it (barriers).
fn head_norm(tid: u32, o: f32, n: u32, eps: f32) -> vec2<f32> {
    let live = tid < n;
    if tid < 128u { d_red[tid] = select(0.0, o, live); }
    workgroupBarrier();
    red_parts(tid);
    workgroupBarrier();
    let mean = red_total(0u) / f32(n);
    let dv = select(0.0, o - mean, live);
    if tid < 64u { d_red[tid] = dv * dv; }
    workgroupBarrier();
    red_parts(tid);
    workgroupBarrier();
    return vec2<f32>(dv, inverseSqrt(red_total(0u) / f32(n) + eps));
}

// The state columns a one-token invocation owns: groups q, q + 4, q + 8, q + 12 of one row.
struct Quarter {
    a: vec4<f32>,
    b: vec4<f32>,
    c: vec4<f32>,
    d: vec4<f32>,
}

fn load_quarter(base: u32, q: u32) -> Quarter {
    return Quarter(load_state(base, 4u * q), load_state(base, 4u * (q + 4u)), load_state(base, 4u * (q + 8u)),
                   load_state(base, 4u * (q + 12u)));
}

fn store_quarter(base: u32, q: u32, x: Quarter) {
    store_state(base, 4u * q, x.a);
    store_state(base, 4u * (q + 4u), x.b);
    store_state(base, 4u * (q + 8u), x.c);
    store_state(base, 4u * (q + 12u), x.d);
}
