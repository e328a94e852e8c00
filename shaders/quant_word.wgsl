// quant_word.wgsl: what the one-token quantized kernels (matmul_quant_subgroup, matmul_quant_group)
// share, after quant_codebook.wgsl and x_reads.wgsl: the 4-bit codebook in workgroup memory
// (indexing a private array costs a memory access per weight) and the sum over one 16-byte word of
// codes (16 int8 or 32 4-bit weights, inside one scale block), and a lane's share of a row. Uses
// the kernel's codes `w` (16-byte words), `scales`, LANES and UNROLL.

var<workgroup> book: array<f32, 16>;

// Fill `book` (every invocation of the workgroup calls this first).
fn load_book(li: u32) {
    if QUANT != 0u && li < 16u { book[li] = code4(li); }
    workgroupBarrier();
}

// Scales per row of a matrix with padded K = kp (int8: the mins, then the steps).
fn scales_per_row(kp: u32) -> u32 {
    return select(kp / Q4_BLOCK, 2u * (kp / INT8_BLOCK), QUANT == 0u);
}

// Words of codes per row.
fn words_per_row(kp: u32) -> u32 {
    return select(kp / 32u, kp / 16u, QUANT == 0u);
}

// sum over the weights of word `wi` (codes `c`) of a row whose scales start at `sb`, times the
// token's x values, which start at `xb` (a row of k values, padded to kp).
fn word_dot(c: vec4<u32>, sb: u32, wi: u32, xb: u32, k: u32, kp: u32) -> f32 {
    var s = 0.0;
    if QUANT == 0u {
        let nb = kp / INT8_BLOCK;
        let blk = (wi * 16u) / INT8_BLOCK;
        let lo = scales[sb + blk];
        let step = scales[sb + nb + blk] * 255.0;  // unorm gives code / 255
        for (var h = 0u; h < 2u; h++) {
            let kb = wi * 16u + h * 8u;
            let v = x8_fast(xb + kb, kb, k);
            let a = unpack4x8unorm(c[2u * h]) * step + lo;
            let b = unpack4x8unorm(c[2u * h + 1u]) * step + lo;
            s += dot(a, vec4<f32>(v[0], v[1], v[2], v[3])) + dot(b, vec4<f32>(v[4], v[5], v[6], v[7]));
        }
        return s;
    }
    let amax = scales[sb + (wi * 32u) / Q4_BLOCK];
    for (var h = 0u; h < 4u; h++) {
        let kb = wi * 32u + h * 8u;
        let v = x8_fast(xb + kb, kb, k);
        let q = c[h];
        for (var e = 0u; e < 8u; e++) { s += book[(q >> (4u * e)) & 15u] * v[e]; }
    }
    return s * amax;
}

// One lane's partial sum over the row's code words base .. base + words (every LANES-th from
// `lane`, UNROLL (1 or 2) of them loaded before use), its scales from sb, x values from xb.
fn lane_sum_quant(base: u32, words: u32, lane: u32, sb: u32, xb: u32, k: u32, kp: u32) -> f32 {
    var acc = 0.0;
    var i = lane;
    if UNROLL >= 2u {
        for (; i + LANES < words; i += 2u * LANES) {
            let c0 = w[base + i];
            let c1 = w[base + i + LANES];
            acc += word_dot(c0, sb, i, xb, k, kp);
            acc += word_dot(c1, sb, i + LANES, xb, k, kp);
        }
    }
    for (; i < words; i += LANES) {
        acc += word_dot(w[base + i], sb, i, xb, k, kp);
    }
    return acc;
}

// ---- `decode_rows` (4-bit codes only): RPL rows per lane sharing each word's 32 x values, the
// codes looked up a byte (two weights) at a time ----
override RPL: u32 = 2u;      // rows per lane: 1, 2 or 4 (dividing the 4 rows a group segment is padded to)
override BOOK2: bool = true; // one lookup per byte in `book2` (else two in `book`)

var<workgroup> book2: array<vec2<f32>, 256>;

// Fill `book` and `book2` (every invocation of a workgroup of `wgs` calls this first).
fn load_books(li: u32, wgs: u32) {
    if li < 16u { book[li] = code4(li); }
    if BOOK2 {
        for (var b = li; b < 256u; b += wgs) { book2[b] = vec2<f32>(code4(b & 15u), code4(b >> 4u)); }
    }
    workgroupBarrier();
}

