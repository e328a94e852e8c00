"""matmul_group: several products in one dispatch equal the same products one by one."""

import numpy as np
import pytest
from test_matmul import oracle

from rwkv_webgpu.errors import ShapeError
from rwkv_webgpu.gpu import (
    Counter,
    Graph,
    act_buffer,
    upload_matrices,
    upload_matrix,
    upload_qmatrices,
)
from rwkv_webgpu.gpu.tensor import BufferRange
from rwkv_webgpu.ops import Product, matmul, matmul_group
from rwkv_webgpu.weights.quant import quantize


@pytest.fixture(autouse=True)
def lanes_as_in_groups(monkeypatch):
    """Single products sum rows with the group kernel's lane count (narrow f16 matrices take 32
    lanes on 32-wide subgroups, where a group keeps 16), so one by one equals grouped bit for bit."""
    import importlib

    monkeypatch.setattr(importlib.import_module("rwkv_webgpu.ops.matmul"), "NARROW_LANES", False)


# (rows, K, input plane, output buffer, activation, accumulate): odd sizes, mixed K, two outputs
SPECS = [(7, 40, 0, 0, "none", False), (33, 40, 1, 0, "tanh", True), (5, 40, 2, 1, "sigmoid", False),
         (65, 13, 3, 1, "relu_sq", False), (4, 13, 3, 0, "silu", True)]  # fmt: skip


ACTS = {"none": lambda y: y, "tanh": np.tanh, "sigmoid": lambda y: 1 / (1 + np.exp(-y)),
        "relu_sq": lambda y: np.maximum(y, 0) ** 2, "silu": lambda y: y / (1 + np.exp(-y))}  # fmt: skip


def build(device, t, rng, specs=SPECS, quant=None):
    """x, the weights the oracle uses (``quant``: quantized on the GPU, dequantized here), the
    output buffers, their start values and the products."""
    kmax = max(s[1] for s in specs)
    x = rng.standard_normal((4, t, kmax)).astype(np.float32)
    xa = act_buffer(device, t, kmax, "x", planes=4)
    device.write(xa.buffer, x)
    ws = [rng.standard_normal((r, k)).astype(np.float32) / np.sqrt(k) for r, k, *_ in specs]
    labels = [f"w{i}" for i in range(len(ws))]
    if quant is None:
        mats = upload_matrices(device, ws, labels)
    else:
        qms = [quantize(w, quant) for w in ws]
        mats = upload_qmatrices(device, qms, labels)
        ws = [qm.dequantize() for qm in qms]
    width = sum(s[0] for s in specs)
    outs = [act_buffer(device, t, width, f"y{j}") for j in range(2)]
    y0 = [rng.standard_normal((t, width)).astype(np.float32) for _ in range(2)]
    products, col = [], 0
    for (r, k, plane, o, act, acc), m in zip(specs, mats):
        xv = xa.at(plane * t * kmax, k)
        xv = type(xv)(xv.buffer, k, kmax, xv.offset, t)
        products.append(Product(xv, m, outs[o].at(col, width), act, acc, f"p{col}"))
        col += r
    return x, ws, outs, y0, products


def expected(x, ws, y0, t, specs=SPECS, f16=True):
    """The outputs in float64; ``f16``: the weights as the f16 upload rounds them."""
    want = [y.astype(np.float64).copy() for y in y0]
    col = 0
    for (r, k, plane, o, act, acc), w in zip(specs, ws):
        v = oracle(w, x[plane][:, :k], act) if f16 else ACTS[act](x[plane][:, :k].astype(np.float64) @ w.astype(np.float64).T)
        want[o][:, col : col + r] = (want[o][:, col : col + r] if acc else 0) + v
        col += r
    return want


def run(device, products, outs, y0, t, kernel=None):
    g, cnt = Graph(device), Counter(device, "n")
    for buf, y in zip(outs, y0):
        device.write(buf.buffer, y)
    matmul_group(g, cnt, products, kernel=kernel)
    cnt.set(t)
    g.run()
    width = outs[0].cols
    return [device.read(b.buffer)[: t * width].reshape(t, width) for b in outs], g


def assert_one_by_one_equals(device, products, outs, y0, t, got, kernel=None):
    """The products run through matmul (``kernel``) one at a time give exactly ``got`` (bit for bit)."""
    single = Graph(device)
    cnt = Counter(device, "n")
    for buf, y in zip(outs, y0):
        device.write(buf.buffer, y)
    for pr in products:
        matmul(single, cnt, pr.x, pr.w, pr.y, act=pr.act, accumulate=pr.accumulate, kernel=kernel)
    cnt.set(t)
    single.run()
    width = outs[0].cols
    for buf, want in zip(outs, got):
        np.testing.assert_array_equal(device.read(buf.buffer)[: t * width].reshape(t, width), want)


