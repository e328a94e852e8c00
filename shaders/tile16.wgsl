// tile16.wgsl: the `tile16` entry of matmul.wgsl (f16 weights) and matmul_quant.wgsl (quantized),
// after matmul_io.wgsl and x_reads.wgsl; the kernel defines tile_w(r, i), the 8 weights of group
// i of row r as two vec4 columns (rows past the end: the last row's).
// `tile16`: 16 rows x 16 tokens per invocation, the 256 sums in sixteen 4 x 4 blocks (CPU
// adapters' prompt steps: each group of 8 weights is loaded once for 16 tokens and each group of
// 8 x values once for 16 rows; on lavapipe about twice as fast as tile8 from 16 tokens). With f16
// weights every sum as `rowwise` (same products, same order). Grid: (ceil(R / (16 WG)),
// ceil(T / 16)) with a workgroup of WG x 1.

// The sum over 8 weights (two vec4 columns) times 8 x values (the same), as dot8v sums them.
fn dot8w(a: mat2x4<f32>, v: mat2x4<f32>) -> f32 { return dot(a[0], v[0]) + dot(a[1], v[1]); }

// dot8w of four rows' weights (rows r..r+3) with four x spans (tokens t..t+3): column c of the
// block is token t + c, component j row r + j.
fn block4(q0: mat2x4<f32>, q1: mat2x4<f32>, q2: mat2x4<f32>, q3: mat2x4<f32>,
          x0: mat2x4<f32>, x1: mat2x4<f32>, x2: mat2x4<f32>, x3: mat2x4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(vec4<f32>(dot8w(q0, x0), dot8w(q1, x0), dot8w(q2, x0), dot8w(q3, x0)),
                       vec4<f32>(dot8w(q0, x1), dot8w(q1, x1), dot8w(q2, x1), dot8w(q3, x1)),
                       vec4<f32>(dot8w(q0, x2), dot8w(q1, x2), dot8w(q2, x2), dot8w(q3, x2)),
                       vec4<f32>(dot8w(q0, x3), dot8w(q1, x3), dot8w(q2, x3), dot8w(q3, x3)));
}

// Store a block4 sum for tokens t.. and rows r.. (those in range).
fn store_block4(t: u32, r: u32, m: mat4x4<f32>) {
    for (var c = 0u; c < 4u; c++) {
        store_out(t + c, r, m[c].x);
        store_out(t + c, r + 1u, m[c].y);
        store_out(t + c, r + 2u, m[c].z);
        store_out(t + c, r + 3u, m[c].w);
    }
}

// The x span of token t at kb; tokens past the end read the last one (their sums are not stored).
fn x_clamped(t: u32, kb: u32) -> mat2x4<f32> { return x_at(min(t, count.n - 1u), kb); }

@compute @workgroup_size(WG)
fn tile16(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r0 = gid.x * 16u;
    let t0 = gid.y * 16u;
    if r0 >= p.rows || t0 >= count.n { return; }
    // a<i><j>: rows r0 + 4i .., tokens t0 + 4j ..
    var a00 = mat4x4<f32>(); var a01 = mat4x4<f32>(); var a02 = mat4x4<f32>(); var a03 = mat4x4<f32>();
    var a10 = mat4x4<f32>(); var a11 = mat4x4<f32>(); var a12 = mat4x4<f32>(); var a13 = mat4x4<f32>();
    var a20 = mat4x4<f32>(); var a21 = mat4x4<f32>(); var a22 = mat4x4<f32>(); var a23 = mat4x4<f32>();
    var a30 = mat4x4<f32>(); var a31 = mat4x4<f32>(); var a32 = mat4x4<f32>(); var a33 = mat4x4<f32>();
    for (var i = 0u; i < p.kv; i++) {
        let kb = i * 8u;
        let q0 = tile_w(r0, i); let q1 = tile_w(r0 + 1u, i); let q2 = tile_w(r0 + 2u, i); let q3 = tile_w(r0 + 3u, i);
        let q4 = tile_w(r0 + 4u, i); let q5 = tile_w(r0 + 5u, i); let q6 = tile_w(r0 + 6u, i); let q7 = tile_w(r0 + 7u, i);
        let q8 = tile_w(r0 + 8u, i); let q9 = tile_w(r0 + 9u, i); let q10 = tile_w(r0 + 10u, i); let q11 = tile_w(r0 + 11u, i);
        let q12 = tile_w(r0 + 12u, i); let q13 = tile_w(r0 + 13u, i); let q14 = tile_w(r0 + 14u, i); let q15 = tile_w(r0 + 15u, i);
        let x0 = x_clamped(t0, kb); let x1 = x_clamped(t0 + 1u, kb); let x2 = x_clamped(t0 + 2u, kb); let x3 = x_clamped(t0 + 3u, kb);
        let x4 = x_clamped(t0 + 4u, kb); let x5 = x_clamped(t0 + 5u, kb); let x6 = x_clamped(t0 + 6u, kb); let x7 = x_clamped(t0 + 7u, kb);
        let x8 = x_clamped(t0 + 8u, kb); let x9 = x_clamped(t0 + 9u, kb); let x10 = x_clamped(t0 + 10u, kb); let x11 = x_clamped(t0 + 11u, kb);
        let x12 = x_clamped(t0 + 12u, kb); let x13 = x_clamped(t0 + 13u, kb); let x14 = x_clamped(t0 + 14u, kb); let x15 = x_clamped(t0 + 15u, kb);
        a00 += block4(q0, q1, q2, q3, x0, x1, x2, x3); a01 += block4(q0, q1, q2, q3, x4, x5, x6, x7);
        a02 += block4(q0, q1, q2, q3, x8, x9, x10, x11); a03 += block4(q0, q1, q2, q3, x12, x13, x14, x15);
        a10 += block4(q4, q5, q6, q7, x0, x1, x2, x3); a11 += block4(q4, q5, q6, q7, x4, x5, x6, x7);
        a12 += block4(q4, q5, q6, q7, x8, x9, x10, x11); a13 += block4(q4, q5, q6, q7, x12, x13, x14, x15);
        a20 += block4(q8, q9, q10, q11, x0, x1, x2, x3); a21 += block4(q8, q9, q10, q11, x4, x5, x6, x7);
        a22 += block4(q8, q9, q10, q11, x8, x9, x10, x11); a23 += block4(q8, q9, q10, q11, x12, x13, x14, x15);
        a30 += block4(q12, q13, q14, q15, x0, x1, x2, x3); a31 += block4(q12, q13, q14, q15, x4, x5, x6, x7);
        a32 += block4(q12, q13, q14, q15, x8, x9, x10, x11); a33 += block4(q12, q13, q14, q15, x12, x13, x14, x15);
    }
    store_block4(t0, r0, a00); store_block4(t0 + 4u, r0, a01); store_block4(t0 + 8u, r0, a02); store_block4(t0 + 12u, r0, a03);
    store_block4(t0, r0 + 4u, a10); store_block4(t0 + 4u, r0 + 4u, a11); store_block4(t0 + 8u, r0 + 4u, a12); store_block4(t0 + 12u, r0 + 4u, a13);
    store_block4(t0, r0 + 8u, a20); store_block4(t0 + 4u, r0 + 8u, a21); store_block4(t0 + 8u, r0 + 8u, a22); store_block4(t0 + 12u, r0 + 8u, a23);
    store_block4(t0, r0 + 12u, a30); store_block4(t0 + 4u, r0 + 12u, a31); store_block4(t0 + 8u, r0 + 12u, a32); store_block4(t0 + 12u, r0 + 12u, a33);
}
