// time_mix_v4.wgsl: the RWKV-4 WKV recurrence in its overflow-free (aa, bb, pp) form.
// tm is [3, plane] f32 holding planes r (already sigmoid), k, v, each [T, C].
// State is [B, 3, C]: aa, bb, pp per channel. w = -exp(time_decay) and u = time_first come
// from vec. For each token of a slot, in order:
//     y = r * (e^(pp-p) aa + e^(u+k-p) v) / (e^(pp-p) bb + e^(u+k-p)),  p = max(pp, u + k)
//     then aa, bb, pp absorb (k, v) with decay w.
// Grid: (ceil(C / WG), B); one invocation walks one channel of one slot.
struct Params {
    c: u32,
    plane: u32,
    slots: u32,
    w_off: u32,
    u_off: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}
@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> cursors: array<u32>;
@group(0) @binding(3) var<storage, read> tm: array<f32>;
@group(0) @binding(4) var<storage, read> vec: array<f32>;
@group(0) @binding(5) var<storage, read_write> state: array<f32>;
@group(0) @binding(6) var<storage, read_write> y: array<f32>;

override WG: u32 = 64u;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    let s = gid.y;
    if c >= p.c || s >= p.slots || count.n == 0u { return; }
    let start = cursors[2u * s];
    let len = cursors[2u * s + 1u];
    let sb = s * 3u * p.c + c;
    var aa = state[sb];
    var bb = state[sb + p.c];
    var pp = state[sb + 2u * p.c];
    let w = vec[p.w_off + c];
    let u = vec[p.u_off + c];
    for (var t = start; t < start + len; t++) {
        let e = t * p.c + c;
        let r = tm[e];
        let k = tm[p.plane + e];
        let v = tm[2u * p.plane + e];
        let ww = u + k;
        let q = max(pp, ww);
        let e1 = exp(pp - q);
        let e2 = exp(ww - q);
        y[e] = r * (e1 * aa + e2 * v) / (e1 * bb + e2);
        let ww2 = w + pp;
        let q2 = max(ww2, k);
        let f1 = exp(ww2 - q2);
        let f2 = exp(k - q2);
        aa = f1 * aa + f2 * v;
        bb = f1 * bb + f2;
        pp = q2;
    }
    state[sb] = aa;
    state[sb + p.c] = bb;
    state[sb + 2u * p.c] = pp;
}
