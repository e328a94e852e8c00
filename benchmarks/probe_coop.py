"""Can this adapter run WGSL cooperative matrices (tensor cores / simdgroup matrices)?

    python benchmarks/probe_coop.py [--adapter vulkan]

wgpu-native lists the feature as ``cooperative-matrix`` (experimental). This script asks for a
device with it and reports what happens; where the device comes, it checks which shapes and types
compile and give the right sums (8 x 8 f32, 8 x 8 and 16 x 16 f16 with an f16 or f32
accumulator), then times an f16 x f16 -> f32 product Y[T, R] = X[T, K] W[R, K]^T of prompt size
(T 1024, K 2048, R 8192) with each subgroup summing a block of 16 x 16 tiles straight from
memory. On the H100 with wgpu-native 29.0.1.1 the request is refused: experimental features are
off and its device descriptor has no field to turn them on (docs/performance.md, thirteenth
round). Nothing here is used by the engine.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import wgpu

TILE_SHAPES = [(8, "f32", "f32"), (8, "f16", "f32"), (8, "f16", "f16"), (16, "f16", "f32"), (16, "f16", "f16")]
GEMM_BLOCKS = [(2, 2, 4), (4, 2, 4), (2, 4, 4), (4, 4, 2), (4, 4, 4)]  # tiles along T, along R; subgroups


def tile_source(n: int, ab: str, cr: str) -> str:
    """One subgroup: c = a b + c and d = a b^T + d for n x n tiles of types ab (a, b) and cr."""
    enable = "enable f16;\n" if "f16" in (ab, cr) else ""
    return f"""{enable}enable wgpu_cooperative_matrix;
@group(0) @binding(0) var<storage, read_write> a: array<{ab}>;
@group(0) @binding(1) var<storage, read_write> b: array<{ab}>;
@group(0) @binding(2) var<storage, read_write> c: array<{cr}>;
@group(0) @binding(3) var<storage, read_write> d: array<{cr}>;
@compute @workgroup_size(32) fn main() {{
  let x = coopLoad<coop_mat{n}x{n}<{ab}, A>>(&a[0], {n}u);
  let y = coopLoad<coop_mat{n}x{n}<{ab}, B>>(&b[0], {n}u);
  var z = coopLoad<coop_mat{n}x{n}<{cr}, C>>(&c[0], {n}u);
  z = coopMultiplyAdd(x, y, z);
  coopStore(z, &c[0], {n}u);
  let yt = coopLoadT<coop_mat{n}x{n}<{ab}, B>>(&b[0], {n}u);
  var zt = coopLoad<coop_mat{n}x{n}<{cr}, C>>(&d[0], {n}u);
  zt = coopMultiplyAdd(x, yt, zt);
  coopStore(zt, &d[0], {n}u);
}}"""


def gemm_source(mt: int, nt: int, sg: int) -> str:
    """Y = X W^T with X, W f16 and Y f32: each of a workgroup's sg subgroups sums mt x nt tiles."""
    tiles = [(i, j) for i in range(mt) for j in range(nt)]
    decl = "\n".join(f"  var c{i}_{j} = coop_mat16x16<f32, C>();" for i, j in tiles)
    loads_a = "\n".join(
        f"    let a{i} = coopLoad<coop_mat16x16<f16, A>>(&x[(t0 + {i}u * 16u) * K + k], K);" for i in range(mt)
    )
    loads_b = "\n".join(
        f"    let b{j} = coopLoadT<coop_mat16x16<f16, B>>(&w[(r0 + {j}u * 16u) * K + k], K);" for j in range(nt)
    )
    fma = "\n".join(f"    c{i}_{j} = coopMultiplyAdd(a{i}, b{j}, c{i}_{j});" for i, j in tiles)
    store = "\n".join(f"  coopStore(c{i}_{j}, &y[(t0 + {i}u * 16u) * R + r0 + {j}u * 16u], R);" for i, j in tiles)
    return f"""enable f16;
enable wgpu_cooperative_matrix;
@group(0) @binding(0) var<storage, read_write> y: array<f32>;
@group(0) @binding(1) var<storage, read> x: array<f16>;
@group(0) @binding(2) var<storage, read> w: array<f16>;
@group(0) @binding(3) var<uniform> dims: vec4<u32>;  // T, R, K
@compute @workgroup_size({32 * sg})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {{
  let K = dims.z;
  let R = dims.y;
  let r0 = (wid.x * {sg}u + li / 32u) * {nt * 16}u;
  let t0 = wid.y * {mt * 16}u;
{decl}
  for (var k = 0u; k < K; k += 16u) {{
{loads_a}
{loads_b}
{fma}
  }}
{store}
}}"""


class Probe:
    def __init__(self, device: wgpu.GPUDevice):
        self.dev = device

    def buffer(self, arr: np.ndarray) -> wgpu.GPUBuffer:
        usage = wgpu.BufferUsage.STORAGE | wgpu.BufferUsage.COPY_SRC
        return self.dev.create_buffer_with_data(data=np.ascontiguousarray(arr).tobytes(), usage=usage)

    def pipeline(self, source: str) -> wgpu.GPUComputePipeline:
        module = self.dev.create_shader_module(code=source)
        return self.dev.create_compute_pipeline(layout="auto", compute={"module": module, "entry_point": "main"})

    def run(self, pipe: wgpu.GPUComputePipeline, buffers: list[wgpu.GPUBuffer], grid: tuple[int, int, int],
            reps: int = 1) -> float:  # fmt: skip
        """Seconds for ``reps`` dispatches of ``pipe`` in one submission, waited for."""
        entries = [{"binding": i, "resource": {"buffer": b}} for i, b in enumerate(buffers)]
        group = self.dev.create_bind_group(layout=pipe.get_bind_group_layout(0), entries=entries)
        return dispatch_seconds(self.dev, pipe, group, grid, reps, buffers[0])

    def read(self, buf: wgpu.GPUBuffer, dtype: type) -> np.ndarray:
        return np.frombuffer(self.dev.queue.read_buffer(buf), dtype)


