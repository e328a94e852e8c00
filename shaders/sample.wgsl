// sample.wgsl: choose one token per logits row on the GPU, so only ids are read back.
// Bindings: logits [R, V] f32 (read as vec4s: flat index f is logits[f / 4][f % 4]), params per
// row (temperature, top_p, top_k, u) f32 [R, 4], ids [R] u32 out, allowed [ceil(V / 32)] u32:
// bit i set when id i may be chosen (ids the tokenizer cannot decode are cleared).
// Grid: (R, 1); one workgroup of WG invocations per row (WG a power of two, at least NB).
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
@group(0) @binding(2) var<storage, read> logits: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> row_params: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> ids: array<u32>;
@group(0) @binding(5) var<storage, read> allowed: array<u32>;

const NONE: f32 = -3.0e38;  // the logit of an id that may not be chosen
const PAD: f32 = -3.4e38;  // below every logit: fills the sort's unused places
const QN: u32 = 2u;  // vec4 loads in flight per invocation in a pass over the row (4 or 8 measured slower on an H100)

// Whether id i lies in the row and may be chosen.
fn may(i: u32) -> bool {
    return i < p.v && ((allowed[i >> 5u] >> (i & 31u)) & 1u) == 1u;
}

// A row's logits in vec4s ("quads"): quad j of the row holds ids 4 j - s .. 4 j - s + 3, where
// s = base % 4 (a row of V % 4 != 0 may start inside a vec4; ids outside the row read NONE).
fn row_quads(base: u32) -> u32 {
    return ((base & 3u) + p.v + 3u) / 4u;
}

fn quad_id(base: u32, j: u32, c: u32) -> u32 {
    return 4u * j + c - (base & 3u);  // wraps past 2^32 before an unaligned row: not an id
}

// Quad j of the row with NONE where the id may not be chosen or lies outside the row.
fn quad(base: u32, j: u32) -> vec4<f32> {
    let v = logits[(base >> 2u) + j];
    let i0 = quad_id(base, j, 0u);
    var ok: vec4<bool>;
    if (base & 3u) == 0u && i0 + 3u < p.v {  // four ids of one mask word (i0 % 4 == 0)
        let bits = vec4<u32>(allowed[i0 >> 5u] >> (i0 & 31u)) >> vec4<u32>(0u, 1u, 2u, 3u);
        ok = (bits & vec4<u32>(1u)) == vec4<u32>(1u);
    } else {
        ok = vec4<bool>(may(i0), may(i0 + 1u), may(i0 + 2u), may(i0 + 3u));
    }
    return select(vec4<f32>(NONE), v, ok);
}

// Quads j, j + WG, ..., j + (QN - 1) WG (QN loads in flight per invocation: one workgroup reads
// the whole row, so it must not wait on one load at a time); NONE past the row.
fn quads(base: u32, nq: u32, j: u32) -> array<vec4<f32>, QN> {
    var out: array<vec4<f32>, QN>;
    for (var k = 0u; k < QN; k++) {
        out[k] = vec4<f32>(NONE);
        if j + k * WG < nq { out[k] = quad(base, j + k * WG); }
    }
    return out;
}

// Quads j .. j + QN - 1 (a contiguous run, for passes in index order); NONE from `end` on.
fn quads_run(base: u32, end: u32, j: u32) -> array<vec4<f32>, QN> {
    var out: array<vec4<f32>, QN>;
    for (var k = 0u; k < QN; k++) {
        out[k] = vec4<f32>(NONE);
        if j + k < end { out[k] = quad(base, j + k); }
    }
    return out;
}

var<workgroup> red_i: array<u32, WG>;
var<workgroup> red2: array<vec2<f32>, WG>;
var<workgroup> scan: array<f32, WG>;
var<workgroup> row_p: vec4<f32>;
const SCAN_GROUP: u32 = 32u;  // invocations per group of the prefix sum (WG is a multiple of it)
var<workgroup> group_base: array<f32, WG / SCAN_GROUP>;
var<workgroup> scan_total: f32;

// Component-wise max of `v` over the workgroup.
fn reduce_max2(lid: u32, v: vec2<f32>) -> vec2<f32> {
    red2[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s { red2[lid] = max(red2[lid], red2[lid + s]); }
        workgroupBarrier();
    }
    let m = red2[0];
    workgroupBarrier();
    return m;
}

const CUTS: u32 = 24u;  // bisection steps of the fallback threshold search

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

// (mass, count) summed over the workgroup.
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