// 16 x values: positions kb .. kb + 16 of a row of k values starting at b (zero past k).
struct X16 { a: vec4<f32>, b: vec4<f32>, c: vec4<f32>, d: vec4<f32> }

fn x4(b: u32, kb: u32, k: u32) -> vec4<f32> {
    if VEC_X && (b & 3u) == 0u && kb + 4u <= k { return xv[b >> 2u]; }
    if kb >= k { return vec4<f32>(0.0); }
    let v = vec4<f32>(x[b], x[b + 1u], x[b + 2u], x[b + 3u]);
    return select(vec4<f32>(0.0), v, vec4<u32>(kb) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(k));
}

fn x16(b: u32, kb: u32, k: u32) -> X16 {
    return X16(x4(b, kb, k), x4(b + 4u, kb + 4u, k), x4(b + 8u, kb + 8u, k), x4(b + 12u, kb + 12u, k));
}

// sum over the 8 codes of `q` (low nibble first) times the x values a, b (codebook units).
fn q4_dot(q: u32, a: vec4<f32>, b: vec4<f32>) -> f32 {
    if BOOK2 {
        let p0 = book2[q & 255u];
        let p1 = book2[(q >> 8u) & 255u];
        let p2 = book2[(q >> 16u) & 255u];
        let p3 = book2[q >> 24u];
        return dot(vec4<f32>(p0, p1), a) + dot(vec4<f32>(p2, p3), b);
    }
    let w0 = vec4<f32>(book[q & 15u], book[(q >> 4u) & 15u], book[(q >> 8u) & 15u], book[(q >> 12u) & 15u]);
    let w1 = vec4<f32>(book[(q >> 16u) & 15u], book[(q >> 20u) & 15u], book[(q >> 24u) & 15u], book[q >> 28u]);
    return dot(w0, a) + dot(w1, b);
}

// One row's sum over a word (32 weights of one absmax block) with the word's x values lo, hi.
fn q4_word(c: vec4<u32>, lo: X16, hi: X16, amax: f32) -> f32 {
    return amax * (q4_dot(c.x, lo.a, lo.b) + q4_dot(c.y, lo.c, lo.d) + q4_dot(c.z, hi.a, hi.b) + q4_dot(c.w, hi.c, hi.d));
}

// Word i of RPL rows (codes c0 .. c3; row j's scales from sb[j]) times the token's x values from
// xb: the rows' sums as a vec4 (rows past RPL: 0).
fn rows_word(c0: vec4<u32>, c1: vec4<u32>, c2: vec4<u32>, c3: vec4<u32>, i: u32, sb: vec4<u32>, xb: u32, k: u32) -> vec4<f32> {
    let kb = i * 32u;
    let lo = x16(xb + kb, kb, k);
    let hi = x16(xb + kb + 16u, kb + 16u, k);
    let blk = sb + vec4<u32>(kb / Q4_BLOCK);
    var s = vec4<f32>(0.0);
    s.x = q4_word(c0, lo, hi, scales[blk.x]);
    if RPL > 1u { s.y = q4_word(c1, lo, hi, scales[blk.y]); }
    if RPL > 2u {
        s.z = q4_word(c2, lo, hi, scales[blk.z]);
        s.w = q4_word(c3, lo, hi, scales[blk.w]);
    }
    return s;
}

// One lane's partial sums of RPL rows (row j's codes from base + j words, scales from sb + j spr;
// `live` of them exist, at least 1) over the words every LANES-th from `lane`, each row's word
// loaded before the sums (RPL words in flight; two per row measured no faster on the H100).
fn rows_sum_quant(base: u32, sb: u32, words: u32, spr: u32, live: u32, lane: u32, xb: u32, k: u32) -> vec4<f32> {
    var acc = vec4<f32>(0.0);
    // rows past RPL or past the matrix read the last of the lane's rows again, never past the
    // bindings (the compiler drops the loads of rows past RPL with their uses; the caller drops
    // the sums of rows past the matrix)
    let j = min(vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(min(RPL, live) - 1u));
    let at = vec4<u32>(base) + j * words;
    let sbs = vec4<u32>(sb) + j * spr;
    for (var i = lane; i < words; i += LANES) {
        acc += rows_word(w[at.x + i], w[at.y + i], w[at.z + i], w[at.w + i], i, sbs, xb, k);
    }
    return acc;
}
