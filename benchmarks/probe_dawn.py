"""Probe: can Dawn (the `wgpudawn` package, same Python API as wgpu-py) reach an adapter's
matrix units through WGSL subgroup matrices (`chromium_experimental_subgroup_matrix`)?

wgpu-native 29 lists its cooperative-matrix feature on NVIDIA but cannot enable it
(benchmarks/probe_coop.py). Dawn offers the same hardware as an experimental feature behind its
`allow_unsafe_apis` toggle. This script reports the adapter, its subgroup-matrix shapes, times
the product Y[T, R] = X[T, K] W[R, K]^T (the layout of the engine's prompt products) on each
f16 -> f32 and i8 -> i32 shape, checked against numpy, and the cost of a dependent dispatch in
Dawn and in wgpu-native (a chain of one-workgroup kernels that each read what the last wrote).
Nothing here is used by the engine. Needs `pip install wgpudawn` beside wgpu-py (for the lent
GPU machine: add `wgpudawn` to the specs given to ../shared/device/prepare.sh).

    python benchmarks/probe_dawn.py [--out FILE.json] [--no-chain]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


KERNEL = """
enable chromium_experimental_subgroup_matrix;

alias Left = subgroup_matrix_left<ELEM, KS, MS>;     // MS tokens x KS values of X
alias Right = subgroup_matrix_right<ELEM, NS, KS>;   // KS values x NS rows (W read transposed)
alias Acc = subgroup_matrix_result<ACC, NS, MS>;     // MS tokens x NS rows of Y

struct Shape { t: u32, r: u32, k: u32, unit: u32 }
@group(0) @binding(0) var<uniform> s: Shape;
@group(0) @binding(1) var<storage, read> x: array<STORE>;  // [T, K]
@group(0) @binding(2) var<storage, read> w: array<STORE>;  // [R, K]
@group(0) @binding(3) var<storage, read_write> y: array<ACC>;  // [T, R]

