// token_shift.wgsl: RWKV's token shift, for tokens of several slots packed one after another.
// `mix`:   out[m, t, c] = x[t, c] + (prev[t, c] - x[t, c]) * mu[m, c]   for m < mixes, where prev is
//          the previous token of the same slot, or the slot's saved row for its first token.
// `mix_delta`: the same with a per-token addition, mu[m, c] + delta[m, t, c] (RWKV-6's data-dependent mix).
// `store`: shift[s, c] = x[last token of slot s, c] for every slot that had tokens this step.
// Bindings: cursors u32 [2B slot (start, len) | T slot ids], x [T, C] f32, shift [B, C] f32,
// vec f32 (mu at mu_off, [mixes, C]), out [mixes, out_plane, C] f32, delta like out.
// Grid: mix and mix_delta (ceil(C / WG), T); store (ceil(C / WG), B).
struct Params {
    c: u32,
    slots: u32,
    mixes: u32,
    mu_off: u32,
    x_off: u32,
    out_plane: u32,     // elements between two outputs m and m + 1
    _pad0: u32,
    _pad1: u32,
}
@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> cursors: array<u32>;
@group(0) @binding(3) var<storage, read> x: array<f32>;
@group(0) @binding(4) var<storage, read_write> shift: array<f32>;
@group(0) @binding(5) var<storage, read> vec: array<f32>;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;
@group(0) @binding(7) var<storage, read> delta: array<f32>;

override WG: u32 = 64u;

// The current value and (previous - current) of token t, channel c.
fn shifted(t: u32, c: u32) -> vec2<f32> {
    let s = cursors[2u * p.slots + t];
    let start = cursors[2u * s];
    let cur = x[p.x_off + t * p.c + c];
    var prev: f32;
    if t > start {
        prev = x[p.x_off + (t - 1u) * p.c + c];
    } else {
        prev = shift[s * p.c + c];
    }
    return vec2<f32>(cur, prev - cur);
}

@compute @workgroup_size(WG)
fn mix(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    let t = gid.y;
    if c >= p.c || t >= count.n { return; }
    let xd = shifted(t, c);
    for (var m = 0u; m < p.mixes; m++) {
        out[m * p.out_plane + t * p.c + c] = xd.x + xd.y * vec[p.mu_off + m * p.c + c];
    }
}

@compute @workgroup_size(WG)
fn mix_delta(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    let t = gid.y;
    if c >= p.c || t >= count.n { return; }
    let xd = shifted(t, c);
    for (var m = 0u; m < p.mixes; m++) {
        let e = m * p.out_plane + t * p.c + c;
        out[e] = xd.x + xd.y * (vec[p.mu_off + m * p.c + c] + delta[e]);
    }
}

@compute @workgroup_size(WG)
fn store(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    let s = gid.y;
    if c >= p.c || s >= p.slots || count.n == 0u { return; }
    let len = cursors[2u * s + 1u];
    if len == 0u { return; }
    let last = cursors[2u * s] + len - 1u;
    shift[s * p.c + c] = x[p.x_off + last * p.c + c];
}
