// quant_codebook.wgsl: what the quantized matmul kernels share (prepended by the shader loader):
// the QUANT override (0 int8, 1 nf4, 2 sf4), the block sizes of weights/quant.py and the 4-bit
// codebooks. No dispatch of its own.
override QUANT: u32 = 0u;
const INT8_BLOCK: u32 = 128u;  // weights per min/step pair for int8 (weights/quant.py)
const Q4_BLOCK: u32 = 64u;     // weights per absmax for nf4/sf4 (weights/quant.py)

var<private> NF4: array<f32, 16> = array<f32, 16>(
    -1.0, -0.6961928, -0.52507305, -0.39491749, -0.28444138, -0.18477343, -0.09105004, 0.0,
    0.0795803, 0.1609302, 0.2461123, 0.33791524, 0.44070983, 0.562617, 0.72295684, 1.0);
var<private> SF4: array<f32, 16> = array<f32, 16>(
    0.0, 0.083333336, 0.16666667, 0.25, 0.33333334, 0.5, 0.6666667, 1.0,
    -0.0, -0.083333336, -0.16666667, -0.25, -0.33333334, -0.5, -0.6666667, -1.0);

fn code4(c: u32) -> f32 {
    if QUANT == 1u { return NF4[c]; }
    return SF4[c];
}
