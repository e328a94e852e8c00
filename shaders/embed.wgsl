// embed.wgsl: `gather`, x[t, c] = table[ids[t], c] for the step's T tokens: the embedding rows
// of token ids that an earlier kernel chose (the sampling kernel's output), so a decoding step
// can follow the previous one without the host reading the id first.
// Bindings: ids u32 [T] (binding 2), x f32 [T, x_stride] at element offset x_off (binding 3),
// the table [V, C] in up to four parts of part_rows rows (bindings 4-7; unused parts repeat the
// first), each row row_words u32: f16 pairs, low half first (F16 = 1), or f32 bits (F16 = 0).
// Grid: (ceil(C / WG), T).
struct Params {
    c: u32,
    x_off: u32,
    x_stride: u32,
    part_rows: u32,
    row_words: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}
@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> x: array<f32>;
@group(0) @binding(4) var<storage, read> part0: array<u32>;
@group(0) @binding(5) var<storage, read> part1: array<u32>;
@group(0) @binding(6) var<storage, read> part2: array<u32>;
@group(0) @binding(7) var<storage, read> part3: array<u32>;

override WG: u32 = 64u;
override F16: u32 = 1u;

// Word i of table part `part` (bindings cannot be indexed, so a switch picks one).
fn table_word(part: u32, i: u32) -> u32 {
    switch part {
        case 0u: { return part0[i]; }
        case 1u: { return part1[i]; }
        case 2u: { return part2[i]; }
        default: { return part3[i]; }
    }
}

@compute @workgroup_size(WG)
fn gather(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    let t = gid.y;
    if c >= p.c || t >= count.n { return; }
    let id = ids[t];
    let part = id / p.part_rows;
    let base = (id % p.part_rows) * p.row_words;
    var v: f32;
    if F16 == 1u {
        let pair = unpack2x16float(table_word(part, base + c / 2u));
        v = select(pair.x, pair.y, (c & 1u) == 1u);
    } else {
        v = bitcast<f32>(table_word(part, base + c));
    }
    x[p.x_off + t * p.x_stride + c] = v;
}
