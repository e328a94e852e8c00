// matmul_tiled.wgsl: y[t, row0 + r] (+)= act(sum_k W[r, k] x[t, k]) tiled for prompts: a workgroup
// computes a 64-row x 64-token tile, staging 32-wide K slices of W (from weights8) and x in
// workgroup memory as vec4s of four rows / four tokens; each of its 16 x 16 invocations sums a
// 4 x 4 block in f32. Built twice: matmul_tiled (weights_f16.wgsl: w [R, KP/8] vec4<u32>) and
// matmul_quant_tiled (weights_quant.wgsl: codes, scales); x [T, K] f32, y [T, y_stride] f32.
// Grid: (ceil(R / 64), ceil(T / 64)).
const TILE: u32 = 64u;   // rows and tokens per workgroup
const TK: u32 = 32u;     // K slice staged per iteration
const Q: u32 = 16u;      // TILE / 4: vec4 groups per K step

var<workgroup> ws: array<vec4<f32>, 512>;   // [TK][Q]: four consecutive rows
var<workgroup> xs: array<vec4<f32>, 512>;   // [TK][Q]: four consecutive tokens

// The 4 x 4 block of invocation (lid.x, lid.y) of the 64 x 64 tile at rows r0.., tokens t0..,
// summed over K in [kb0, kb1) (multiples of TK, or kb1 = KP): acc[i][j] = row 4ly + i, token 4lx + j.
struct Block { a0: vec4<f32>, a1: vec4<f32>, a2: vec4<f32>, a3: vec4<f32> }

fn tile64(lid: vec3<u32>, tid: u32, r0: u32, t0: u32, kb0: u32, kb1: u32) -> Block {
    let n = count.n;
    // staging: invocation tid brings 8 consecutive K values of row (and token) tid / 4
    let l = tid / 4u;
    let lk = (tid % 4u) * 8u;
    let lq = l / 4u;
    let lc = l % 4u;
    let kp = p.kv * 8u;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var k0 = kb0; k0 < kb1; k0 += TK) {
        let kb = k0 + lk;
        var wv: array<f32, 8>;
        if r0 + l < p.rows && kb < kb1 {
            wv = weights8(r0 + l, kb / 8u);
        }
        let t = t0 + l;
        let xb = p.x_off + t * p.x_stride + kb;
        for (var e = 0u; e < 8u; e++) {
            ws[(lk + e) * Q + lq][lc] = wv[e];
            var v = 0.0;
            if t < n && kb + e < p.k && kb < kb1 {
                v = x[xb + e];
            }
            xs[(lk + e) * Q + lq][lc] = v;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            let a = ws[kk * Q + lid.y];
            let b = xs[kk * Q + lid.x];
            acc0 += a.x * b;
            acc1 += a.y * b;
            acc2 += a.z * b;
            acc3 += a.w * b;
        }
        workgroupBarrier();
    }
    return Block(acc0, acc1, acc2, acc3);
}

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let lid = lane_block(tid);
    let acc = tile64(lid, tid, wid.x * TILE, wid.y * TILE, 0u, p.kv * 8u);
    let r = wid.x * TILE + lid.y * 4u;
    let tb = wid.y * TILE + lid.x * 4u;
    for (var j = 0u; j < 4u; j++) {
        store_out(tb + j, r, acc.a0[j]);
        store_out(tb + j, r + 1u, acc.a1[j]);
        store_out(tb + j, r + 2u, acc.a2[j]);
        store_out(tb + j, r + 3u, acc.a3[j]);
    }
}

// `split`: the 64 x 64 tiles with K cut in SPLIT parts (grid z), for steps with too few tiles to
// fill the GPU: part z writes its raw sums to y as partials [SPLIT, T, R] (y_off, y_stride, act
// and accumulate unused) and `reduce` adds them up. Grid: (ceil(R / 64), ceil(T / 64), SPLIT).
override SPLIT: u32 = 4u;

