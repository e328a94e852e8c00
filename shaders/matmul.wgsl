// matmul.wgsl: y[t, row0 + r] (+)= act(sum_k W[r, k] * x[t, k]) with f16 weights packed in u32.
// Bindings: w [R, KP/8] vec4<u32> (8 f16 each, rows padded to KP), x [T, K] f32 (row stride
// x_stride, element offset x_off), y [T, y_stride] f32 (element offset y_off).
// Grid: (ceil(R / ROWS), ceil(T / 4)); a workgroup is WG threads x ROWS rows x 4 tokens, and
// the WG threads of a row split K between them and reduce in workgroup memory.
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;

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
        let base = r * p.kv;
        for (var i = lid.x; i < p.kv; i += WG) {
            let q = w[base + i];
            let w01 = unpack2x16float(q.x);
            let w23 = unpack2x16float(q.y);
            let w45 = unpack2x16float(q.z);
            let w67 = unpack2x16float(q.w);
            let lo = vec4<f32>(w01, w23);
            let hi = vec4<f32>(w45, w67);
            for (var j = 0u; j < TOK; j++) {
                if t0 + j < n {
                    let v = x8(t0 + j, i * 8u);
                    acc[j] += dot(lo, vec4<f32>(v[0], v[1], v[2], v[3])) + dot(hi, vec4<f32>(v[4], v[5], v[6], v[7]));
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

// `rowwise`: one invocation per row and up to RTOK tokens, no workgroup memory and no barriers.
// For CPU adapters (lavapipe), where barriers are expensive and caches make the row-strided
// reads cheap. Grid: (ceil(R / WG), ceil(T / RTOK)) with a workgroup of WG x 1.
override RTOK: u32 = 16u;

@compute @workgroup_size(WG)
fn rowwise(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r = gid.x;
    let t0 = gid.y * RTOK;
    let n = count.n;
    if r >= p.rows || t0 >= n { return; }
    let tn = min(RTOK, n - t0);
    let base = r * p.kv;
    if tn == 1u {
        // decoding: one accumulator in a register (the array below lives in memory on lavapipe)
        var a = 0.0;
        for (var i = 0u; i < p.kv; i++) { a += dot8v(w[base + i], x_at(t0, i * 8u)); }
        store_out(t0, r, a);
        return;
    }
    var acc: array<f32, 16>;
    for (var i = 0u; i < p.kv; i++) {
        let q = w[base + i];
        for (var j = 0u; j < tn; j++) { acc[j] += dot8v(q, x_at(t0 + j, i * 8u)); }
    }
    for (var j = 0u; j < tn; j++) { store_out(t0 + j, r, acc[j]); }
}

// `rows4`: one token, four rows per invocation reading each group of 8 x values once for the four
// (CPU adapters: loads of x cost as much as loads of weights); every row's sum as `rowwise`.
// Grid: (ceil(R / (4 WG)), T) with a workgroup of WG x 1.
@compute @workgroup_size(WG)
fn rows4(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r0 = gid.x * 4u;
    let t = gid.y;
    let kv = p.kv;
    if r0 >= p.rows || t >= count.n { return; }
    if r0 + 4u > p.rows {
        for (var r = r0; r < p.rows; r++) {
            var a = 0.0;
            for (var i = 0u; i < kv; i++) { a += dot8v(w[r * kv + i], x_at(t, i * 8u)); }
            store_out(t, r, a);
        }
        return;
    }
    var a0 = 0.0;
    var a1 = 0.0;
    var a2 = 0.0;
    var a3 = 0.0;
    for (var i = 0u; i < kv; i++) {
        let v = x_at(t, i * 8u);
        a0 += dot8v(w[r0 * kv + i], v);
        a1 += dot8v(w[(r0 + 1u) * kv + i], v);
        a2 += dot8v(w[(r0 + 2u) * kv + i], v);
        a3 += dot8v(w[(r0 + 3u) * kv + i], v);
    }
    store_out(t, r0, a0);
    store_out(t, r0 + 1u, a1);
    store_out(t, r0 + 2u, a2);
    store_out(t, r0 + 3u, a3);
}

// `rows32`: one token, 32 rows per invocation as eight vec4 sums (CPU adapters, the LM head:
// 65536 x 256 on lavapipe 37 against rows4's 53 ms; smaller matrices keep rows4, which leaves
// more invocations to share out). Every row's sum as `rowwise`; rows past the end read the last
// one and are not stored (w_word, below). Grid: (ceil(R / (32 WG)), T) with a workgroup of WG x 1.
@compute @workgroup_size(WG)
fn rows32(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r0 = gid.x * 32u;
    let t = gid.y;
    if r0 >= p.rows || t >= count.n { return; }
    var a0 = vec4<f32>(0.0); var a1 = vec4<f32>(0.0); var a2 = vec4<f32>(0.0); var a3 = vec4<f32>(0.0);
    var a4 = vec4<f32>(0.0); var a5 = vec4<f32>(0.0); var a6 = vec4<f32>(0.0); var a7 = vec4<f32>(0.0);
    for (var i = 0u; i < p.kv; i++) {
        let v = x_at(t, i * 8u);
        a0 += rows4_of(r0, i, v);
        a1 += rows4_of(r0 + 4u, i, v);
        a2 += rows4_of(r0 + 8u, i, v);
        a3 += rows4_of(r0 + 12u, i, v);
        a4 += rows4_of(r0 + 16u, i, v);
        a5 += rows4_of(r0 + 20u, i, v);
        a6 += rows4_of(r0 + 24u, i, v);
        a7 += rows4_of(r0 + 28u, i, v);
    }
    for (var j = 0u; j < 4u; j++) {
        store_out(t, r0 + j, a0[j]);
        store_out(t, r0 + 4u + j, a1[j]);
        store_out(t, r0 + 8u + j, a2[j]);
        store_out(t, r0 + 12u + j, a3[j]);
        store_out(t, r0 + 16u + j, a4[j]);
        store_out(t, r0 + 20u + j, a5[j]);
        store_out(t, r0 + 24u + j, a6[j]);
        store_out(t, r0 + 28u + j, a7[j]);
    }
}

// dot8v of word i of rows r .. r + 3 with the x span v.
fn rows4_of(r: u32, i: u32, v: mat2x4<f32>) -> vec4<f32> {
    return vec4<f32>(dot8v(w_word(r, i), v), dot8v(w_word(r + 1u, i), v), dot8v(w_word(r + 2u, i), v),
                     dot8v(w_word(r + 3u, i), v));
}

// `tile8`: 8 rows x 4 tokens per invocation, the 32 sums in registers, no workgroup memory and no
// barriers (CPU adapters' steps of several tokens: each group of 8 weights is loaded once for four
// tokens and each group of 8 x values once for eight rows). Every sum as `rowwise` (same
// products, same order). Grid: (ceil(R / (8 WG)), ceil(T / 4)) with a workgroup of WG x 1.
@compute @workgroup_size(WG)
fn tile8(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r0 = gid.x * 8u;
    let t0 = gid.y * 4u;
    let n = count.n;
    let kv = p.kv;
    if r0 >= p.rows || t0 >= n { return; }
    // rows and tokens past the end read the last ones and are not stored
    let last = p.rows - 1u;
    let t1 = min(t0 + 1u, n - 1u);
    let t2 = min(t0 + 2u, n - 1u);
    let t3 = min(t0 + 3u, n - 1u);
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    var a4 = vec4<f32>(0.0);
    var a5 = vec4<f32>(0.0);
    var a6 = vec4<f32>(0.0);
    var a7 = vec4<f32>(0.0);
    for (var i = 0u; i < kv; i++) {
        let kb = i * 8u;
        let x0 = x_at(t0, kb);
        let x1 = x_at(t1, kb);
        let x2 = x_at(t2, kb);
        let x3 = x_at(t3, kb);
        let q0 = w[r0 * kv + i];
        let q1 = w[min(r0 + 1u, last) * kv + i];
        let q2 = w[min(r0 + 2u, last) * kv + i];
        let q3 = w[min(r0 + 3u, last) * kv + i];
        let q4 = w[min(r0 + 4u, last) * kv + i];
        let q5 = w[min(r0 + 5u, last) * kv + i];
        let q6 = w[min(r0 + 6u, last) * kv + i];
        let q7 = w[min(r0 + 7u, last) * kv + i];
        a0 += vec4<f32>(dot8v(q0, x0), dot8v(q0, x1), dot8v(q0, x2), dot8v(q0, x3));
        a1 += vec4<f32>(dot8v(q1, x0), dot8v(q1, x1), dot8v(q1, x2), dot8v(q1, x3));
        a2 += vec4<f32>(dot8v(q2, x0), dot8v(q2, x1), dot8v(q2, x2), dot8v(q2, x3));
        a3 += vec4<f32>(dot8v(q3, x0), dot8v(q3, x1), dot8v(q3, x2), dot8v(q3, x3));
        a4 += vec4<f32>(dot8v(q4, x0), dot8v(q4, x1), dot8v(q4, x2), dot8v(q4, x3));
        a5 += vec4<f32>(dot8v(q5, x0), dot8v(q5, x1), dot8v(q5, x2), dot8v(q5, x3));
        a6 += vec4<f32>(dot8v(q6, x0), dot8v(q6, x1), dot8v(q6, x2), dot8v(q6, x3));
        a7 += vec4<f32>(dot8v(q7, x0), dot8v(q7, x1), dot8v(q7, x2), dot8v(q7, x3));
    }
    for (var j = 0u; j < 4u; j++) {
        store_out(t0 + j, r0, a0[j]);
        store_out(t0 + j, r0 + 1u, a1[j]);
        store_out(t0 + j, r0 + 2u, a2[j]);
        store_out(t0 + j, r0 + 3u, a3[j]);
        store_out(t0 + j, r0 + 4u, a4[j]);
        store_out(t0 + j, r0 + 5u, a5[j]);
        store_out(t0 + j, r0 + 6u, a6[j]);
        store_out(t0 + j, r0 + 7u, a7[j]);
    }
}

// `tile16` (tile16.wgsl, shared with the quantized weights): its weights, as two vec4 columns.
// Word i of row r; rows past the end read the last one (their sums are not stored).
fn w_word(r: u32, i: u32) -> vec4<u32> { return w[min(r, p.rows - 1u) * p.kv + i]; }

fn tile_w(r: u32, i: u32) -> mat2x4<f32> {
    let q = w_word(r, i);
    return mat2x4<f32>(vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y)), vec4<f32>(unpack2x16float(q.z), unpack2x16float(q.w)));
}
