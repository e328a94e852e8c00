// sample.wgsl: choose one token per logits row on the GPU, so only ids are read back.
// Bindings: logits [R, V] f32, params per row (temperature, top_p, top_k, u) f32 [R, 4],
// ids [R] u32 out, allowed [ceil(V / 32)] u32: bit i set when id i may be chosen (ids the
// tokenizer cannot decode are cleared). Grid: (R, 1); one workgroup of WG invocations per row.
// temperature 0 picks the argmax (lowest index on ties). Otherwise, with p = softmax(l / T):
// keep the k most likely tokens (top_k; 0 keeps all), of those the fewest most likely holding
// top_p of their mass, then take the first token, in index order, whose cumulative kept mass
// reaches u * (kept mass): the rule of rwkv_webgpu.Sampler with one uniform draw u.
struct Params {
    v: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}
@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> logits: array<f32>;
@group(0) @binding(3) var<storage, read> row_params: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> ids: array<u32>;
@group(0) @binding(5) var<storage, read> allowed: array<u32>;

const NONE: f32 = -3.0e38;  // the logit of an id that may not be chosen

// logits[base + i], or NONE for an id that may not be chosen or lies past the row.
fn logit(base: u32, i: u32) -> f32 {
    if i >= p.v { return NONE; }
    let ok = (allowed[i >> 5u] >> (i & 31u)) & 1u;
    return select(NONE, logits[base + i], ok == 1u);
}

// Logits i, i + WG, ..., i + 7 WG: eight independent loads in flight per invocation (one
// workgroup reads the whole row, so it must not wait on one load at a time).
fn logits8(base: u32, i: u32) -> array<vec4<f32>, 2> {
    return array<vec4<f32>, 2>(
        vec4<f32>(logit(base, i), logit(base, i + WG), logit(base, i + 2u * WG), logit(base, i + 3u * WG)),
        vec4<f32>(logit(base, i + 4u * WG), logit(base, i + 5u * WG), logit(base, i + 6u * WG), logit(base, i + 7u * WG)));
}

var<workgroup> red_i: array<u32, WG>;
var<workgroup> red2: array<vec2<f32>, WG>;
var<workgroup> scan: array<f32, WG>;
var<workgroup> row_p: vec4<f32>;
const SCAN_GROUP: u32 = 32u;  // chunks per group of the final scan (WG is a multiple of it)
var<workgroup> group_base: array<f32, WG / SCAN_GROUP>;

fn reduce_max(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s { red[lid] = max(red[lid], red[lid + s]); }
        workgroupBarrier();
    }
    let m = red[0];
    workgroupBarrier();
    return m;
}

const CUTS: u32 = 24u;  // bisection steps of a threshold

// min (lowest = true) or max of `v` over the workgroup.
fn reduce_index(lid: u32, v: u32, lowest: bool) -> u32 {
    red_i[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s { red_i[lid] = select(max(red_i[lid], red_i[lid + s]), min(red_i[lid], red_i[lid + s]), lowest); }
        workgroupBarrier();
    }
    let m = red_i[0];
    workgroupBarrier();
    return m;
}

// (mass, count) summed over the workgroup: one reduction per bisection step.
fn reduce_pair(lid: u32, v: vec2<f32>) -> vec2<f32> {
    red2[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s { red2[lid] += red2[lid + s]; }
        workgroupBarrier();
    }
    let total = red2[0];
    workgroupBarrier();
    return total;
}

// (mass, count) over the row of the tokens whose logit reaches `c`; every invocation calls it.
fn kept_sums(lid: u32, base: u32, c: f32, top: f32, temp: f32, total: f32) -> vec2<f32> {
    var mass = vec4<f32>(0.0);
    var cnt = vec4<f32>(0.0);
    for (var i = lid; i < p.v; i += 8u * WG) {
        let l = logits8(base, i);
        for (var h = 0u; h < 2u; h++) {
            let keep = l[h] >= vec4<f32>(c);
            mass += select(vec4<f32>(0.0), exp((l[h] - top) / temp) / total, keep);
            cnt += select(vec4<f32>(0.0), vec4<f32>(1.0), keep);
        }
    }
    return reduce_pair(lid, vec2<f32>(dot(mass, vec4<f32>(1.0)), dot(cnt, vec4<f32>(1.0))));
}

const CAND: u32 = 2048u;  // candidates the top_p search can hold in workgroup memory
var<workgroup> cand: array<f32, CAND>;  // their logits
var<workgroup> n_cand: atomic<u32>;
var<workgroup> n_seen: u32;