@compute @workgroup_size(16, 16)
fn split(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let lid = lane_block(tid);
    let kp = p.kv * 8u;
    let part = (kp + SPLIT * TK - 1u) / (SPLIT * TK) * TK;  // K per part, a multiple of TK
    let kb0 = min(wid.z * part, kp);
    let acc = tile64(lid, tid, wid.x * TILE, wid.y * TILE, kb0, min(kb0 + part, kp));
    let r = wid.x * TILE + lid.y * 4u;
    let tb = wid.y * TILE + lid.x * 4u;
    for (var j = 0u; j < 4u; j++) {
        store_part(wid.z, tb + j, r, acc.a0[j]);
        store_part(wid.z, tb + j, r + 1u, acc.a1[j]);
        store_part(wid.z, tb + j, r + 2u, acc.a2[j]);
        store_part(wid.z, tb + j, r + 3u, acc.a3[j]);
    }
}

// The raw sum of K part z for token t and row r, as partial [z, t, r] of y (rows p.rows).
fn store_part(z: u32, t: u32, r: u32, v: f32) {
    let n = count.n;
    if t < n && r < p.rows {
        y[(z * n + t) * p.rows + r] = v;
    }
}

// `reduce`: y[t, row0 + r] (+)= act(sum_z partial[z, t, r]), the partials of `split` bound as x.
// Grid: (ceil(R / 64), T).
@compute @workgroup_size(64)
fn reduce(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r = gid.x;
    let t = gid.y;
    let n = count.n;
    if r >= p.rows || t >= n { return; }
    var s = 0.0;
    for (var z = 0u; z < SPLIT; z++) {
        s += x[(z * n + t) * p.rows + r];
    }
    store_out(t, r, s);
}

// `big`: the same product in 128-row x 128-token tiles for large prompts (tile_big.wgsl).
// Grid: (ceil(R / 128), ceil(T / 128)). `big_split`: the same tiles with K cut in SPLIT parts
// (grid z), for products with too few tiles to keep two workgroups on every SM: part z writes
// its raw sums as partials [SPLIT, T, R] for `reduce`. Grid: (ceil(R / 128), ceil(T / 128), SPLIT).
const WHOLE: u32 = 0xffffffffu;
struct TileSrc { part: u32 }  // tile_big.wgsl's view of this dispatch: p's matrix, stored whole or as a part

fn tile_rows(s: TileSrc) -> u32 { return p.rows; }
fn tile_w8(s: TileSrc, r: u32, i: u32) -> array<f32, 8> { return weights8(r, i); }
fn tile_x8(s: TileSrc, t: u32, kb: u32) -> array<f32, 8> { return x8(t, kb); }
fn tile_store(s: TileSrc, t: u32, r: u32, v: f32) {
    if s.part == WHOLE {
        store_out(t, r, v);
    } else {
        store_part(s.part, t, r, v);
    }
}

@compute @workgroup_size(16, 16)
fn big(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let lid = lane_block(tid);
    let s = TileSrc(WHOLE);
    let c = big_tile(s, lid, tid, wid.x * BT, wid.y * BT, 0u, p.kv * 8u);
    store_big(s, c, lid, wid.x * BT, wid.y * BT);
}

@compute @workgroup_size(16, 16)
fn big_split(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let lid = lane_block(tid);
    let kp = p.kv * 8u;
    let part = (kp + SPLIT * BK - 1u) / (SPLIT * BK) * BK;  // K per part, a multiple of BK
    let kb0 = min(wid.z * part, kp);
    let s = TileSrc(wid.z);
    let c = big_tile(s, lid, tid, wid.x * BT, wid.y * BT, kb0, min(kb0 + part, kp));
    store_big(s, c, lid, wid.x * BT, wid.y * BT);
}

// `tall`: 128-row x 64-token tiles for batched steps (each invocation 8 rows x 4 tokens: rows
// 4ty.. and 64 + 4ty.., tokens 4tx..), 16-wide K slices in tile_big.wgsl's arrays, K cut in SPLIT
// parts (grid z) whose raw sums go to y as partials [SPLIT, T, R] for `reduce`; SPLIT = 1 writes
// y directly. Grid: (ceil(R / 128), ceil(T / 64), SPLIT).
const TQ: u32 = 16u;  // 64 tokens / 4

