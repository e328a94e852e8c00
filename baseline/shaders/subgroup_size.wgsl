// subgroup_size.wgsl: reports the subgroup size a 64-invocation workgroup runs with (adapters with
// subgroups; the engine reads it once at start-up to pick the lanes of its subgroup kernels).
// Binding 1: out [1] u32. Grid: (1, 1, 1).
@group(0) @binding(1) var<storage, read_write> out: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(subgroup_size) size: u32, @builtin(local_invocation_index) li: u32) {
    if li == 0u {
        out[0] = size;
    }
}
