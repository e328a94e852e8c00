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
        for (var i = 0u; i < p.kv; i++) { a += dot8(w[base + i], x8(t0, i * 8u)); }
        store_out(t0, r, a);
        return;
    }
    var acc: array<f32, 16>;
    for (var i = 0u; i < p.kv; i++) {
        let q = w[base + i];
        for (var j = 0u; j < tn; j++) { acc[j] += dot8(q, x8(t0 + j, i * 8u)); }
    }
    for (var j = 0u; j < tn; j++) { store_out(t0 + j, r, acc[j]); }
}