// One subgroup a workgroup (the loads' offsets must be workgroup-uniform), summing a
// (TM * MS) token x (TN * NS) row block straight from global memory. Offsets and strides are
// divided by s.unit (i8 packed four to a word: 1 if they count elements, 4 if words).
@compute @workgroup_size(SGSIZE)
fn main(@builtin(workgroup_id) wid: vec3<u32>) {
    let t0 = wid.y * (TM * MS);
    let r0 = wid.x * (TN * NS);
    let u = s.unit;
    var acc: array<array<Acc, TN>, TM>;
    for (var k0 = 0u; k0 < s.k; k0 += KS) {
        var a: array<Left, TM>;
        for (var i = 0u; i < TM; i++) {
            a[i] = subgroupMatrixLoad<Left>(&x, ((t0 + i * MS) * s.k + k0) / u, false, s.k / u);
        }
        for (var j = 0u; j < TN; j++) {
            let b = subgroupMatrixLoad<Right>(&w, ((r0 + j * NS) * s.k + k0) / u, true, s.k / u);
            for (var i = 0u; i < TM; i++) {
                acc[i][j] = subgroupMatrixMultiplyAccumulate(a[i], b, acc[i][j]);
            }
        }
    }
    for (var i = 0u; i < TM; i++) {
        for (var j = 0u; j < TN; j++) {
            subgroupMatrixStore(&y, (t0 + i * MS) * s.r + r0 + j * NS, acc[i][j], false, s.r);
        }
    }
}
"""
TILES = ((2, 2), (2, 4), (4, 2), (4, 4), (1, 4))  # (TM, TN) matrices a subgroup sums
# per element type: WGSL element, storage array element, accumulator, numpy input and output
TYPES = {"f16": ("f16", "f16", "f32", np.float16, np.float32), "i8": ("i8", "i32", "i32", np.int8, np.int32)}


def products(wgpu, device, config: dict, repeats: int) -> list[dict]:
    """Time and check Y = X W^T on one subgroup-matrix shape (T 1024, K 2048, R 2048)."""
    elem, store, acc, np_in, np_out = TYPES[config["component_type"]]
    ms, ns, ks, sg = config["m"], config["n"], config["k"], config["max_subgroup_size"]
    t, k, rows = 1024, 2048, 2048
    rng = np.random.default_rng(0)
    if np_in is np.int8:
        xs = rng.integers(-127, 128, (t, k), dtype=np.int8)
        ws = rng.integers(-127, 128, (rows, k), dtype=np.int8)
        ref = xs.astype(np.int64) @ ws.astype(np.int64).T
        units = (1, 4)
    else:
        xs = rng.standard_normal((t, k)).astype(np.float16)
        ws = (rng.standard_normal((rows, k)) / np.sqrt(k)).astype(np.float16)
        ref = xs.astype(np.float64) @ ws.astype(np.float64).T
        units = (1,)
    usage = wgpu.BufferUsage
    bx = device.create_buffer_with_data(data=xs.tobytes(), usage=usage.STORAGE)
    bw = device.create_buffer_with_data(data=ws.tobytes(), usage=usage.STORAGE)
    by = device.create_buffer(size=t * rows * 4, usage=usage.STORAGE | usage.COPY_SRC)
    out = []
    for unit in units:
        bs = device.create_buffer_with_data(data=np.array([t, rows, k, unit], np.uint32).tobytes(), usage=usage.UNIFORM)
        for tm, tn in TILES:
            row = {"config": f"{elem} {ms}x{ns}x{ks} tm{tm} tn{tn}", "unit": unit}
            src = KERNEL.replace("ELEM", elem).replace("STORE", store).replace("ACC", acc)
            for key, val in (("SGSIZE", f"{sg}u"), ("KS", ks), ("MS", ms), ("NS", ns), ("TM", f"{tm}u"), ("TN", f"{tn}u")):
                src = src.replace(key, str(val))
            if elem == "f16":
                src = "enable f16;\n" + src
            try:
                mod = device.create_shader_module(code=src)
                pipe = device.create_compute_pipeline(layout="auto", compute={"module": mod, "entry_point": "main"})
                bg = device.create_bind_group(layout=pipe.get_bind_group_layout(0), entries=[
                    {"binding": i, "resource": {"buffer": b}} for i, b in enumerate((bs, bx, bw, by))])
                secs = _timed(device, pipe, bg, (rows // (tn * ns), t // (tm * ms), 1), by, repeats)
                got = np.frombuffer(device.queue.read_buffer(by), np_out).reshape(t, rows)
                row.update(us=secs * 1e6, tera_ops=2 * t * rows * k / secs / 1e12,
                           max_rel_err=float(np.abs(got - ref).max() / np.abs(ref).max()))
            except Exception as e:  # noqa: BLE001 - a probe reports whatever fails
                row["error"] = repr(e)[-700:]
            print(row, flush=True)
            out.append(row)
    return out


def _timed(device, pipe, bg, grid, out, repeats: int) -> float:
    """Seconds per dispatch: `repeats` dispatches in one pass, best of three submissions."""
    from probe_coop import dispatch_seconds

    dispatch_seconds(device, pipe, bg, grid, 2, out)
    return min(dispatch_seconds(device, pipe, bg, grid, repeats, out) for _ in range(3)) / repeats


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--no-chain", action="store_true", help="skip the dependent-dispatch chains")
    args = ap.parse_args()
    report: dict = {}
    try:
        import wgpudawn as wgpu
        from wgpudawn.backends.dawn import extras
    except ImportError as e:
        print("wgpudawn is not installed:", e)
        return 1
    extras.set_instance_extras(backends=["Vulkan"], enable_toggles=["allow_unsafe_apis", "use_vulkan_memory_model"])
    try:
        adapter = wgpu.gpu.request_adapter_sync(power_preference="high-performance")
    except RuntimeError as e:  # e.g. lavapipe, which Dawn's Vulkan backend turns down
        adapter = None
        print(e)
    if adapter is None:
        print("no Dawn adapter")
        return 1
    report["adapter"] = {k: adapter.info[k] for k in ("device", "backend_type", "vendor", "architecture") if k in adapter.info}
    report["features"] = sorted(adapter.features)
    print("adapter:", report["adapter"])
    print("features:", report["features"])
    feature = "chromium-experimental-subgroup-matrix"
    configs = []
    try:
        configs = extras.get_adapter_properties(adapter).get("subgroup_matrix_configs", [])
    except Exception as e:  # noqa: BLE001 - a probe reports whatever fails
        report["props_error"] = repr(e)
    report["configs"] = configs
    print("subgroup matrix configs:", configs)
    usable = [c for c in configs if (c["component_type"], c["result_component_type"]) in (("f16", "f32"), ("i8", "i32"))]
    # shader-f16 only where the adapter offers it (Dawn withholds it on older NVIDIA drivers)
    need = [f for f in (feature, "shader-f16", "subgroups") if f in adapter.features]
    lim = adapter.limits
    device = adapter.request_device_sync(required_features=need, required_limits={
        "max-storage-buffer-binding-size": lim["max-storage-buffer-binding-size"], "max-buffer-size": lim["max-buffer-size"]})
    report["products"] = [r for c in usable for r in products(wgpu, device, c, args.repeats)]
    if not usable:
        print("no f16 or i8 subgroup matrices here")
    if not args.no_chain:
        report["chain_us"] = {"dawn": chain_us(wgpu, device)}
        try:
            import wgpu as wgpu_native
            nd = wgpu_native.gpu.request_adapter_sync(power_preference="high-performance").request_device_sync()
            report["chain_us"]["wgpu_native"] = chain_us(wgpu_native, nd)
        except Exception as e:  # noqa: BLE001
            report["chain_us"]["wgpu_native_error"] = repr(e)[:300]
        print("us per dependent dispatch:", report["chain_us"])
    _write(args.out, report)
    return 0


CHAIN = """
@group(0) @binding(0) var<storage, read_write> v: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) i: u32) { v[i] = v[i] * 0.5 + 1.0; }
"""


def chain_us(wgpu, device, n=200):
    """Microseconds per dispatch of n one-workgroup dispatches that each read what the last wrote."""
    buf = device.create_buffer(size=256, usage=wgpu.BufferUsage.STORAGE | wgpu.BufferUsage.COPY_SRC)
    mod = device.create_shader_module(code=CHAIN)
    pipe = device.create_compute_pipeline(layout="auto", compute={"module": mod, "entry_point": "main"})
    bg = device.create_bind_group(layout=pipe.get_bind_group_layout(0), entries=[{"binding": 0, "resource": {"buffer": buf}}])
    out = {}
    for passes in ("one pass", "pass each"):
        def run():
            enc = device.create_command_encoder()
            if passes == "one pass":
                p = enc.begin_compute_pass()
                p.set_pipeline(pipe)
                p.set_bind_group(0, bg)
                for _ in range(n):
                    p.dispatch_workgroups(1)
                p.end()
            else:
                for _ in range(n):
                    p = enc.begin_compute_pass()
                    p.set_pipeline(pipe)
                    p.set_bind_group(0, bg)
                    p.dispatch_workgroups(1)
                    p.end()
            cb = enc.finish()
            t0 = time.perf_counter()
            device.queue.submit([cb])
            device.queue.read_buffer(buf, 0, 4)
            return time.perf_counter() - t0
        run()
        out[passes] = min(run() for _ in range(5)) / n * 1e6
    return out


def _write(path: str, report: dict) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
