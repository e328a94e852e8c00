// matmul_group.wgsl: several independent products y_s[t, r] (+)= act_s(sum_k W_s[r, k] x_s[t, k]) in one
// dispatch, for the matrices of a layer that are ready at the same time (r/k/v and the LoRA first halves).
// Bindings: w: every W_s as f16 pairs in one buffer (segment s at word w_off, rows padded to 8 * kv),
// x [..] f32 (segment s reads x_off + t * x_stride), y0 / y1 [..] f32 (segment s writes y_sel's buffer),
// segs: the segment table. Rows of the group are the segments' rows one after another, each segment
// starting at a multiple of 4. Grid: `main` (ceil(rows / 4), ceil(T / 4)); `rowwise` (ceil(rows / WG), ceil(T / RTOK)).
override WG: u32 = 64u;
override ROWS: u32 = 4u;
override RTOK: u32 = 16u;
const TOK: u32 = 4u;

var<workgroup> partial: array<vec4<f32>, WG * ROWS>;

// WG lanes x ROWS rows x 4 tokens per workgroup, as matmul.wgsl `main` (same sums, same order).
@compute @workgroup_size(WG, ROWS)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let g = segment_of(wid.x * ROWS);
    let r = wid.x * ROWS + lid.y - g.row0;
    let t0 = wid.y * TOK;
    let n = count.n;
    var acc = vec4<f32>(0.0);
    if r < g.rows {
        let base = g.w_off + r * g.kv;
        for (var i = lid.x; i < g.kv; i += WG) {
            let q = w[base + i];
            for (var j = 0u; j < TOK; j++) {
                if t0 + j < n { acc[j] += dot8(q, x8g(g, t0 + j, i * 8u)); }
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
    if lid.x == 0u && r < g.rows {
        let sum = partial[slot];
        for (var j = 0u; j < TOK; j++) { store_group(g, t0 + j, r, sum[j]); }
    }
}

// One invocation per row and up to RTOK tokens, no barriers (CPU adapters), as matmul.wgsl `rowwise`.
@compute @workgroup_size(WG)
fn rowwise(@builtin(global_invocation_id) gid: vec3<u32>) {
    if gid.x >= p.rows { return; }
    let g = segment_of(gid.x);
    let r = gid.x - g.row0;
    let t0 = gid.y * RTOK;
    let n = count.n;
    if r >= g.rows || t0 >= n { return; }
    let tn = min(RTOK, n - t0);
    let base = g.w_off + r * g.kv;
    if tn == 1u {
        // decoding: one accumulator in a register, as matmul.wgsl `rowwise`
        var a = 0.0;
        for (var i = 0u; i < g.kv; i++) { a += dot8v(w[base + i], xg_at(g, t0, i * 8u)); }
        store_group(g, t0, r, a);
        return;
    }
    var acc: array<f32, 16>;
    for (var i = 0u; i < g.kv; i++) {
        let q = w[base + i];
        for (var j = 0u; j < tn; j++) { acc[j] += dot8v(q, xg_at(g, t0 + j, i * 8u)); }
    }
    for (var j = 0u; j < tn; j++) { store_group(g, t0 + j, r, acc[j]); }
}
