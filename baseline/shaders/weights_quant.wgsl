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
