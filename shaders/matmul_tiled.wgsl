// matmul_tiled.wgsl: y[t, row0 + r] (+)= act(sum_k W[r, k] x[t, k]) tiled for prompts: a workgroup
// computes a 64-row x 64-token tile, staging 32-wide K slices of W (from weights8) and x in
// workgroup memory as vec4s of four rows / four tokens; each of its 16 x 16 invocations sums a
// 4 x 4 block in f32. Built twice: matmul_tiled (weights_f16.wgsl: w [R, KP/8] vec4<u32>) and
// matmul_quant_tiled (weights_quant.wgsl: codes, scales); x [T, K] f32, y [T, y_stride] f32.
// Grid: (ceil(R / 64), ceil(T / 64)).
const TILE: u32 = 64u;   // rows and tokens per workgroup
const TK: u32 = 32u;     // K slice staged per iteration
const Q: u32 = 16u;      // TILE / 4: vec4 groups per K step

var<workgroup> ws: array<vec4<f32>, 512>;   // [TK][Q]: four consecutive rows
var<workgroup> xs: array<vec4<f32>, 512>;   // [TK][Q]: four consecutive tokens

@compute @workgroup_size(16, 16)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let n = count.n;
    let r0 = wid.x * TILE;
    let t0 = wid.y * TILE;
    // staging: invocation tid brings 8 consecutive K values of row (and token) tid / 4
    let l = tid / 4u;
    let lk = (tid % 4u) * 8u;
    let lq = l / 4u;
    let lc = l % 4u;
    let kp = p.kv * 8u;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var k0 = 0u; k0 < kp; k0 += TK) {
        let kb = k0 + lk;
        var wv: array<f32, 8>;
        if r0 + l < p.rows && kb < kp {
            wv = weights8(r0 + l, kb / 8u);
        }
        let t = t0 + l;
        let xb = p.x_off + t * p.x_stride + kb;
        for (var e = 0u; e < 8u; e++) {
            ws[(lk + e) * Q + lq][lc] = wv[e];
            var v = 0.0;
            if t < n && kb + e < p.k {
                v = x[xb + e];
            }
            xs[(lk + e) * Q + lq][lc] = v;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            let a = ws[kk * Q + lid.y];
            let b = xs[kk * Q + lid.x];
            acc0 += a.x * b;
            acc1 += a.y * b;
            acc2 += a.z * b;
            acc3 += a.w * b;
        }
        workgroupBarrier();
    }
    let r = r0 + lid.y * 4u;
    let tb = t0 + lid.x * 4u;
    for (var j = 0u; j < 4u; j++) {
        store_out(tb + j, r, acc0[j]);
        store_out(tb + j, r + 1u, acc1[j]);
        store_out(tb + j, r + 2u, acc2[j]);
        store_out(tb + j, r + 3u, acc3[j]);
    }
}