// Where `v` starts and ends in the running sum over invocations in lid order, as (start, end),
// and the whole sum in `scan_total`: 32 invocations at a time walked by their first one, then the
// groups' totals by invocation 0. An invocation's end is the next one's start (the same
// additions), so the spans tile [0, total) exactly. Every invocation calls it.
fn prefix_sum(lid: u32, v: f32) -> vec2<f32> {
    scan[lid] = v;
    workgroupBarrier();
    let gq = lid / SCAN_GROUP;
    if lid % SCAN_GROUP == 0u {
        var acc = 0.0;
        for (var j = lid; j < lid + SCAN_GROUP; j++) { let w = scan[j]; scan[j] = acc; acc += w; }
        group_base[gq] = acc;
    }
    workgroupBarrier();
    if lid == 0u {
        var acc = 0.0;
        for (var q = 0u; q < WG / SCAN_GROUP; q++) { let w = group_base[q]; group_base[q] = acc; acc += w; }
        scan_total = acc;
    }
    workgroupBarrier();
    let out = vec2<f32>(group_base[gq] + scan[lid], group_base[gq] + (scan[lid] + v));
    workgroupBarrier();
    return out;
}

// The row's softmax, set once by main: p(v) = exp2((v - top) * k2) * inv_total, k2 = log2(e) / T
// (multiplications: a pass over the row is bound by the instructions one workgroup issues).
var<private> top: f32;
var<private> k2: f32;
var<private> inv_total: f32;
const LOG2E: f32 = 1.4426950408889634;

fn prob(v: f32) -> f32 {
    return exp2((v - top) * k2) * inv_total;
}

fn prob4(v: vec4<f32>) -> vec4<f32> {
    return exp2((v - top) * k2) * inv_total;
}

// The weight of a logit: 1 (counting, for top_k) or its probability (top_p).
fn weight(v: f32, by_count: bool) -> f32 {
    return select(prob(v), 1.0, by_count);
}

// (mass, count) over the row of the tokens whose logit reaches `c`; every invocation calls it.
fn kept_sums(lid: u32, base: u32, c: f32) -> vec2<f32> {
    let nq = row_quads(base);
    var mass = vec4<f32>(0.0);
    var cnt = vec4<f32>(0.0);
    for (var j = lid; j < nq; j += QN * WG) {
        let l = quads(base, nq, j);
        for (var k = 0u; k < QN; k++) {
            let keep = l[k] >= vec4<f32>(c);
            mass += select(vec4<f32>(0.0), prob4(l[k]), keep);
            cnt += select(vec4<f32>(0.0), vec4<f32>(1.0), keep);
        }
    }
    return reduce_pair(lid, vec2<f32>(dot(mass, vec4<f32>(1.0)), dot(cnt, vec4<f32>(1.0))));
}

const CAND: u32 = 2048u;  // candidates a cut search can hold in workgroup memory (a power of two)
var<workgroup> cand: array<f32, CAND>;  // their logits
var<workgroup> n_cand: atomic<u32>;
var<workgroup> n_seen: u32;
var<workgroup> picked: u32;

// The cut among n candidates (in `cand`, any order): the highest candidate c such that `above`
// plus the weight of the candidates >= c reaches `goal` (callers have above < goal); the lowest
// candidate when rounding leaves the goal past them all, `lo` when there are none. The
// candidates are sorted (bitonic, highest first), their weights summed in that order, and the
// first place the sum reaches the goal is the cut: the same set {l >= c} as sorting the whole
// row would give. Every invocation calls it (n uniform).
fn cut_in_candidates(lid: u32, n: u32, lo: f32, above: f32, goal: f32, by_count: bool) -> f32 {
    var n2 = 1u;
    while n2 < n { n2 <<= 1u; }
    for (var j = n + lid; j < n2; j += WG) { cand[j] = PAD; }
    workgroupBarrier();
    for (var size = 2u; size <= n2; size <<= 1u) {
        for (var stride = size >> 1u; stride > 0u; stride >>= 1u) {
            for (var t = lid; t < n2 / 2u; t += WG) {
                let i = 2u * t - (t & (stride - 1u));  // the lower place of the pair
                let a = cand[i];
                let b = cand[i + stride];
                // pairs within a block of `size` sort highest first when the block's bit is clear
                if (a < b) == ((i & size) == 0u) {
                    cand[i] = b;
                    cand[i + stride] = a;
                }
            }
            workgroupBarrier();
        }
    }
    // each invocation a contiguous run of the sorted candidates
    let run = max(n2 / WG, 1u);
    let r0 = min(lid * run, n);
    let r1 = min(r0 + run, n);
    var part = 0.0;
    for (var j = r0; j < r1; j++) { part += weight(cand[j], by_count); }
    if lid == 0u { picked = n; }  // stays unless some run holds the goal
    let span = prefix_sum(lid, part);
    let g = goal - above;
    // the spans (start, end] tile (0, total], so at most one run holds g: it finds the place
    if part > 0.0 && g > span.x && g <= span.y {
        var acc = span.x;
        var k = r1 - 1u;
        for (var j = r0; j < r1; j++) {
            acc += weight(cand[j], by_count);
            if acc >= g { k = j; break; }
        }
        picked = k;
    }
    let k = workgroupUniformLoad(&picked);
    if k < n { return cand[k]; }
    if n > 0u { return cand[n - 1u]; }
    return lo;
}

