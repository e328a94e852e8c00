import numpy as np
import pytest

import rwkv_webgpu as rw
from rwkv_webgpu.gpu import Counter, Graph, act_buffer, upload_matrix
from rwkv_webgpu.ops import matmul


def run_matmul(device, w, x, act="none", y0=None, accumulate=False, max_binding=None, kernel=None):
    t, k = x.shape
    g = Graph(device)
    cnt = Counter(device, "n")
    xa = act_buffer(device, t, k, "x")
    ya = act_buffer(device, t, w.shape[0], "y")
    device.write(xa.buffer, x.astype(np.float32))
    if y0 is not None:
        device.write(ya.buffer, y0.astype(np.float32))
    m = upload_matrix(device, w, "w")
    matmul(g, cnt, xa, m, ya, act=act, accumulate=accumulate, kernel=kernel)
    cnt.set(t)
    g.run()
    return device.read(ya.buffer)[: t * w.shape[0]].reshape(t, w.shape[0]), m


def oracle(w, x, act):
    y = x.astype(np.float64) @ w.astype(np.float16).astype(np.float64).T
    return {"none": y, "tanh": np.tanh(y), "sigmoid": 1 / (1 + np.exp(-y)), "relu_sq": np.maximum(y, 0) ** 2,
            "silu": y / (1 + np.exp(-y))}[act]  # fmt: skip


