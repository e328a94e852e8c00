// matmul_subgroup.wgsl: the same product as matmul.wgsl, y[t, row0 + r] (+)= act(sum_k W[r, k] x[t, k]),
// for adapters with subgroups: 8 neighbouring invocations share a row, each reading every 8th
// 16-byte word of it, and sum their partials with subgroup shuffles (no workgroup memory, no
// barriers). Needs subgroups of at least 8 invocations laid out in local-index order.
// Bindings as matmul.wgsl. Grid: (ceil(R / 8), ceil(T / 4)); workgroup of 64 = 8 rows x 8 lanes.
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;

const LANES: u32 = 8u;
const TOK: u32 = 4u;

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let lane = li % LANES;
    let r = wid.x * (64u / LANES) + li / LANES;
    let t0 = wid.y * TOK;
    let n = count.n;
    var acc = vec4<f32>(0.0);
    if r < p.rows {
        let base = r * p.kv;
        for (var i = lane; i < p.kv; i += LANES) {
            let q = w[base + i];
            let lo = vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y));
            let hi = vec4<f32>(unpack2x16float(q.z), unpack2x16float(q.w));
            for (var j = 0u; j < TOK; j++) {
                if t0 + j < n {
                    let v = x8(t0 + j, i * 8u);
                    acc[j] += dot(lo, vec4<f32>(v[0], v[1], v[2], v[3])) + dot(hi, vec4<f32>(v[4], v[5], v[6], v[7]));
                }
            }
        }
    }
    // butterfly over the 8 lanes of this row (all invocations take part)
    acc += subgroupShuffleXor(acc, 4u);
    acc += subgroupShuffleXor(acc, 2u);
    acc += subgroupShuffleXor(acc, 1u);
    if lane == 0u {
        for (var j = 0u; j < TOK; j++) { store_out(t0 + j, r, acc[j]); }
    }
}