// A cut search that reads the row two or three times instead of CUTS times: a histogram of the
// weights (count, or mass in fixed point) of the logits in [lo, lo + span] over NB bins finds
// the bin where the cut lies; that bin's logits go to `cand` and the weight of those above it is
// summed exactly; the cut is then found among the candidates. Where the bin holds more than
// CAND logits, or the fixed-point sums pointed at the wrong bin (checked exactly), a bisection
// over the row runs instead.
const NB: u32 = 256u;  // histogram bins
const MASS_SCALE: f32 = 2147483648.0;  // 2^31: a logit's mass in the histogram, in units of 2^-31
var<workgroup> hist: array<atomic<u32>, NB>;

// Bin of logit v in [lo, lo + NB / scale]: nondecreasing in v, so higher bins hold higher logits.
fn bin_of(v: f32, lo: f32, scale: f32) -> u32 {
    return min(u32(max((v - lo) * scale, 0.0)), NB - 1u);
}

// bin_of's scale for the range [lo, hi].
fn bin_scale(lo: f32, hi: f32) -> f32 {
    return f32(NB) / max(hi - lo, 1e-30);
}

// Whether logit v goes to `cand`: it reaches lo and, unless `bin` is NB (any bin), lies in that bin.
fn hit(v: f32, lo: f32, scale: f32, bin: u32) -> bool {
    return v >= lo && (bin == NB || bin_of(v, lo, scale) == bin);
}

// Append the `hits` logits of l that hit() to `cand` with one atomic for them all (an atomic per
// logit would queue every invocation on n_cand); only the first CAND are kept.
fn append(l: array<vec4<f32>, QN>, hits: u32, lo: f32, scale: f32, bin: u32) {
    var slot = atomicAdd(&n_cand, hits);
    for (var k = 0u; k < QN; k++) {
        for (var c = 0u; c < 4u; c++) {
            if hit(l[k][c], lo, scale, bin) {
                if slot < CAND { cand[slot] = l[k][c]; }
                slot++;
            }
        }
    }
}

// The histogram of the logits >= lo (see above); with `gather`, those logits also go to `cand`
// (in any order; the first CAND of them). Returns how many reach lo when gathering (0
// otherwise). Every invocation calls it.
fn row_hist(lid: u32, base: u32, lo: f32, hi: f32, gather: bool, by_count: bool) -> u32 {
    if lid < NB { atomicStore(&hist[lid], 0u); }
    if lid == 0u { atomicStore(&n_cand, 0u); }
    workgroupBarrier();
    let nq = row_quads(base);
    let scale = bin_scale(lo, hi);
    for (var j = lid; j < nq; j += QN * WG) {
        let l = quads(base, nq, j);
        var hits = 0u;
        for (var k = 0u; k < QN; k++) {
            for (var c = 0u; c < 4u; c++) {
                let v = l[k][c];
                if v >= lo {
                    let w = select(u32(prob(v) * MASS_SCALE), 1u, by_count);
                    atomicAdd(&hist[bin_of(v, lo, scale)], w);
                    hits++;
                }
            }
        }
        if gather && hits > 0u { append(l, hits, lo, scale, NB); }
    }
    workgroupBarrier();
    if lid == 0u { n_seen = atomicLoad(&n_cand); }
    return workgroupUniformLoad(&n_seen);
}

