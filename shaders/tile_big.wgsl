// tile_big.wgsl: the 128-row x 128-token GEMM tile (prepended to matmul_tiled.wgsl and
// matmul_group_tiled.wgsl). 16-wide K slices of W and x are staged in workgroup memory (16 KiB)
// as vec4s of four rows / four tokens; each of the 16 x 16 invocations sums an 8 x 8 block (rows
// 4ty.. and 64 + 4ty.., tokens 4tx.. and 64 + 4tx..) in named registers (drivers may spill
// indexed arrays to memory), reading the next slice into registers while this one is summed.
// The including kernel says where a tile's matrix lives through a TileSrc value and
//   tile_rows(s), tile_w8(s, r, i) (W[r, 8i .. 8i + 8]), tile_x8(s, t, kb) (x[t, kb .. kb + 8],
//   zero past K), tile_store(s, t, r, v) (write act(v) as y[t, r], for rows/tokens in range).
// No dispatch of its own.
const BT: u32 = 128u;  // rows and tokens per workgroup
const BK: u32 = 16u;   // K slice staged per iteration
const BQ: u32 = 32u;   // BT / 4

var<workgroup> wb: array<vec4<f32>, 512>;   // [BK][BQ]: four consecutive rows
var<workgroup> xb: array<vec4<f32>, 512>;   // [BK][BQ]: four consecutive tokens

// Which 4-row x 4-token slots of a 16 x 16 grid of blocks invocation `tid` of a 256-invocation
// tile workgroup sums (as a local_invocation_id: x the tokens, y the rows). WARP_BLOCKS: each
// 32 invocations cover 8 x 4 blocks, so a vec4 read of the staged tiles touches at most 8
// distinct slots (128 bytes: one transaction on 32-wide hardware) instead of 16; else row-major
// (x = tid % 16). The same sums either way, only spread differently over the invocations.
override WARP_BLOCKS: bool = true;

fn lane_block(tid: u32) -> vec3<u32> {
    if !WARP_BLOCKS {
        return vec3<u32>(tid % 16u, tid / 16u, 0u);
    }
    let lane = tid % 32u;
    let warp = tid / 32u;
    return vec3<u32>((warp % 2u) * 8u + lane % 8u, (warp / 2u) * 4u + lane / 8u, 0u);
}

// 8 values along K from index kb: W[r, kb ..] or x[t, kb ..], zero outside the matrix / the step.
struct Eight { lo: vec4<f32>, hi: vec4<f32> }

fn stage_w(s: TileSrc, r: u32, kb: u32, kp: u32) -> Eight {
    if r >= tile_rows(s) || kb >= kp {
        return Eight(vec4<f32>(0.0), vec4<f32>(0.0));
    }
    let v = tile_w8(s, r, kb / 8u);
    return Eight(vec4<f32>(v[0], v[1], v[2], v[3]), vec4<f32>(v[4], v[5], v[6], v[7]));
}

fn stage_x(s: TileSrc, t: u32, kb: u32, kp: u32) -> Eight {
    if t >= count.n || kb >= kp {
        return Eight(vec4<f32>(0.0), vec4<f32>(0.0));
    }
    let v = tile_x8(s, t, kb);
    return Eight(vec4<f32>(v[0], v[1], v[2], v[3]), vec4<f32>(v[4], v[5], v[6], v[7]));
}

// Stage 8 K values of a weight row (into wb) and of a token (into xb) as component c (0..3) of
// slot q in K rows k .. k + 7 of the [BK][BQ] workgroup arrays.
// (spelled out: a loop over e measured ~8% slower for the whole kernel on the H100)
fn put_w8(k: u32, q: u32, c: u32, w: Eight) {
    wb[k * BQ + q][c] = w.lo.x;
    wb[(k + 1u) * BQ + q][c] = w.lo.y;
    wb[(k + 2u) * BQ + q][c] = w.lo.z;
    wb[(k + 3u) * BQ + q][c] = w.lo.w;
    wb[(k + 4u) * BQ + q][c] = w.hi.x;
    wb[(k + 5u) * BQ + q][c] = w.hi.y;
    wb[(k + 6u) * BQ + q][c] = w.hi.z;
    wb[(k + 7u) * BQ + q][c] = w.hi.w;
}

fn put8(k: u32, q: u32, c: u32, w: Eight, t: Eight) {
    put_w8(k, q, c, w);
    xb[k * BQ + q][c] = t.lo.x;
    xb[(k + 1u) * BQ + q][c] = t.lo.y;
    xb[(k + 2u) * BQ + q][c] = t.lo.z;
    xb[(k + 3u) * BQ + q][c] = t.lo.w;
    xb[(k + 4u) * BQ + q][c] = t.hi.x;
    xb[(k + 5u) * BQ + q][c] = t.hi.y;
    xb[(k + 6u) * BQ + q][c] = t.hi.z;
    xb[(k + 7u) * BQ + q][c] = t.hi.w;
}