def dispatch_seconds(dev, pipe, group, grid: tuple[int, int, int], reps: int, out) -> float:
    """Seconds for ``reps`` dispatches of ``pipe`` in one pass and one submission, waited for
    by reading 4 bytes of ``out`` (any device with wgpu-py's API: wgpu-native or Dawn)."""
    enc = dev.create_command_encoder()
    cp = enc.begin_compute_pass()
    cp.set_pipeline(pipe)
    cp.set_bind_group(0, group)
    for _ in range(reps):
        cp.dispatch_workgroups(*grid)
    cp.end()
    t0 = time.perf_counter()
    dev.queue.submit([enc.finish()])
    dev.queue.read_buffer(out, 0, 4)
    return time.perf_counter() - t0


def check_tiles(probe: Probe, rng: np.random.Generator) -> None:
    for n, ab, cr in TILE_SHAPES:
        np_ab = np.float16 if ab == "f16" else np.float32
        np_cr = np.float16 if cr == "f16" else np.float32
        a, b = (rng.standard_normal((n, n)).astype(np_ab) for _ in range(2))
        c = rng.standard_normal((n, n)).astype(np_cr)
        try:
            bc, bd = probe.buffer(c), probe.buffer(c)
            probe.run(probe.pipeline(tile_source(n, ab, cr)), [probe.buffer(a), probe.buffer(b), bc, bd], (1, 1, 1))
        except Exception as e:  # noqa: BLE001 - report whatever the adapter says
            print(f"{n}x{n} {ab} -> {cr}: refused: {str(e).strip()[:300]}")
            continue
        a64, b64, c64 = a.astype(np.float64), b.astype(np.float64), c.astype(np.float64)
        plain = np.abs(probe.read(bc, np_cr).reshape(n, n) - (a64 @ b64 + c64)).max()
        transposed = np.abs(probe.read(bd, np_cr).reshape(n, n) - (a64 @ b64.T + c64)).max()
        print(f"{n}x{n} {ab} -> {cr}: runs; max error a b + c {plain:.3g}, a b^T + c (coopLoadT) {transposed:.3g}")


def time_gemm(probe: Probe, rng: np.random.Generator) -> None:
    t, k, r = 1024, 2048, 8192
    x = (rng.standard_normal((t, k)) * 0.5).astype(np.float16)
    w = (rng.standard_normal((r, k)) * 0.02).astype(np.float16)
    ref = x.astype(np.float32) @ w.astype(np.float32).T
    bx, bw = probe.buffer(x), probe.buffer(w)
    dims = probe.dev.create_buffer_with_data(data=np.array([t, r, k, 0], np.uint32).tobytes(),
                                             usage=wgpu.BufferUsage.UNIFORM)  # fmt: skip
    for mt, nt, sg in GEMM_BLOCKS:
        grid = (r // (nt * 16 * sg), t // (mt * 16), 1)
        try:
            pipe, by = probe.pipeline(gemm_source(mt, nt, sg)), probe.buffer(np.zeros(t * r, np.float32))
            probe.run(pipe, [by, bx, bw, dims], grid)
            err = np.abs(probe.read(by, np.float32).reshape(t, r) - ref).max() / np.abs(ref).max()
            probe.run(pipe, [by, bx, bw, dims], grid, reps=5)  # warm up
            dt = probe.run(pipe, [by, bx, bw, dims], grid, reps=50) / 50
        except Exception as e:  # noqa: BLE001
            print(f"product, {mt} x {nt} tiles a subgroup, {sg} subgroups: failed: {str(e).strip()[:300]}")
            continue
        tflops = 2 * t * k * r / dt / 1e12
        print(f"product, {mt} x {nt} tiles a subgroup, {sg} subgroups: {dt * 1e6:.0f} us, "
              f"{tflops:.1f} TFLOP/s, max error / max |y| {err:.2e}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--adapter", default=None, help="backend name to prefer (vulkan, metal, ...)")
    args = ap.parse_args()
    adapters = wgpu.gpu.enumerate_adapters_sync()
    if args.adapter:
        adapters = [a for a in adapters if a.info["backend_type"].lower() == args.adapter.lower()] or adapters
    adapter = adapters[0]
    print(f"adapter: {adapter.info['device']} ({adapter.info['backend_type']})")
    if "cooperative-matrix" not in adapter.features:
        print("the adapter does not list 'cooperative-matrix'")
        return
    want = [f for f in ("cooperative-matrix", "shader-f16") if f in adapter.features]
    limits = {name: adapter.limits[name] for name in ("max-storage-buffer-binding-size", "max-buffer-size")}
    try:
        device = adapter.request_device_sync(required_features=want, required_limits=limits)
    except Exception as e:  # noqa: BLE001
        print(f"a device with {want} was refused: {str(e).strip()}")
        return
    probe, rng = Probe(device), np.random.default_rng(0)
    check_tiles(probe, rng)
    time_gemm(probe, rng)


if __name__ == "__main__":
    main()
