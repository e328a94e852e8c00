// decode_row.wgsl: the one-token subgroup kernels' share of a row (matmul_subgroup.wgsl `decode`,
// matmul_group_subgroup.wgsl), after x_reads.wgsl: uses the kernel's w, LANES and UNROLL.

// One lane's partial sum over the row's words base .. base + kv (every LANES-th from `lane`),
// loading UNROLL (1, 2 or 4) words before using them, summed in the plain loop's order; the
// token's x values start at xb (a row of k values).
fn lane_sum(base: u32, kv: u32, lane: u32, xb: u32, k: u32) -> f32 {
    var acc = 0.0;
    var i = lane;
    // words in flight: named values, not an array (an indexed array may live in memory)
    if UNROLL >= 4u {
        for (; i + 3u * LANES < kv; i += 4u * LANES) {
            let q0 = w[base + i];
            let q1 = w[base + i + LANES];
            let q2 = w[base + i + 2u * LANES];
            let q3 = w[base + i + 3u * LANES];
            acc += dot8(q0, x8_from(xb + i * 8u, i * 8u, k));
            acc += dot8(q1, x8_from(xb + (i + LANES) * 8u, (i + LANES) * 8u, k));
            acc += dot8(q2, x8_from(xb + (i + 2u * LANES) * 8u, (i + 2u * LANES) * 8u, k));
            acc += dot8(q3, x8_from(xb + (i + 3u * LANES) * 8u, (i + 3u * LANES) * 8u, k));
        }
    }
    if UNROLL >= 2u {
        for (; i + LANES < kv; i += 2u * LANES) {
            let q0 = w[base + i];
            let q1 = w[base + i + LANES];
            acc += dot8(q0, x8_from(xb + i * 8u, i * 8u, k));
            acc += dot8(q1, x8_from(xb + (i + LANES) * 8u, (i + LANES) * 8u, k));
        }
    }
    for (; i < kv; i += LANES) {
        acc += dot8(w[base + i], x8_from(xb + i * 8u, i * 8u, k));
    }
    return acc;
}