// Gather the logits >= c into `cand` (in any order); returns how many there are (only the first
// CAND are kept). Every invocation calls it.
fn gather_candidates(lid: u32, base: u32, c: f32) -> u32 {
    if lid == 0u { atomicStore(&n_cand, 0u); }
    workgroupBarrier();
    for (var i = lid; i < p.v; i += 8u * WG) {
        let l = logits8(base, i);
        for (var e = 0u; e < 8u; e++) {
            let v = l[e / 4u][e % 4u];
            if v >= c {
                let slot = atomicAdd(&n_cand, 1u);
                if slot < CAND { cand[slot] = v; }
            }
        }
    }
    workgroupBarrier();
    if lid == 0u { n_seen = atomicLoad(&n_cand); }
    return workgroupUniformLoad(&n_seen);
}

// A cut search that reads the row three times instead of CUTS times: a histogram of the weights
// (count, or mass in fixed point) of the logits in [lo, hi] over NB bins finds the bin where the
// cut lies; that bin's logits go to `cand` and the weight of those above it is summed exactly;
// the bisection then runs on the candidates in workgroup memory. Where the bin holds more than
// CAND logits, or the fixed-point sums pointed at the wrong bin (checked exactly), the plain
// bisection over the row runs instead.
const NB: u32 = 256u;  // histogram bins
const MASS_SCALE: f32 = 2147483648.0;  // 2^31: a logit's mass in the histogram, in units of 2^-31
var<workgroup> hist: array<atomic<u32>, NB>;
var<workgroup> picked: u32;

// The weight of a logit: 1 (counting, for top_k) or its probability (top_p).
fn weight(v: f32, top: f32, temp: f32, total: f32, by_count: bool) -> f32 {
    return select(exp((v - top) / temp) / total, 1.0, by_count);
}

// Bin of logit v in [lo, lo + span]: nondecreasing in v, so higher bins hold higher logits.
fn bin_of(v: f32, lo: f32, span: f32) -> u32 {
    return min(u32(max((v - lo) / span * f32(NB), 0.0)), NB - 1u);
}

// The sum of the weights of the candidates whose logit reaches `c`; every invocation calls it.
fn candidate_sum(lid: u32, n: u32, c: f32, top: f32, temp: f32, total: f32, by_count: bool) -> f32 {
    var acc = 0.0;
    for (var j = lid; j < n; j += WG) {
        let v = cand[j];
        if v >= c { acc += weight(v, top, temp, total, by_count); }
    }
    return reduce_sum(lid, acc);
}

// CUTS halvings of [lo, hi] over the candidates: the highest cut keeping a weight of at least
// `goal` (with `above` kept outside them; lo keeps enough). Once no candidate lies strictly
// between the two ends, the halvings left cannot change which candidates the cut keeps: they
// stop, and the cut becomes the upper end if that end keeps enough (the remaining halvings
// would have raised it to just below that end), so the kept set is the one all CUTS would give.
fn bisect_candidates(lid: u32, n: u32, lo: f32, hi: f32, above: f32, goal: f32, top: f32, temp: f32,
                     total: f32, by_count: bool) -> f32 {
    var keep = lo;
    var top_c = hi;
    for (var it = 0u; it < CUTS; it++) {
        let mid = 0.5 * (keep + top_c);
        var acc = vec2<f32>(0.0);  // weight kept at mid, candidates strictly between the ends
        for (var j = lid; j < n; j += WG) {
            let v = cand[j];
            if v >= mid { acc.x += weight(v, top, temp, total, by_count); }
            if v > keep && v < top_c { acc.y += 1.0; }
        }
        let r = reduce_pair(lid, acc);
        if lid == 0u { picked = select(0u, 1u, r.y == 0.0); }
        if workgroupUniformLoad(&picked) == 1u {
            if above + candidate_sum(lid, n, top_c, top, temp, total, by_count) >= goal { keep = top_c; }
            break;
        }
        if above + r.x >= goal { keep = mid; } else { top_c = mid; }
    }
    return keep;
}

