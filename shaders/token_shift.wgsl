// token_shift.wgsl: RWKV's token shift, for tokens of several slots packed one after another.
// `mix`:   out[m, t, c] = x[t, c] + (prev[t, c] - x[t, c]) * mu[m, c]   for m < mixes, where prev is
//          the previous token of the same slot, or the slot's saved row for its first token;
//          with `store` set, the slot's last row then replaces its saved row.
//          With `with_delta` set, mu[m, c] + delta[m, t, c] replaces mu (RWKV-6's data-dependent mix).
// Bindings: cursors u32 [2B slot (start, len) | T slot ids], x [T, C] f32, shift [B, C] f32,
// vec f32 (mu at mu_off, [mixes, C]), out [mixes, out_plane, C] f32, delta like out.
// Grid: (ceil(C / WG), B); an invocation walks one channel of one slot's tokens,
// so reading and replacing the saved row cannot race.
struct Params {
    c: u32,
    slots: u32,
    mixes: u32,
    mu_off: u32,
    x_off: u32,
    out_plane: u32,     // elements between two outputs m and m + 1
    store: u32,         // 1: `mix` also saves each slot's last row
    with_delta: u32,    // 1: add delta to mu (otherwise delta is never read)
}
@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> cursors: array<u32>;
@group(0) @binding(3) var<storage, read> x: array<f32>;
@group(0) @binding(4) var<storage, read_write> shift: array<f32>;
@group(0) @binding(5) var<storage, read> vec: array<f32>;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;
@group(0) @binding(7) var<storage, read> delta: array<f32>;

override WG: u32 = 64u;

@compute @workgroup_size(WG)
fn mix(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    let s = gid.y;
    if c >= p.c || s >= p.slots || count.n == 0u { return; }
    let start = cursors[2u * s];
    let len = cursors[2u * s + 1u];
    if len == 0u { return; }
    var prev = shift[s * p.c + c];
    for (var t = start; t < start + len; t++) {
        let cur = x[p.x_off + t * p.c + c];
        let d = prev - cur;
        for (var m = 0u; m < p.mixes; m++) {
            let e = m * p.out_plane + t * p.c + c;
            var mu = vec[p.mu_off + m * p.c + c];
            if p.with_delta != 0u { mu += delta[e]; }
            out[e] = cur + d * mu;
        }
        prev = cur;
    }
    if p.store != 0u {
        shift[s * p.c + c] = prev;
    }
}
