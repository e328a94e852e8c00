// matmul_group_tiled.wgsl: the products of a matmul group computed in 128-row x 128-token tiles
// (tile_big.wgsl, the same sums in the same order as matmul_tiled.wgsl `big` and `main`) in one
// dispatch, for prompts: the products share the GPU instead of each leaving it part idle.
// Bindings and segment table as matmul_group_io.wgsl, except that each segment starts at a
// multiple of 128 group rows, so a workgroup's tile rows belong to one segment.
// Grid: (group rows / 128, ceil(T / 128)).
alias TileSrc = Segment;

fn tile_rows(s: Segment) -> u32 { return s.rows; }
fn tile_w8(s: Segment, r: u32, i: u32) -> array<f32, 8> { return f16x8(w[s.w_off + r * s.kv + i]); }
fn tile_x8(s: Segment, t: u32, kb: u32) -> array<f32, 8> { return x8g(s, t, kb); }
fn tile_store(s: Segment, t: u32, r: u32, v: f32) { store_group(s, t, r, v); }

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let lid = lane_block(tid);
    let s = segment_of(wid.x * BT);
    let r0 = wid.x * BT - s.row0;
    let c = big_tile(s, lid, tid, r0, wid.y * BT, 0u, s.kv * 8u);
    store_big(s, c, lid, r0, wid.y * BT);
}
