// matmul_group_io.wgsl: what the group kernels share (prepended by the shader loader): the segment
// table, the bindings and the per-segment input/output helpers. See matmul_group.wgsl for the layout.
struct Params {
    segments: u32,
    rows: u32,      // rows of the whole group (the last segment's row0 + rows)
    _pad0: u32,
    _pad1: u32,
}
struct Segment {
    row0: u32,      // first row of this segment within the group (a multiple of 4)
    rows: u32,
    k: u32,
    kv: u32,        // padded K / 8
    w_off: u32,     // in vec4<u32> words
    x_off: u32,
    x_stride: u32,
    y_sel: u32,     // 0: y0, 1: y1
    y_off: u32,
    y_stride: u32,
    act: u32,
    accumulate: u32,
    s_off: u32,     // quantized groups: first scale of this segment (f32 elements); else unused
    half: u32,      // quantized groups: 1 where this segment's weights are f16 (matmul_quant_group.wgsl)
}
@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> x: array<f32>;
@group(0) @binding(4) var<storage, read_write> y0: array<f32>;
@group(0) @binding(5) var<storage, read_write> y1: array<f32>;
@group(0) @binding(6) var<storage, read> segs: array<Segment>;
// x again as vec4s, for the quantized one-token kernels' x8_fast (bound only where those run)
@group(0) @binding(8) var<storage, read> xv: array<vec4<f32>>;

// The segment holding group row `row` (segments are sorted by row0).
fn segment_of(row: u32) -> Segment {
    var s = 0u;
    for (var i = 1u; i < p.segments; i++) {
        if segs[i].row0 <= row { s = i; }
    }
    return segs[s];
}

// x[t, kb .. kb + 8] of segment g, zero past K (x_reads.wgsl), as an array or as two vec4 columns.
fn x8g(g: Segment, t: u32, kb: u32) -> array<f32, 8> {
    return x8_from(g.x_off + t * g.x_stride + kb, kb, g.k);
}

fn xg_at(g: Segment, t: u32, kb: u32) -> mat2x4<f32> {
    return x_span(g.x_off + t * g.x_stride + kb, kb, g.k);
}

fn store_group(g: Segment, t: u32, r: u32, v: f32) {
    if r >= g.rows || t >= count.n { return; }
    let idx = g.y_off + t * g.y_stride + r;
    let a = activate(v, g.act);
    if g.y_sel == 0u {
        if g.accumulate != 0u { y0[idx] += a; } else { y0[idx] = a; }
    } else {
        if g.accumulate != 0u { y1[idx] += a; } else { y1[idx] = a; }
    }
}

