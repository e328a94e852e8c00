"""matmul_group on quantized weights: one dispatch for the one-token products of one
quantization, bit-identical to the products one by one."""

import dataclasses

import numpy as np
import pytest
from test_matmul_group import assert_one_by_one_equals

from rwkv_webgpu.gpu import Counter, Graph, act_buffer, upload_qmatrices
from rwkv_webgpu.gpu.tensor import BufferRange
from rwkv_webgpu.ops import Product, matmul_group
from rwkv_webgpu.weights.quant import Quant, quantize

# (rows, K, input plane, output buffer, activation, accumulate): odd sizes, K off the block sizes
SPECS = [(7, 200, 0, 0, "none", False), (33, 1000, 1, 0, "tanh", True), (5, 72, 2, 1, "sigmoid", False),
         (65, 130, 3, 1, "relu_sq", False), (4, 1000, 3, 0, "silu", True)]  # fmt: skip
ACTS = {"none": lambda y: y, "tanh": np.tanh, "sigmoid": lambda y: 1 / (1 + np.exp(-y)),
        "relu_sq": lambda y: np.maximum(y, 0) ** 2, "silu": lambda y: y / (1 + np.exp(-y))}  # fmt: skip


def build(device, quant, t, rng):
    kmax = max(s[1] for s in SPECS)
    x = rng.standard_normal((4, t, kmax)).astype(np.float32)
    xa = act_buffer(device, t, kmax, "x", planes=4)
    device.write(xa.buffer, x)
    qms = [quantize(rng.standard_normal((r, k)).astype(np.float32) / np.sqrt(k), quant) for r, k, *_ in SPECS]
    mats = upload_qmatrices(device, qms, [f"w{i}" for i in range(len(qms))])
    width = sum(s[0] for s in SPECS)
    outs = [act_buffer(device, t, width, f"y{j}") for j in range(2)]
    y0 = [rng.standard_normal((t, width)).astype(np.float32) for _ in range(2)]
    products, col = [], 0
    for (r, k, plane, o, act, acc), m in zip(SPECS, mats):
        xv = xa.at(plane * t * kmax, k)
        xv = type(xv)(xv.buffer, k, kmax, xv.offset, t)
        products.append(Product(xv, m, outs[o].at(col, width), act, acc, f"p{col}"))
        col += r
    want = [y.astype(np.float64).copy() for y in y0]
    col = 0
    for (r, k, plane, o, act, acc), qm in zip(SPECS, qms):
        v = ACTS[act](x[plane][:, :k].astype(np.float64) @ qm.dequantize().astype(np.float64).T)
        want[o][:, col : col + r] = (want[o][:, col : col + r] if acc else 0) + v
        col += r
    return outs, y0, products, want


def run(device, products, outs, y0, t, kernel=None):
    g, cnt = Graph(device), Counter(device, "n")
    for buf, y in zip(outs, y0):
        device.write(buf.buffer, y)
    matmul_group(g, cnt, products, kernel=kernel)
    cnt.set(t)
    g.run()
    width = outs[0].cols
    return [device.read(b.buffer)[: t * width].reshape(t, width) for b in outs], g


def test_quantized_matrices_share_aligned_buffers(device):
    rng = np.random.default_rng(0)
    qms = [quantize(rng.standard_normal((r, k)).astype(np.float32), Quant.NF4) for r, k in ((3, 70), (9, 130))]
    mats = upload_qmatrices(device, qms, ["a", "b"])
    codes = [m.parts[0].codes for m in mats]
    scales = [m.parts[0].scales for m in mats]
    assert all(isinstance(r, BufferRange) and r.offset % 256 == 0 for r in codes + scales)
    assert codes[0].buffer is codes[1].buffer and scales[0].buffer is scales[1].buffer
    mixed = upload_qmatrices(device, [qms[0], quantize(rng.standard_normal((3, 70)).astype(np.float32), Quant.INT8)],
                             ["a", "c"])  # fmt: skip
    assert all(not isinstance(m.parts[0].codes, BufferRange) for m in mixed)


@pytest.mark.parametrize("quant", [Quant.INT8, Quant.NF4, Quant.SF4])
@pytest.mark.parametrize("t", [1, 3])
def test_quant_group_matches_numpy_and_products_one_by_one(device, monkeypatch, quant, t):
    if not device.info.subgroup:
        pytest.skip("adapter without subgroups")
    rng = np.random.default_rng(50 + t)
    outs, y0, products, want = build(device, quant, t, rng)
    got, g = run(device, products, outs, y0, t, "decode")
    assert sum(item.grid(t) != (0, 0, 0) for item in g.items) == 1  # one dispatch for all five
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    # one by one through the kernel a GPU picks for a few tokens: the quantized one-token kernel
    monkeypatch.setattr(device, "info", dataclasses.replace(device.info, adapter_type="DiscreteGPU"))
    assert_one_by_one_equals(device, products, outs, y0, t, got)


@pytest.mark.parametrize("t", [1, 20])
def test_quant_group_on_gpus_only_for_one_token_steps(device, monkeypatch, t):
    """GPUs group quantized products below DECODE_UNTIL tokens; larger steps run them one by one
    (the tiled and GEMV kernels), CPU adapters never group them."""
    if not device.info.subgroup:
        pytest.skip("adapter without subgroups")
    rng = np.random.default_rng(60 + t)
    outs, y0, products, want = build(device, Quant.INT8, t, rng)
    info = device.info
    monkeypatch.setattr(device, "info", dataclasses.replace(info, adapter_type="CPU"))
    _, g = run(device, products, outs, y0, t)
    assert not any(item.label.startswith("group") for item in g.items)
    monkeypatch.setattr(device, "info", dataclasses.replace(info, adapter_type="DiscreteGPU"))
    got, g = run(device, products, outs, y0, t)
    live = [item.label for item in g.items if item.grid(t) != (0, 0, 0)]
    assert (live == ["group.int8"]) == (t == 1)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)

