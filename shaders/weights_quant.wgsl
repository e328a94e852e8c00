// weights_quant.wgsl: weight helper for matmul_quant and matmul_quant_tiled (after quant_codebook.wgsl):
// weights8 decodes quantized weights (layouts in rwkv_webgpu/weights/quant.py), picked by QUANT:
//   0 int8: codes u8 [R, KP] (4 per u32), scales f32 [R, 2 * KP/128] = mins then steps,
//           w = min + code * step;  1 nf4 / 2 sf4: codes u4 [R, KP] (8 per u32, low nibble
//           first), scales f32 [R, KP/64] = absmax, w = codebook[code] * absmax.
// Bindings: codes u32 (binding 2), scales f32 (binding 5). No dispatch of its own.
@group(0) @binding(2) var<storage, read> codes: array<u32>;
@group(0) @binding(5) var<storage, read> scales: array<f32>;

// The 8 weights of group i of row r: W[r, 8i .. 8i + 8], dequantized.
fn weights8(r: u32, i: u32) -> array<f32, 8> {
    var w: array<f32, 8>;
    let kp = p.kv * 8u;
    if QUANT == 0u {
        let nb = kp / INT8_BLOCK;
        let blk = (i * 8u) / INT8_BLOCK;
        let lo = scales[r * 2u * nb + blk];
        let step = scales[r * 2u * nb + nb + blk] * 255.0;  // unorm gives code / 255
        let a = unpack4x8unorm(codes[r * (kp / 4u) + 2u * i]) * step + lo;
        let b = unpack4x8unorm(codes[r * (kp / 4u) + 2u * i + 1u]) * step + lo;
        w = array<f32, 8>(a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w);
    } else {
        let nb = kp / Q4_BLOCK;
        let amax = scales[r * nb + (i * 8u) / Q4_BLOCK];
        let q = codes[r * p.kv + i];
        for (var e = 0u; e < 8u; e++) { w[e] = code4((q >> (4u * e)) & 15u) * amax; }
    }
    return w;
}

// The same 8 weights as two vec4 columns, row r clamped to the last (tile16.wgsl; CPU adapters
// keep arrays in memory).
fn tile_w(row: u32, i: u32) -> mat2x4<f32> {
    let r = min(row, p.rows - 1u);
    let kp = p.kv * 8u;
    if QUANT == 0u {
        let nb = kp / INT8_BLOCK;
        let blk = (i * 8u) / INT8_BLOCK;
        let lo = scales[r * 2u * nb + blk];
        let step = scales[r * 2u * nb + nb + blk] * 255.0;
        return mat2x4<f32>(unpack4x8unorm(codes[r * (kp / 4u) + 2u * i]) * step + lo,
                           unpack4x8unorm(codes[r * (kp / 4u) + 2u * i + 1u]) * step + lo);
    }
    let amax = scales[r * (kp / Q4_BLOCK) + (i * 8u) / Q4_BLOCK];
    let q = codes[r * p.kv + i];
    let a = vec4<f32>(code4(q & 15u), code4((q >> 4u) & 15u), code4((q >> 8u) & 15u), code4((q >> 12u) & 15u));
    let b = vec4<f32>(code4((q >> 16u) & 15u), code4((q >> 20u) & 15u), code4((q >> 24u) & 15u), code4(q >> 28u));
    return mat2x4<f32>(a * amax, b * amax);
}
