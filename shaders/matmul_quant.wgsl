// matmul_quant.wgsl: y[t, row0 + r] (+)= act(sum_k W[r, k] x[t, k]) with W quantized:
//   QUANT 0 (int8): codes u8 [R, KP] (4 per u32), scales f32 [R, 2 * KP/128] = mins then steps,
//                   w = min + code * step;
//   QUANT 1 (nf4) / 2 (sf4): codes u4 [R, KP] (8 per u32, low nibble first), scales f32
//                   [R, KP/64] = absmax, w = codebook[code] * absmax.
// Bindings: codes u32, x [T, K] f32 (x_off, x_stride), y [T, y_stride] f32 (y_off), scales f32.
// Grid: (ceil(R / ROWS), ceil(T / 4)); WG lanes share a row (8 weights per lane per step) and
// reduce in workgroup memory, as matmul.wgsl.
@group(0) @binding(2) var<storage, read> codes: array<u32>;
@group(0) @binding(5) var<storage, read> scales: array<f32>;

override WG: u32 = 64u;
override ROWS: u32 = 4u;
override QUANT: u32 = 0u;
const TOK: u32 = 4u;
const Q4_BLOCK: u32 = 64u;  // weights per scale for nf4/sf4 (weights/quant.py)

var<workgroup> partial: array<vec4<f32>, WG * ROWS>;
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

// The 8 weights of group i of row r, dequantized.
fn weights8(r: u32, i: u32) -> array<f32, 8> {
    var w: array<f32, 8>;
    let kp = p.kv * 8u;
    if QUANT == 0u {
        let nb = kp / 128u;
        let blk = (i * 8u) / 128u;
        let lo = scales[r * 2u * nb + blk];
        let step = scales[r * 2u * nb + nb + blk] * 255.0;
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

@compute @workgroup_size(WG, ROWS)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let r = wid.x * ROWS + lid.y;
    let t0 = wid.y * TOK;
    let n = count.n;
    var acc = vec4<f32>(0.0);
    if r < p.rows {
        for (var i = lid.x; i < p.kv; i += WG) {
            let w = weights8(r, i);
            for (var j = 0u; j < TOK; j++) {
                if t0 + j < n {
                    let v = x8(t0 + j, i * 8u);
                    var s = 0.0;
                    for (var e = 0u; e < 8u; e++) { s += w[e] * v[e]; }
                    acc[j] += s;
                }
            }
        }
    }
    let slot = lid.y * WG + lid.x;
    partial[slot] = acc;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid.x < s {
            partial[slot] += partial[slot + s];
        }
        workgroupBarrier();
    }
    if lid.x == 0u && r < p.rows {
        let sum = partial[slot];
        for (var j = 0u; j < TOK; j++) { store_out(t0 + j, r, sum[j]); }
    }
}
