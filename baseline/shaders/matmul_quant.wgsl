// matmul_quant.wgsl: y[t, row0 + r] (+)= act(sum_k W[r, k] x[t, k]) with W quantized (int8,
// nf4, sf4 by QUANT), GEMV-style for decoding; weights8 comes from weights_quant.wgsl.
// Bindings: codes u32 [R, KP/4] (int8) or [R, KP/8] (4-bit), scales f32 [R, 2*KP/128] or
// [R, KP/64], x [T, K] f32 (x_off, x_stride), y [T, y_stride] f32 (y_off).
// Grid: (ceil(R / ROWS), ceil(T / 4)); the WG lanes of a row take 8 weights per step each and
// reduce in workgroup memory, as matmul.wgsl.
override WG: u32 = 64u;
override ROWS: u32 = 4u;
const TOK: u32 = 4u;

var<workgroup> partial: array<vec4<f32>, WG * ROWS>;

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