// The highest cut in [lo, hi] keeping a weight of at least `goal` (tokens for top_k, mass for
// top_p), given the histogram row_hist(lo, hi) left. lo keeps at least `goal`. Every
// invocation calls it.
fn cut_by_hist(lid: u32, base: u32, lo: f32, hi: f32, goal: f32, by_count: bool) -> f32 {
    let scale = bin_scale(lo, hi);
    // the highest bin whose weight from the top reaches the goal: sums from the top (exact in
    // u32: masses sum to at most 2^31, counts to V), one bin per invocation
    if lid < NB { red_i[lid] = atomicLoad(&hist[lid]); }
    workgroupBarrier();
    for (var s = 1u; s < NB; s <<= 1u) {
        var w = 0u;
        if lid + s < NB { w = red_i[lid + s]; }
        workgroupBarrier();
        if lid < NB { red_i[lid] += w; }
        workgroupBarrier();
    }
    let want = select(goal * MASS_SCALE, goal, by_count);
    if lid == 0u { picked = 0u; }
    workgroupBarrier();
    if lid < NB && f32(red_i[lid]) >= want && (lid == NB - 1u || f32(red_i[lid + 1u]) < want) {
        picked = lid;
    }
    let jb = workgroupUniformLoad(&picked);
    // that bin's logits as candidates, the weight above it summed exactly
    if lid == 0u { atomicStore(&n_cand, 0u); }
    workgroupBarrier();
    let nq = row_quads(base);
    var sums = vec2<f32>(0.0);  // the weight above the bin, the weight in it
    for (var j = lid; j < nq; j += QN * WG) {
        let l = quads(base, nq, j);
        var hits = 0u;
        for (var k = 0u; k < QN; k++) {
            for (var c = 0u; c < 4u; c++) {
                let v = l[k][c];
                if v >= lo {
                    let b = bin_of(v, lo, scale);
                    if b > jb {
                        sums.x += weight(v, by_count);
                    } else if b == jb {
                        sums.y += weight(v, by_count);
                        hits++;
                    }
                }
            }
        }
        if hits > 0u { append(l, hits, lo, scale, jb); }
    }
    workgroupBarrier();
    if lid == 0u { n_seen = atomicLoad(&n_cand); }
    let n = workgroupUniformLoad(&n_seen);
    let all = reduce_pair(lid, sums);
    // the cut lies in this bin, whose logits all fit in workgroup memory
    if lid == 0u { picked = select(0u, 1u, n > 0u && n <= CAND && all.x < goal && all.x + all.y >= goal); }
    if workgroupUniformLoad(&picked) == 1u {
        return cut_in_candidates(lid, n, lo, all.x, goal, by_count);
    }
    var keep = lo;  // the plain bisection over the row
    var top_c = hi;
    for (var it = 0u; it < CUTS; it++) {
        let mid = 0.5 * (keep + top_c);
        let kept = kept_sums(lid, base, mid);
        if select(kept.x, kept.y, by_count) >= goal { keep = mid; } else { top_c = mid; }
    }
    return keep;
}