# T < 48 runs the GEMV-style kernel, T >= 48 the tiled one (edges of its 64 x 64 x 32 tiles too)
@pytest.mark.parametrize(
    "t,k,r",
    [(1, 8, 4), (1, 13, 7), (3, 64, 33), (5, 100, 3), (9, 256, 129), (15, 40, 70),
     (16, 8, 1), (17, 37, 65), (47, 24, 9), (48, 8, 1), (64, 32, 64), (70, 100, 129), (129, 264, 67)],
)  # fmt: skip
@pytest.mark.parametrize("act", ["none", "tanh", "sigmoid", "relu_sq", "silu"])
def test_matmul_matches_numpy(device, t, k, r, act):
    """The kernel the adapter would choose for this token count."""
    rng = np.random.default_rng(t * 1000 + k + r)
    w = rng.standard_normal((r, k)).astype(np.float32) / np.sqrt(k)
    x = rng.standard_normal((t, k)).astype(np.float32)
    y, _ = run_matmul(device, w, x, act)
    np.testing.assert_allclose(y, oracle(w, x, act), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel", ["gemv", "tiled", "rowwise", "rows4", "tile8", "subgroup", "decode", "big", "split", "tall", "big_split", "tile16", "rows32", "decode_split", "decode_parts"])
@pytest.mark.parametrize("t,k,r", [(1, 13, 7), (5, 100, 3), (17, 37, 65), (70, 100, 129), (131, 264, 257), (33, 2100, 70)])
def test_every_matmul_kernel(device, kernel, t, k, r):
    """Each kernel variant on every adapter, whatever that adapter would pick by itself."""
    if kernel in ("subgroup", "decode", "decode_split", "decode_parts") and not device.info.subgroup:
        pytest.skip("adapter without subgroups")
    rng = np.random.default_rng(t + k + r)
    w = rng.standard_normal((r, k)).astype(np.float32) / np.sqrt(k)
    x = rng.standard_normal((t, k)).astype(np.float32)
    y0 = rng.standard_normal((t, r)).astype(np.float32)
    y, _ = run_matmul(device, w, x, "tanh", y0=y0, accumulate=True, kernel=kernel)
    np.testing.assert_allclose(y, y0 + oracle(w, x, "tanh"), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel", ["gemv", "tiled", "rowwise", "rows4", "tile8", "subgroup", "decode", "big", "split", "tall", "big_split", "tile16", "rows32", "decode_split", "decode_parts"])
@pytest.mark.parametrize("t,k,r", [(1, 13, 7), (17, 37, 65), (70, 100, 129), (33, 2100, 70)])
def test_every_kernel_adds_times_a_gate(device, kernel, t, k, r):
    """y += gate * act(W x) with the gate in y's own buffer (the plane after y), per kernel."""
    if kernel in ("subgroup", "decode", "decode_split", "decode_parts") and not device.info.subgroup:
        pytest.skip("adapter without subgroups")
    rng = np.random.default_rng(t * 7 + k + r)
    w = rng.standard_normal((r, k)).astype(np.float32) / np.sqrt(k)
    x = rng.standard_normal((t, k)).astype(np.float32)
    y0, gate = rng.standard_normal((2, t, r)).astype(np.float32)
    g, cnt = Graph(device), Counter(device, "n")
    xa, ya = act_buffer(device, t, k, "x"), act_buffer(device, t, r, "y", planes=2)
    device.write(xa.buffer, x)
    device.write(ya.buffer, np.stack([y0, gate]))
    matmul(g, cnt, xa, upload_matrix(device, w, "w"), ya, act="relu_sq", gate=ya.at(t * r), kernel=kernel)
    cnt.set(t)
    g.run()
    got = device.read(ya.buffer)[: 2 * t * r].reshape(2, t, r)
    np.testing.assert_allclose(got[0], y0 + gate * oracle(w, x, "relu_sq"), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got[1], gate)  # the gate is read, never written
    with pytest.raises(rw.ShapeError, match="gate"):
        matmul(g, cnt, xa, upload_matrix(device, w, "w"), ya, gate=xa)


def test_matmul_accumulates(device):
    rng = np.random.default_rng(1)
    w = rng.standard_normal((10, 24)).astype(np.float32)
    x = rng.standard_normal((6, 24)).astype(np.float32)
    y0 = rng.standard_normal((6, 10)).astype(np.float32)
    y, _ = run_matmul(device, w, x, y0=y0, accumulate=True)
    np.testing.assert_allclose(y, y0 + oracle(w, x, "none"), rtol=1e-5, atol=1e-5)


def test_matrix_split_across_bindings(device, monkeypatch):
    """A matrix larger than one binding is cut in row blocks and gives the same product."""
    import dataclasses

    small = dataclasses.replace(device.info, max_binding_size=16 * 40)  # 40 rows of 16 bytes (k=8)
    monkeypatch.setattr(device, "info", small)
    rng = np.random.default_rng(2)
    w = rng.standard_normal((101, 8)).astype(np.float32)
    x = rng.standard_normal((3, 8)).astype(np.float32)
    y, m = run_matmul(device, w, x)
    assert len(m.parts) == 3
    np.testing.assert_allclose(y, oracle(w, x, "none"), rtol=1e-5, atol=1e-5)


def test_kernel_choice_on_gpus(device, monkeypatch):
    """Which kernel a GPU with subgroups runs for the matrices of a 1.5B model at each step size."""
    import dataclasses
    import importlib

    from rwkv_webgpu.ops.matmul import _choose

    mm = importlib.import_module("rwkv_webgpu.ops.matmul")  # the module (ops.matmul is the function)
    gpu = dataclasses.replace(device.info, adapter_type="DiscreteGPU", subgroup=True, subgroup_size=32)
    monkeypatch.setattr(device, "info", gpu)
    g = Graph(device)

    def picks(rows, k):
        grids = _choose(g, rows, None, k)
        out = {}
        for n in (1, 2, 8, 16, 32, 64, 128, 192, 256, 512, 1024, 2048):
            live = [name for name, grid in grids if grid(n) != (0, 0, 0)]
            assert len(live) == 1, (rows, k, n, live)
            out[n] = live[0]
        return out

    # 512 and 1024 tokens: 64 and 128 tiles of 128 x 128 would leave SMs with one workgroup, so
    # K is cut in 4 and 2 parts (big_split); 2048 tokens fill the GPU with whole tiles
    assert picks(2048, 2048) == {1: "decode", 2: "decode", 8: "decode", 16: "subgroup", 32: "tall", 64: "tall",
                                 128: "tall", 192: "split", 256: "tiled", 512: "big_split", 1024: "big_split",
                                 2048: "big"}  # fmt: skip
    assert picks(2048, 8192)[1] == "decode_parts" and picks(2048, 8192)[2] == "decode"
    assert picks(64, 40960)[1] == "decode_split"  # 20 parts x 16 lanes: more than one workgroup holds
    with pytest.raises(ValueError, match="too many parts"):
        _choose(g, 64, "decode_parts", 40960)
    monkeypatch.setattr(mm, "DECODE_PARTS", False)
    assert picks(2048, 8192)[1] == "decode_split"
    monkeypatch.setattr(mm, "DECODE_SPLIT", False)
    assert picks(2048, 8192)[1] == "gemv"
    monkeypatch.setattr(mm, "DECODE_SPLIT", True)
    assert picks(8192, 2048) == {1: "decode", 2: "decode", 8: "subgroup", 16: "subgroup", 32: "tall",
                                 64: "tall", 128: "tall", 192: "big", 256: "big", 512: "big", 1024: "big",
                                 2048: "big"}  # fmt: skip
    assert picks(160, 2048)[64] == "split"  # LoRA halves: 64 x 64 tiles, 16 K parts
    assert picks(2048, 160)[64] == "subgroup"  # K too short to split
    no_sub = dataclasses.replace(gpu, subgroup=False, subgroup_size=0)
    monkeypatch.setattr(device, "info", no_sub)
    assert set(picks(2048, 2048).values()) == {"gemv", "tall", "tiled", "big_split", "big"}


@pytest.mark.parametrize("kernel", ["rows4", "rows32", "tile8", "tile16"])
@pytest.mark.parametrize("t,r", [(1, 512), (1, 515), (1, 6), (3, 13), (16, 70), (50, 9), (33, 35)])
def test_register_tiles_sum_like_rowwise(device, kernel, t, r):
    """Several rows (and tokens) per invocation (CPU adapters) give the row-per-invocation sums bit
    for bit, rows and tokens past a multiple of the tile included."""
    rng = np.random.default_rng(r + t)
    w = rng.standard_normal((r, 100)).astype(np.float32) / 10
    x = rng.standard_normal((t, 100)).astype(np.float32)
    tiles, _ = run_matmul(device, w, x, "none", kernel=kernel)
    one, _ = run_matmul(device, w, x, "none", kernel="rowwise")
    np.testing.assert_array_equal(tiles, one)
    np.testing.assert_allclose(tiles, oracle(w, x, "none"), rtol=1e-5, atol=1e-5)


def test_kernel_choice_on_cpu_adapters(device, monkeypatch):
    import dataclasses

    from rwkv_webgpu.ops.matmul import ROWS4_MIN_ROWS, ROWS32_MIN_ROWS, _choose

    monkeypatch.setattr(device, "info", dataclasses.replace(device.info, adapter_type="CPU"))
    g = Graph(device)

    def live(rows, n):
        return [name for name, grid in _choose(g, rows, None, 256) if grid(n) != (0, 0, 0)]

    assert live(ROWS4_MIN_ROWS, 1) == ["rows4"] and live(ROWS4_MIN_ROWS - 1, 1) == ["rowwise"]
    assert live(ROWS32_MIN_ROWS, 1) == ["rows32"] and live(ROWS32_MIN_ROWS - 1, 1) == ["rows4"]
    assert all(live(rows, n) == ["tile8"] for rows in (7, ROWS4_MIN_ROWS, ROWS32_MIN_ROWS) for n in (2, 8, 15))
    assert all(live(rows, n) == ["tile16"] for rows in (7, ROWS4_MIN_ROWS, ROWS32_MIN_ROWS) for n in (16, 48, 128, 1024))