@pytest.mark.parametrize("kernel", [None, "gemv", "rowwise", "decode", "big"])
@pytest.mark.parametrize("t", [1, 3, 17, 70])
def test_group_matches_numpy(device, kernel, t):
    if kernel == "decode" and not device.info.subgroup:
        pytest.skip("adapter without subgroups")
    rng = np.random.default_rng(t)
    x, ws, outs, y0, products = build(device, t, rng)
    got, _ = run(device, products, outs, y0, t, kernel)
    for g, w in zip(got, expected(x, ws, y0, t)):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("t", [1, 5, 9])
def test_group_equals_products_one_by_one(device, t):
    """The group's sums are the single matmul's sums in the same order: bit-identical."""
    rng = np.random.default_rng(10 + t)
    _, _, outs, y0, products = build(device, t, rng)
    got, _ = run(device, products, outs, y0, t)
    assert_one_by_one_equals(device, products, outs, y0, t, got)


@pytest.mark.parametrize("t", [1, 9, 17])
@pytest.mark.parametrize("wide_rows", [32, 1 << 20])
def test_group_on_gpus_equals_products_one_by_one(device, monkeypatch, t, wide_rows):
    """On GPUs with subgroups each step runs the kernel matmul picks for every product: the
    one-token entry, or the products one by one where a wide matrix takes the 4-token kernel."""
    import dataclasses
    import importlib

    mm = importlib.import_module("rwkv_webgpu.ops.matmul")  # the module (ops.matmul is the function)

    if not device.info.subgroup:
        pytest.skip("adapter without subgroups")
    gpu = dataclasses.replace(device.info, adapter_type="DiscreteGPU")
    monkeypatch.setattr(device, "info", gpu)
    monkeypatch.setattr(mm, "WIDE_ROWS", wide_rows)  # 32: the 33- and 65-row products are wide
    rng = np.random.default_rng(20 + t)
    _, _, outs, y0, products = build(device, t, rng)
    got, g = run(device, products, outs, y0, t)
    # one group dispatch is recorded (the one-token entry; the 4-token one would never run)
    assert [item.label for item in g.items].count("group") == 1
    live = [item.label for item in g.items if item.grid(t) != (0, 0, 0)]
    grouped = t < (mm.WIDE_FROM if wide_rows == 32 else mm.DECODE_UNTIL)
    assert live == ["group"] if grouped else "group" not in live
    assert_one_by_one_equals(device, products, outs, y0, t, got)


# Prompt-sized products (odd rows, K past one 16-wide slice and not a multiple of it), two outputs.
BIG_SPECS = [(130, 200, 0, 0, "none", False), (7, 200, 1, 1, "tanh", True), (260, 72, 2, 0, "silu", True),
             (129, 200, 3, 1, "sigmoid", False)]  # fmt: skip


