"""matmul_group on quantized weights: one dispatch for the one-token products of one
quantization, bit-identical to the products one by one."""

import dataclasses
import importlib

import numpy as np
import pytest
from test_matmul_group import assert_one_by_one_equals, expected, run
from test_matmul_group import build as group_build

from rwkv_webgpu.gpu import upload_matrices, upload_qmatrices
from rwkv_webgpu.gpu.tensor import BufferRange
from rwkv_webgpu.weights.quant import Quant, quantize

# (rows, K, input plane, output buffer, activation, accumulate): odd sizes, K off the block sizes
SPECS = [(7, 200, 0, 0, "none", False), (33, 1000, 1, 0, "tanh", True), (5, 72, 2, 1, "sigmoid", False),
         (65, 130, 3, 1, "relu_sq", False), (4, 1000, 3, 0, "silu", True)]  # fmt: skip


def build(device, quant, t, rng):
    x, ws, outs, y0, products = group_build(device, t, rng, SPECS, quant)
    return outs, y0, products, expected(x, ws, y0, t, SPECS, f16=False)


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
@pytest.mark.parametrize("rpl", [2, 1, 4])
def test_quant_group_matches_numpy_and_products_one_by_one(device, monkeypatch, quant, t, rpl):
    """(4-bit codes: with 1, 2 or 4 rows a lane in `decode_rows`, the group's segments of 7, 33,
    5, 65 and 4 rows splitting lane groups at every offset.)"""
    if not device.info.subgroup:
        pytest.skip("adapter without subgroups")
    if rpl != 2 and quant == Quant.INT8:
        pytest.skip("int8 has one row a lane")
    mm = importlib.import_module("rwkv_webgpu.ops.matmul")

    monkeypatch.setattr(mm, "QUANT4_RPL", rpl)
    monkeypatch.setattr(mm, "QUANT4_WIDE_RPL", rpl)
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



@pytest.mark.parametrize("quant,rpl", [(Quant.INT8, 0), (Quant.NF4, 1), (Quant.NF4, 2), (Quant.NF4, 4)])
@pytest.mark.parametrize("t", [1, 3])
def test_f16_product_joins_the_quant_group(device, monkeypatch, quant, rpl, t):
    """An f16 product that would run alone (RWKV-6's decay LoRA first half next to quantized
    r/k/v/g) is summed inside the quantized group's dispatch, as the f16 one-token kernel sums it
    (4-bit codes: its 9 rows 1, 2 or 4 a lane, the last lane group partly past them)."""
    if not device.info.subgroup:
        pytest.skip("adapter without subgroups")
    mm = importlib.import_module("rwkv_webgpu.ops.matmul")
    if rpl:
        monkeypatch.setattr(mm, "QUANT4_RPL", rpl)
        monkeypatch.setattr(mm, "QUANT4_WIDE_RPL", rpl)
    specs = [*SPECS, (9, 1000, 2, 1, "tanh", False)]
    rng = np.random.default_rng(70 + t)
    x, ws, outs, y0, products = group_build(device, t, rng, specs, quant)
    w16 = (rng.standard_normal((9, 1000)) / np.sqrt(1000)).astype(np.float16).astype(np.float32)
    products[-1] = dataclasses.replace(products[-1], w=upload_matrices(device, [w16], ["half"])[0])
    ws[-1] = w16
    got, g = run(device, products, outs, y0, t, "decode")
    assert [item.label for item in g.items if item.grid(t) != (0, 0, 0)] == [f"group.{quant.value}"]
    for a, b in zip(got, expected(x, ws, y0, t, specs, f16=False)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    monkeypatch.setattr(device, "info", dataclasses.replace(device.info, adapter_type="DiscreteGPU"))
    if quant == Quant.INT8:  # lanes per row as the single f16 product's kernel takes them
        monkeypatch.setattr(mm, "NARROW_LANES", False)
    assert_one_by_one_equals(device, products, outs, y0, t, got)


@pytest.mark.parametrize("t", [1, 3, 20])
def test_f16_group_joins_the_quant_group(device, monkeypatch, t):
    """f16 products that form a group of their own (RWKV-7's LoRA first halves next to quantized
    r/k/v) join the quantized group on the steps its one-token entry covers; larger steps run
    each once (an accumulating product added twice would show) through their own kernels."""
    if not device.info.subgroup:
        pytest.skip("adapter without subgroups")
    monkeypatch.setattr(device, "info", dataclasses.replace(device.info, adapter_type="DiscreteGPU"))
    halves = [(9, 1000, 2, 1, "tanh", False), (6, 200, 1, 0, "none", True)]
    specs = [*SPECS, *halves]
    rng = np.random.default_rng(80 + t)
    x, ws, outs, y0, products = group_build(device, t, rng, specs, Quant.INT8)
    w16 = [(rng.standard_normal((r, k)) / np.sqrt(k)).astype(np.float16).astype(np.float32) for r, k, *_ in halves]
    mats = upload_matrices(device, w16, ["h0", "h1"])  # one buffer: the two form an f16 group
    for j, m in enumerate(mats):
        products[len(SPECS) + j] = dataclasses.replace(products[len(SPECS) + j], w=m)
        ws[len(SPECS) + j] = w16[j]
    got, g = run(device, products, outs, y0, t)
    live = [item.label for item in g.items if item.grid(t) != (0, 0, 0)]
    assert (live == ["group.int8"]) == (t < 16)
    assert "group" not in live
    for a, b in zip(got, expected(x, ws, y0, t, specs, f16=False)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