// The highest cut in [lo, hi] keeping a weight of at least `goal`; lo keeps at least `goal`.
fn search_cut(lid: u32, base: u32, lo: f32, hi: f32, goal: f32, by_count: bool) -> f32 {
    row_hist(lid, base, lo, hi, false, by_count);
    return cut_by_hist(lid, base, lo, hi, goal, by_count);
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
    let nq = row_quads(base);
    // Passes whose order does not matter stride through the row (neighbouring invocations read
    // neighbouring vec4s); the final pass gives each invocation one contiguous run, so that runs
    // follow index order.
    if temp <= 0.0 {
        // argmax: the lowest index holding the maximum
        var m = NONE;
        var arg = 0xffffffffu;
        for (var j = lid; j < nq; j += QN * WG) {
            let l = quads(base, nq, j);
            for (var k = 0u; k < QN; k++) {  // in index order: the lowest index of a maximum is kept
                for (var c = 0u; c < 4u; c++) {
                    if l[k][c] > m { m = l[k][c]; arg = quad_id(base, j + k * WG, c); }
                }
            }
        }
        let best = reduce_max2(lid, vec2<f32>(m, 0.0)).x;
        let first = reduce_index(lid, select(0xffffffffu, arg, m == best), true);
        if lid == 0u { ids[row] = first; }
        return;
    }
    // The maximum, the lowest logit that may be chosen, and the sum of exp((l - m) / T) against
    // each invocation's running maximum m (rescaled when m grows), so that the softmax total
    // needs no pass of its own.
    k2 = LOG2E / temp;
    var m = NONE;
    var low = -NONE;
    var z = 0.0;
    for (var j = lid; j < nq; j += QN * WG) {
        let l = quads(base, nq, j);
        for (var k = 0u; k < QN; k++) {
            let q = l[k];
            let ok = q > vec4<f32>(NONE);
            let qm = max(max(q.x, q.y), max(q.z, q.w));
            if qm > m {
                z *= exp2((m - qm) * k2);  // 0 while m is NONE
                m = qm;
            }
            z += dot(select(vec4<f32>(0.0), exp2((q - m) * k2), ok), vec4<f32>(1.0));
            let ql = select(vec4<f32>(-NONE), q, ok);
            low = min(low, min(min(ql.x, ql.y), min(ql.z, ql.w)));
        }
    }
    let ends = reduce_max2(lid, vec2<f32>(m, -low));
    top = ends.x;
    let bottom = -ends.y;  // the lowest logit that may be chosen
    let total = reduce_sum(lid, select(0.0, z * exp2((m - top) * k2), z > 0.0));
    inv_total = 1.0 / total;
    let top_p = rp.y;
    let top_k = rp.z;
    // The kept set is {l >= keep}, as Sampler does it: top_k keeps the k most likely tokens (the
    // highest cut keeping >= k), then top_p the fewest of those holding top_p of their mass (the
    // highest cut above that one which still does).
    let by_k = top_k > 0.0 && top_k < f32(p.v);  // top_k leaves some ids out
    var keep = NONE * 1.1;  // everything (the ids that may not be chosen get no mass)
    if by_k || top_p < 1.0 {
        keep = bottom;
    }
    if by_k {
        keep = search_cut(lid, base, keep, top, top_k, true);
    }
    if top_p < 1.0 {
        if by_k {
            // of the mass top_k kept
            let goal = top_p * kept_sums(lid, base, keep).x;
            keep = search_cut(lid, base, keep, top, goal, false);
        } else {
            // of every id that may be chosen: 1 (the numpy rule's sum). Every token the nucleus
            // keeps has p >= (1 - top_p) / V (the others hold less than 1 - top_p together), so
            // the cut lies above that floor: one pass gathers the logits above it (when few, a
            // peaked distribution, the cut is found among them in workgroup memory) and bins
            // their mass for the histogram search (a flat one).
            let floor_c = max(keep, top + temp * log((1.0 - top_p) / f32(p.v) * total));
            let n = row_hist(lid, base, floor_c, top, true, false);
            if n <= CAND {
                keep = cut_in_candidates(lid, n, floor_c, 0.0, top_p, false);
            } else {
                keep = cut_by_hist(lid, base, floor_c, top, top_p, false);
            }
        }
    }
    // the kept mass of each invocation's contiguous run of quads, in index order
    let run = (nq + WG - 1u) / WG;
    let q0 = min(lid * run, nq);
    let q1 = min(q0 + run, nq);
    var kept = 0.0;
    var last = 0u;  // the highest kept index: the pick when rounding leaves the goal past the end
    for (var j = q0; j < q1; j += QN) {
        let l = quads_run(base, q1, j);
        for (var k = 0u; k < QN; k++) {
            for (var c = 0u; c < 4u; c++) {
                let v = l[k][c];
                if v >= keep {
                    let q = prob(v);
                    if q > 0.0 { kept += q; last = quad_id(base, j + k, c); }
                }
            }
        }
    }
    if lid == 0u { picked = 0xffffffffu; }  // replaced below unless rounding put the goal past every run
    let span = prefix_sum(lid, kept);
    let goal = min(rp.w, 0.99999994) * scan_total;
    if kept > 0.0 && goal >= span.x && goal < span.y {  // at most one invocation: the spans tile
        var acc = span.x;
        var pick = 0u;
        var done = false;
        for (var j = q0; j < q1 && !done; j += QN) {  // QN loads in flight, then in order
            let l = quads_run(base, q1, j);
            for (var k = 0u; k < QN; k++) {
                for (var c = 0u; c < 4u; c++) {
                    let v = l[k][c];
                    let q = select(0.0, prob(v), v >= keep);
                    if q > 0.0 && !done {
                        pick = quad_id(base, j + k, c);
                        acc += q;
                        if acc > goal { done = true; }
                    }
                }
            }
        }
        picked = pick;
    }
    var id = workgroupUniformLoad(&picked);
    if id == 0xffffffffu { id = reduce_index(lid, last, false); }  // the highest kept id
    if lid == 0u { ids[row] = id; }
}
