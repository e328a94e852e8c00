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