// c<i><h>: rows 4ty + i (i < 4) or 64 + 4ty + i - 4, tokens 4tx + 64h .. + 3
struct Big {
    c00: vec4<f32>, c01: vec4<f32>, c10: vec4<f32>, c11: vec4<f32>,
    c20: vec4<f32>, c21: vec4<f32>, c30: vec4<f32>, c31: vec4<f32>,
    c40: vec4<f32>, c41: vec4<f32>, c50: vec4<f32>, c51: vec4<f32>,
    c60: vec4<f32>, c61: vec4<f32>, c70: vec4<f32>, c71: vec4<f32>,
}

// The 8 x 8 block of invocation (lid.x, lid.y) in the tile at rows r0.., tokens t0.., summed in
// order over K in [kb0, kb1) (kb0 a multiple of BK; kb1 at most the padded K, 8 * kv).
fn big_tile(s: TileSrc, lid: vec3<u32>, tid: u32, r0: u32, t0: u32, kb0: u32, kb1: u32) -> Big {
    // staging: invocation tid brings 8 consecutive K values of row (and token) tid / 2
    let l = tid / 2u;
    let lk = (tid % 2u) * 8u;
    var c00 = vec4<f32>(0.0); var c01 = vec4<f32>(0.0); var c10 = vec4<f32>(0.0); var c11 = vec4<f32>(0.0);
    var c20 = vec4<f32>(0.0); var c21 = vec4<f32>(0.0); var c30 = vec4<f32>(0.0); var c31 = vec4<f32>(0.0);
    var c40 = vec4<f32>(0.0); var c41 = vec4<f32>(0.0); var c50 = vec4<f32>(0.0); var c51 = vec4<f32>(0.0);
    var c60 = vec4<f32>(0.0); var c61 = vec4<f32>(0.0); var c70 = vec4<f32>(0.0); var c71 = vec4<f32>(0.0);
    var wv = stage_w(s, r0 + l, kb0 + lk, kb1);
    var xv = stage_x(s, t0 + l, kb0 + lk, kb1);
    for (var k0 = kb0; k0 < kb1; k0 += BK) {
        put8(lk, l / 4u, l % 4u, wv, xv);
        workgroupBarrier();
        if k0 + BK < kb1 {
            wv = stage_w(s, r0 + l, k0 + BK + lk, kb1);
            xv = stage_x(s, t0 + l, k0 + BK + lk, kb1);
        }
        for (var kk = 0u; kk < BK; kk++) {
            let a0 = wb[kk * BQ + lid.y];
            let a1 = wb[kk * BQ + 16u + lid.y];
            let b0 = xb[kk * BQ + lid.x];
            let b1 = xb[kk * BQ + 16u + lid.x];
            c00 += a0.x * b0; c01 += a0.x * b1;
            c10 += a0.y * b0; c11 += a0.y * b1;
            c20 += a0.z * b0; c21 += a0.z * b1;
            c30 += a0.w * b0; c31 += a0.w * b1;
            c40 += a1.x * b0; c41 += a1.x * b1;
            c50 += a1.y * b0; c51 += a1.y * b1;
            c60 += a1.z * b0; c61 += a1.z * b1;
            c70 += a1.w * b0; c71 += a1.w * b1;
        }
        workgroupBarrier();
    }
    return Big(c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51, c60, c61, c70, c71);
}

// Four tokens from tb of row r.
fn store4(s: TileSrc, tb: u32, r: u32, v: vec4<f32>) {
    tile_store(s, tb, r, v.x);
    tile_store(s, tb + 1u, r, v.y);
    tile_store(s, tb + 2u, r, v.z);
    tile_store(s, tb + 3u, r, v.w);
}

// Write the block `big_tile` returned for the tile at rows r0.., tokens t0...
fn store_big(s: TileSrc, c: Big, lid: vec3<u32>, r0: u32, t0: u32) {
    let ra = r0 + lid.y * 4u;
    let rb = ra + 64u;
    let ta = t0 + lid.x * 4u;
    let tb = ta + 64u;
    store4(s, ta, ra, c.c00); store4(s, tb, ra, c.c01);
    store4(s, ta, ra + 1u, c.c10); store4(s, tb, ra + 1u, c.c11);
    store4(s, ta, ra + 2u, c.c20); store4(s, tb, ra + 2u, c.c21);
    store4(s, ta, ra + 3u, c.c30); store4(s, tb, ra + 3u, c.c31);
    store4(s, ta, rb, c.c40); store4(s, tb, rb, c.c41);
    store4(s, ta, rb + 1u, c.c50); store4(s, tb, rb + 1u, c.c51);
    store4(s, ta, rb + 2u, c.c60); store4(s, tb, rb + 2u, c.c61);
    store4(s, ta, rb + 3u, c.c70); store4(s, tb, rb + 3u, c.c71);
}