// x[t, kb .. kb + 4], zero past K or the step.
fn stage_x4(t: u32, kb: u32, n: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    if t < n {
        let base = p.x_off + t * p.x_stride + kb;
        for (var e = 0u; e < 4u; e++) {
            if kb + e < p.k { v[e] = x[base + e]; }
        }
    }
    return v;
}

fn put_tall(lw: u32, kw: u32, w: Eight, lt: u32, kt: u32, t: vec4<f32>) {
    put_w8(kw, lw / 4u, lw % 4u, w);
    xb[kt * TQ + lt / 4u][lt % 4u] = t.x;
    xb[(kt + 1u) * TQ + lt / 4u][lt % 4u] = t.y;
    xb[(kt + 2u) * TQ + lt / 4u][lt % 4u] = t.z;
    xb[(kt + 3u) * TQ + lt / 4u][lt % 4u] = t.w;
}

// Row r's 4 tokens from tb: to y (SPLIT = 1) or as partials of part z.
fn store_tall(z: u32, tb: u32, r: u32, v: vec4<f32>) {
    if SPLIT == 1u {
        store4(TileSrc(WHOLE), tb, r, v);
    } else {
        store_part(z, tb, r, v.x);
        store_part(z, tb + 1u, r, v.y);
        store_part(z, tb + 2u, r, v.z);
        store_part(z, tb + 3u, r, v.w);
    }
}

@compute @workgroup_size(16, 16)
fn tall(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let lid = lane_block(tid);
    let n = count.n;
    let r0 = wid.x * BT;
    let t0 = wid.y * 64u;
    let kp = p.kv * 8u;
    let part = (kp + SPLIT * BK - 1u) / (SPLIT * BK) * BK;  // K per part, a multiple of BK
    let kb0 = min(wid.z * part, kp);
    let kb1 = min(kb0 + part, kp);
    // staging: weights as in `big` (row tid / 2, 8 values), tokens tid / 4 with 4 values each
    let lw = tid / 2u;
    let kw = (tid % 2u) * 8u;
    let lt = tid / 4u;
    let kt = (tid % 4u) * 4u;
    var c0 = vec4<f32>(0.0); var c1 = vec4<f32>(0.0); var c2 = vec4<f32>(0.0); var c3 = vec4<f32>(0.0);
    var c4 = vec4<f32>(0.0); var c5 = vec4<f32>(0.0); var c6 = vec4<f32>(0.0); var c7 = vec4<f32>(0.0);
    var wv = stage_w(TileSrc(WHOLE), r0 + lw, kb0 + kw, kb1);
    var xv = stage_x4(t0 + lt, kb0 + kt, select(0u, n, kb0 + kt < kb1));
    for (var k0 = kb0; k0 < kb1; k0 += BK) {
        put_tall(lw, kw, wv, lt, kt, xv);
        workgroupBarrier();
        if k0 + BK < kb1 {
            wv = stage_w(TileSrc(WHOLE), r0 + lw, k0 + BK + kw, kb1);
            xv = stage_x4(t0 + lt, k0 + BK + kt, select(0u, n, k0 + BK + kt < kb1));
        }
        for (var kk = 0u; kk < BK; kk++) {
            let a0 = wb[kk * BQ + lid.y];
            let a1 = wb[kk * BQ + 16u + lid.y];
            let b = xb[kk * TQ + lid.x];
            c0 += a0.x * b;
            c1 += a0.y * b;
            c2 += a0.z * b;
            c3 += a0.w * b;
            c4 += a1.x * b;
            c5 += a1.y * b;
            c6 += a1.z * b;
            c7 += a1.w * b;
        }
        workgroupBarrier();
    }
    let ra = r0 + lid.y * 4u;
    let rb = ra + 64u;
    let tb = t0 + lid.x * 4u;
    store_tall(wid.z, tb, ra, c0);
    store_tall(wid.z, tb, ra + 1u, c1);
    store_tall(wid.z, tb, ra + 2u, c2);
    store_tall(wid.z, tb, ra + 3u, c3);
    store_tall(wid.z, tb, rb, c4);
    store_tall(wid.z, tb, rb + 1u, c5);
    store_tall(wid.z, tb, rb + 2u, c6);
    store_tall(wid.z, tb, rb + 3u, c7);
}