@pytest.mark.parametrize("tiles", ["big", "tiled"])
@pytest.mark.parametrize("t", [5, 130])
def test_tiled_group_equals_products_through_tiles(device, tiles, t):
    """The tile group (matmul_group_tiled.wgsl) sums like the 128 x 128 and 64 x 64 tiles of a
    single product: bit-identical, whatever the step's size against the tiles."""
    rng = np.random.default_rng(30 + t)
    x, ws, outs, y0, products = build(device, t, rng, BIG_SPECS)
    got, g = run(device, products, outs, y0, t, kernel="big")
    assert [item.label for item in g.items] == ["group.tiles"]
    for a, b in zip(got, expected(x, ws, y0, t, BIG_SPECS)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert_one_by_one_equals(device, products, outs, y0, t, got, kernel=tiles)


@pytest.mark.parametrize("t", [1, 40, 130])
def test_tiled_group_on_gpus(device, monkeypatch, t):
    """On GPUs a prompt step whose large products would each take tiles runs them as one tile
    group dispatch (small products alone), with the same results as one by one; at 40 tokens
    the 130-row product would take another kernel (2 tiles of 128 or 3 of 64 are too few), so
    the products run one by one."""
    import dataclasses
    import importlib

    mm = importlib.import_module("rwkv_webgpu.ops.matmul")
    gpu = dataclasses.replace(device.info, adapter_type="DiscreteGPU")
    monkeypatch.setattr(device, "info", gpu)
    monkeypatch.setattr(mm, "TALL_MIN_ROWS", 64)  # the 130-, 260- and 129-row products are large
    monkeypatch.setattr(mm, "TILED_MIN_TILES", 4)  # ... and enough tiles come from 32 tokens
    monkeypatch.setattr(mm, "SPLIT_MIN_K", 64)  # ... and their K (200, 72) long enough
    rng = np.random.default_rng(40 + t)
    _, _, outs, y0, products = build(device, t, rng, BIG_SPECS)
    got, g = run(device, products, outs, y0, t)
    live = [item.label for item in g.items if item.grid(t) != (0, 0, 0)]
    if t == 130:
        assert live[0] == "group.tiles"
        assert [name.split(".")[0] for name in live[1:]] == ["p130"]  # the 7-row product, alone
    else:
        assert "group.tiles" not in live
    assert_one_by_one_equals(device, products, outs, y0, t, got)


def test_tile_group_only_where_it_costs_fewer_waves():
    """The H100 measurements the wave model follows (benchmarks/results/h100-2026-11-27-s6-*):
    V6 r/k/v/g grouped were faster at 512 and 1024 tokens, V7 r/k/v at 512 only, the FFN key
    (7168 rows) with the receptance slower at both."""
    import importlib

    mm = importlib.import_module("rwkv_webgpu.ops.matmul")
    pays = mm._tile_group_pays
    att = [(2048, 2048)] * 4
    assert pays(att, ["tiled"] * 4, 512) and pays(att, ["big"] * 4, 1024)
    assert pays(att[:3], ["tiled"] * 3, 512) and not pays(att[:3], ["big"] * 3, 1024)
    ffn = [(7168, 2048), (2048, 2048)]
    assert not pays(ffn, ["big", "tiled"], 512) and not pays(ffn, ["big", "big"], 1024)
    # products that would cut K in parts alone: 2048 rows at 1024 tokens in 2 parts (0.55 each)
    assert pays(att, ["big_split"] * 4, 1024) and not pays(att[:3], ["big_split"] * 3, 1024)


def test_matrices_share_one_aligned_buffer(device):
    ws = [np.ones((3, 5), np.float32), np.ones((9, 17), np.float32), np.ones((2, 8), np.float32)]
    mats = upload_matrices(device, ws, ["a", "b", "c"])
    ranges = [m.parts[0].buffer for m in mats]
    assert all(isinstance(r, BufferRange) for r in ranges)
    assert len({id(r.buffer) for r in ranges}) == 1
    assert all(r.offset % 256 == 0 for r in ranges)
    assert [m.kp for m in mats] == [8, 24, 8]


def test_ungroupable_products_fall_back(device):
    """Weights in separate buffers (or a third output buffer) still compute, one dispatch each."""
    rng = np.random.default_rng(3)
    t = 2
    x = rng.standard_normal((t, 16)).astype(np.float32)
    xa = act_buffer(device, t, 16, "x")
    device.write(xa.buffer, x)
    ws = [rng.standard_normal((r, 16)).astype(np.float32) for r in (3, 4)]
    ys = [act_buffer(device, t, r, f"y{r}") for r in (3, 4)]
    products = [Product(xa, upload_matrix(device, w, "w"), y) for w, y in zip(ws, ys)]
    g, cnt = Graph(device), Counter(device, "n")
    matmul_group(g, cnt, products)
    cnt.set(t)
    g.run()
    for w, y in zip(ws, ys):
        got = device.read(y.buffer)[: t * w.shape[0]].reshape(t, -1)
        np.testing.assert_allclose(got, oracle(w, x, "none"), rtol=1e-5, atol=1e-5)


def test_group_checks_shapes(device):
    rng = np.random.default_rng(4)
    *_, products = build(device, 1, rng)
    bad = Product(products[0].x.at(0, 12), products[0].w, products[0].y)
    with pytest.raises(ShapeError, match="do not fit"):
        matmul_group(Graph(device), Counter(device, "n"), [bad, *products[1:]])
    with pytest.raises(ValueError, match="unknown group kernel"):
        matmul_group(Graph(device), Counter(device, "n"), products, kernel="tiled")
    if not device.info.subgroup:
        with pytest.raises(ValueError, match="subgroup"):
            matmul_group(Graph(device), Counter(device, "n"), products, kernel="decode")
