// x_reads.wgsl: reads of 8 consecutive input values for the matmul kernels (prepended after
// matmul_io.wgsl or matmul_group_io.wgsl, which declare x (and xv, x as vec4s) and give each
// kernel its row base).
// No dispatch of its own.

// x[b .. b + 8], the values at positions kb .. kb + 8 of a row of k values: zero past k.
fn x8_from(b: u32, kb: u32, k: u32) -> array<f32, 8> {
    var v: array<f32, 8>;
    if kb + 8u <= k {
        for (var e = 0u; e < 8u; e++) { v[e] = x[b + e]; }
    } else {
        for (var e = 0u; e < 8u; e++) { v[e] = select(0.0, x[b + e], kb + e < k); }
    }
    return v;
}

// The same values as two vec4 columns, without an array (CPU adapters keep arrays in memory).
fn x_span(b: u32, kb: u32, k: u32) -> mat2x4<f32> {
    var a = vec4<f32>(x[b], x[b + 1u], x[b + 2u], x[b + 3u]);
    var c = vec4<f32>(x[b + 4u], x[b + 5u], x[b + 6u], x[b + 7u]);
    if kb + 8u > k {
        let e = vec4<u32>(kb) + vec4<u32>(0u, 1u, 2u, 3u);
        a = select(vec4<f32>(0.0), a, e < vec4<u32>(k));
        c = select(vec4<f32>(0.0), c, e + vec4<u32>(4u) < vec4<u32>(k));
    }
    return mat2x4<f32>(a, c);
}

override VEC_X: bool = true;  // quantized one-token kernels: x8_fast reads x as two vec4s where it can

// x8_from with two 16-byte loads instead of eight where the values start on a 4-element boundary
// and lie inside the row and the xv binding. The quantized one-token kernels (quant_word.wgsl),
// which read half or a quarter of f16's bytes per x value, run 14-15% faster a step on the H100
// this way; the f16 ones ran slower (V7 step 2,330 -> 2,393 us) and keep x8_from.
fn x8_fast(b: u32, kb: u32, k: u32) -> array<f32, 8> {
    let q = b >> 2u;
    if VEC_X && (b & 3u) == 0u && kb + 8u <= k && q + 1u < arrayLength(&xv) {
        let a = xv[q];
        let c = xv[q + 1u];
        return array<f32, 8>(a.x, a.y, a.z, a.w, c.x, c.y, c.z, c.w);
    }
    return x8_from(b, kb, k);
}
