// weights_f16.wgsl: weight helper for matmul bodies shared with quantized weights (the kernel
// matmul_tiled = matmul_io + this + matmul_tiled.wgsl): weights8 unpacks f16 weights.
// Binding 2: w [R, KP/8] vec4<u32>, 8 f16 per vec4 (low half of each u32 first), rows padded
// to KP (a multiple of 8). No dispatch of its own.
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;

// The 8 weights of group i of row r: W[r, 8i .. 8i + 8].
fn weights8(r: u32, i: u32) -> array<f32, 8> {
    return f16x8(w[r * p.kv + i]);
}
