// time_mix_v5_lanes.wgsl: built after time_mix_v5.wgsl (declarations, helpers and its entries),
// in a module of its own because it needs subgroups, which `wkv` and `norm` do not.
// `wkv_lanes` (CPU adapters with subgroups of at least LANES invocations, where barriers and
// workgroup memory cost most): the recurrence of `wkv` without either. The LANES invocations of a
// state row each hold the same two column groups as in `wkv`, read r, w, k, v of every token
// straight from tm and sum the row's o through subgroup shuffles.
// Grid: (H * ceil(N / (WKV_WG / LANES)), B), WKV_WG invocations.
@compute @workgroup_size(WKV_WG)
fn wkv_lanes(@builtin(local_invocation_index) tid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let n = N_HEAD;
    let per = WKV_WG / LANES;
    let splits = (n + per - 1u) / per;
    let h = wid.x / splits;
    let row = wid.x % splits * per + tid / LANES;
    let s = wid.y;
    let lane = tid % LANES;
    let g1 = lane + LANES;
    if count.n == 0u || s >= p.slots { return; }
    let start = cursors[2u * s];
    let len = cursors[2u * s + 1u];
    if len == 0u { return; }
    let live = row < n;   // a padding row works on a copy of row N - 1 and is not stored
    let rc = min(row, n - 1u);
    let sbase = ((s * p.h + h) * n + rc) * n;
    var s0 = load_state(sbase, 4u * lane);
    var s1 = load_state(sbase, 4u * g1);
    let hc = h * n;
    let u0 = vec4_at(p.u_off + hc, 4u * lane);
    let u1 = vec4_at(p.u_off + hc, 4u * g1);
    let d0 = vec4_at(p.decay_off + hc, 4u * lane);
    let d1 = vec4_at(p.decay_off + hc, 4u * g1);
    for (var t = start; t < start + len; t++) {
        let i = t * p.c + hc;
        var w0 = d0;
        var w1 = d1;
        if p.dynamic_decay != 0u {
            w0 = exp(-exp(d0 + tm4(W, i, 4u * lane)));
            w1 = exp(-exp(d1 + tm4(W, i, 4u * g1)));
        }
        let v = tm[V * p.plane + i + rc];
        let kv0 = tm4(K, i, 4u * lane) * v;
        let kv1 = tm4(K, i, 4u * g1) * v;
        let o4 = tm4(R, i, 4u * lane) * (u0 * kv0 + s0) + tm4(R, i, 4u * g1) * (u1 * kv1 + s1);
        s0 = kv0 + w0 * s0;
        s1 = kv1 + w1 * s1;
        var o = o4.x + o4.y + o4.z + o4.w;
        for (var m = LANES / 2u; m > 0u; m >>= 1u) {
            o += subgroupShuffleXor(o, m);
        }
        if lane == 0u && live { y[i + row] = o; }
    }
    if live {
        store_state(sbase, 4u * lane, s0);
        store_state(sbase, 4u * g1, s1);
    }
}