// The highest cut in [lo, hi] keeping a weight of at least `goal` (tokens for top_k, mass for
// top_p), as CUTS halvings of [lo, hi] over the row would find it (ties within ~1e-7 of the
// range aside). lo keeps at least `goal`. Every invocation calls it.
fn search_cut(lid: u32, base: u32, lo: f32, hi: f32, top: f32, temp: f32, total: f32, goal: f32,
              by_count: bool) -> f32 {
    if lid < NB { atomicStore(&hist[lid], 0u); }
    if lid == 0u { atomicStore(&n_cand, 0u); }
    workgroupBarrier();
    let span = max(hi - lo, 1e-30);
    for (var i = lid; i < p.v; i += 8u * WG) {
        let l = logits8(base, i);
        for (var e = 0u; e < 8u; e++) {
            let v = l[e / 4u][e % 4u];
            if v >= lo {
                let w = select(u32(weight(v, top, temp, total, false) * MASS_SCALE), 1u, by_count);
                atomicAdd(&hist[bin_of(v, lo, span)], w);
            }
        }
    }
    workgroupBarrier();
    if lid == 0u {  // the highest bin whose weight from the top reaches the goal
        let want = select(goal * MASS_SCALE, goal, by_count);
        var acc = 0.0;
        var j = NB;
        loop {
            j -= 1u;
            acc += f32(atomicLoad(&hist[j]));
            if acc >= want || j == 0u { break; }
        }
        picked = j;
    }
    let jb = workgroupUniformLoad(&picked);
    // that bin's logits as candidates, the weight above it summed exactly
    var above = 0.0;
    var c_lo = -NONE;
    var c_hi = NONE;
    for (var i = lid; i < p.v; i += 8u * WG) {
        let l = logits8(base, i);
        for (var e = 0u; e < 8u; e++) {
            let v = l[e / 4u][e % 4u];
            if v >= lo {
                let b = bin_of(v, lo, span);
                if b > jb {
                    above += weight(v, top, temp, total, by_count);
                } else if b == jb {
                    let slot = atomicAdd(&n_cand, 1u);
                    if slot < CAND { cand[slot] = v; }
                    c_lo = min(c_lo, v);
                    c_hi = max(c_hi, v);
                }
            }
        }
    }
    workgroupBarrier();
    if lid == 0u { n_seen = atomicLoad(&n_cand); }
    let n = workgroupUniformLoad(&n_seen);
    let above_all = reduce_sum(lid, above);
    let bin_lo = -reduce_max(lid, -c_lo);
    let bin_hi = reduce_max(lid, c_hi);
    var ok = false;
    if n > 0u && n <= CAND {
        let all = above_all + candidate_sum(lid, n, bin_lo, top, temp, total, by_count);
        ok = above_all < goal && all >= goal;  // the cut lies in this bin
    }
    if lid == 0u { picked = select(0u, 1u, ok); }
    if workgroupUniformLoad(&picked) == 1u {
        return bisect_candidates(lid, n, bin_lo, bin_hi, above_all, goal, top, temp, total, by_count);
    }
    var keep = lo;  // the plain bisection over the row
    var top_c = hi;
    for (var it = 0u; it < CUTS; it++) {
        let mid = 0.5 * (keep + top_c);
        let kept = kept_sums(lid, base, mid, top, temp, total);
        if select(kept.x, kept.y, by_count) >= goal { keep = mid; } else { top_c = mid; }
    }
    return keep;
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_id) lid3: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let lid = lid3.x;
    let row = wid.x;
    if row >= count.n { return; }
    let base = row * p.v;
    if lid == 0u { row_p = row_params[row]; }
    let rp = workgroupUniformLoad(&row_p);  // uniform, so the branches below may hold barriers
    let temp = rp.x;
    // Passes whose order does not matter stride through the row (neighbouring invocations read
    // neighbouring logits); the final scan gives each invocation one contiguous chunk, so that
    // chunks follow index order.
    var m = NONE;
    var arg = 0xffffffffu;
    var low = -NONE;
    for (var i = lid; i < p.v; i += 8u * WG) {
        let l = logits8(base, i);
        for (var e = 0u; e < 8u; e++) {  // in index order: the lowest index of a maximum is kept
            let v = l[e / 4u][e % 4u];
            if v > m { m = v; arg = i + e * WG; }
            if v > NONE { low = min(low, v); }
        }
    }
    let top = reduce_max(lid, m);
    if temp <= 0.0 {
        // argmax: the lowest index holding the maximum
        let first = reduce_index(lid, select(0xffffffffu, arg, m == top), true);
        if lid == 0u { ids[row] = first; }
        return;
    }
    let bottom = -reduce_max(lid, -low);  // the lowest logit that may be chosen
    var z = vec4<f32>(0.0);
    for (var i = lid; i < p.v; i += 8u * WG) {
        let l = logits8(base, i);
        z += exp((l[0] - top) / temp) + exp((l[1] - top) / temp);
    }
    let total = reduce_sum(lid, dot(z, vec4<f32>(1.0)));
    let top_p = rp.y;
    let top_k = rp.z;
    // The kept set is {l >= keep}, as Sampler does it: top_k keeps the k most likely tokens (the
    // highest cut keeping >= k), then top_p the fewest of those holding top_p of their mass (the
    // highest cut above that one which still does). Both by bisection on the logit cut between
    // the lowest and the highest logit; CUTS halvings leave it within ~1e-7 of that range.
    let by_k = top_k > 0.0 && top_k < f32(p.v);  // top_k leaves some ids out
    var keep = NONE * 1.1;  // everything (the ids that may not be chosen get no mass)
    if by_k || top_p < 1.0 {
        keep = bottom;
    }
    if by_k {
        keep = search_cut(lid, base, keep, top, top, temp, total, top_k, true);
    }
    if top_p < 1.0 {
        // of the mass top_k kept; without top_k, of every id that may be chosen: 1 (the numpy
        // rule's sum; summing the row again would give 1 up to rounding, for another pass)
        var goal = top_p;
        if by_k {
            goal = top_p * kept_sums(lid, base, keep, top, temp, total).x;
        }
        var hi_c = top;
        // Without top_k, every token the nucleus keeps has p >= (1 - top_p) / V (the others hold
        // less than 1 - top_p together): when those candidates are few (a peaked distribution),
        // the bisection runs on them in workgroup memory instead of re-reading the row.
        var searched = false;
        if !by_k {
            let floor_c = max(keep, top + temp * log((1.0 - top_p) / f32(p.v) * total));
            let n = gather_candidates(lid, base, floor_c);
            if n <= CAND {
                keep = bisect_candidates(lid, n, floor_c, hi_c, 0.0, goal, top, temp, total, false);
                searched = true;
            }
        }
        if !searched {
            keep = search_cut(lid, base, keep, top, top, temp, total, goal, false);
        }
    }
    let chunk = (p.v + WG - 1u) / WG;
    let lo = min(lid * chunk, p.v);
    let hi = min(lo + chunk, p.v);
    var kept = 0.0;
    var last = 0u;  // the highest kept index: the pick when rounding leaves the goal past the end
    for (var i0 = lo; i0 < hi; i0 += 8u) {  // eight loads in flight (logit() past hi is never kept)
        var l: array<f32, 8>;
        for (var e = 0u; e < 8u; e++) { l[e] = select(NONE, logit(base, i0 + e), i0 + e < hi); }
        for (var e = 0u; e < 8u; e++) {
            if l[e] >= keep {
                let q = exp((l[e] - top) / temp) / total;
                if q > 0.0 { kept += q; last = i0 + e; }
            }
        }
    }
    let fallback = reduce_index(lid, last, false);
    // where each chunk's kept mass starts: 32 chunks at a time walked by their first invocation,
    // then the groups' totals by invocation 0 (64 steps in a row instead of WG). A chunk's span
    // ends where the next one starts (the same additions), so the spans tile [0, total) exactly.
    scan[lid] = kept;
    workgroupBarrier();
    let gq = lid / SCAN_GROUP;
    if lid % SCAN_GROUP == 0u {
        var acc = 0.0;
        for (var j = lid; j < lid + SCAN_GROUP; j++) { let v = scan[j]; scan[j] = acc; acc += v; }
        group_base[gq] = acc;
    }
    workgroupBarrier();
    if lid == 0u {
        var acc = 0.0;
        for (var q = 0u; q < WG / SCAN_GROUP; q++) { let v = group_base[q]; group_base[q] = acc; acc += v; }
        red[0] = acc;
        ids[row] = fallback;  // replaced below unless rounding put the goal past every chunk
    }
    workgroupBarrier();
    let start = group_base[gq] + scan[lid];
    let end = group_base[gq] + (scan[lid] + kept);
    let goal = min(rp.w, 0.99999994) * red[0];
    if kept > 0.0 && goal >= start && goal < end {
        var acc = start;
        var pick = lo;
        var done = false;
        for (var i0 = lo; i0 < hi && !done; i0 += 8u) {  // eight loads in flight, then in order
            var l: array<f32, 8>;
            for (var e = 0u; e < 8u; e++) { l[e] = select(NONE, logit(base, i0 + e), i0 + e < hi); }
            for (var e = 0u; e < 8u; e++) {
                let q = select(0.0, exp((l[e] - top) / temp) / total, l[e] >= keep);
                if q > 0.0 && !done {
                    pick = i0 + e;
                    acc += q;
                    if acc > goal { done = true; }
                }
            }
        }
        ids[row] = pick;
    }
}
