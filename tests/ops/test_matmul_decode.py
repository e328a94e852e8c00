"""The one-token subgroup kernels (f16, group, quantized) at every words-in-flight setting
(UNROLL): the sums match numpy, and for f16 they are bit-identical to the plain loop (UNROLL = 1),
which the group kernel must reproduce too."""

import dataclasses
import importlib

import numpy as np
import pytest
from test_matmul import oracle, run_matmul
from test_matmul_group import assert_one_by_one_equals, build, expected, run
from test_matmul_quant import run_quant

from rwkv_webgpu.weights.quant import Quant

mm = importlib.import_module("rwkv_webgpu.ops.matmul")  # the module (ops.matmul is the function)

SETTINGS = [1, 2, 4]
# K long enough that the unrolled loop and its remainder both run (kv = 125 words of 8), short
# rows that never reach the unrolled loop, and row counts off every lane-group edge
SHAPES = [(1, 1000, 13), (3, 1000, 37), (2, 13, 7), (1, 264, 65)]


@pytest.fixture
def subgroups(device):
    if not device.info.subgroup:
        pytest.skip("adapter without subgroups")
    return device


def use(monkeypatch, unroll):
    monkeypatch.setattr(mm, "DECODE_UNROLL", unroll)
    # 16 lanes a row everywhere, so a group sums each row as the single kernel does
    monkeypatch.setattr(mm, "NARROW_LANES", False)


@pytest.mark.parametrize("t,k,r", SHAPES + [(1, 2048, 2048)])
def test_narrow_products_take_a_subgroup_a_row(subgroups, monkeypatch, t, k, r):
    """f16 matrices of at most NARROW_ROWS rows: 32 lanes a row where subgroups have 32
    invocations (16 rows: the lane count of the others), the same sums within f32 rounding."""
    from rwkv_webgpu.gpu import Graph

    lanes = mm.decode_lanes(Graph(subgroups), narrow=r <= mm.NARROW_ROWS)
    assert lanes == (32 if subgroups.info.subgroup_size >= 32 else 16 if subgroups.info.subgroup_size >= 16 else 8)
    rng = np.random.default_rng(k + r)
    w = rng.standard_normal((r, k)).astype(np.float32) / np.sqrt(k)
    x = rng.standard_normal((t, k)).astype(np.float32)
    got, _ = run_matmul(subgroups, w, x, "none", kernel="decode")
    monkeypatch.setattr(mm, "NARROW_LANES", False)
    wide, _ = run_matmul(subgroups, w, x, "none", kernel="decode")
    np.testing.assert_allclose(got, oracle(w, x, "none"), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got, wide, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("unroll", SETTINGS)
@pytest.mark.parametrize("t,k,r", SHAPES)
def test_decode_settings_sum_in_the_plain_order(subgroups, monkeypatch, unroll, t, k, r):
    rng = np.random.default_rng(k + r + t)
    w = rng.standard_normal((r, k)).astype(np.float32) / np.sqrt(k)
    x = rng.standard_normal((t, k)).astype(np.float32)
    use(monkeypatch, 1)
    plain, _ = run_matmul(subgroups, w, x, "tanh", kernel="decode")
    use(monkeypatch, unroll)
    got, _ = run_matmul(subgroups, w, x, "tanh", kernel="decode")
    np.testing.assert_allclose(got, oracle(w, x, "tanh"), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got, plain)


LONG = [(7, 1000, 0, 0, "none", False), (33, 1000, 1, 0, "tanh", True), (5, 264, 2, 1, "sigmoid", False),
        (65, 13, 3, 1, "relu_sq", False), (4, 1000, 3, 0, "silu", True)]  # fmt: skip


@pytest.mark.parametrize("unroll", SETTINGS)
@pytest.mark.parametrize("t", [1, 3])
def test_group_decode_settings(subgroups, monkeypatch, unroll, t):
    """Segments of odd row counts and long rows."""
    use(monkeypatch, unroll)
    rng = np.random.default_rng(30 + t)
    x, ws, outs, y0, products = build(subgroups, t, rng, LONG)
    got, _ = run(subgroups, products, outs, y0, t, "decode")
    for g, want in zip(got, expected(x, ws, y0, t, LONG)):
        np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-5)
    # the products one by one through the kernels a GPU picks: the one-token kernel for each
    monkeypatch.setattr(subgroups, "info", dataclasses.replace(subgroups.info, adapter_type="DiscreteGPU"))
    assert_one_by_one_equals(subgroups, products, outs, y0, t, got)


@pytest.mark.parametrize("quant", [Quant.INT8, Quant.NF4, Quant.SF4])
@pytest.mark.parametrize("unroll", SETTINGS)
@pytest.mark.parametrize("t,k,r", [(1, 2100, 13), (2, 1000, 37), (1, 72, 5)])
def test_quant_decode_settings(subgroups, monkeypatch, quant, unroll, t, k, r):
    use(monkeypatch, unroll)
    rng = np.random.default_rng(k + r + t)
    w = rng.standard_normal((r, k)).astype(np.float32) / np.sqrt(k)
    x = rng.standard_normal((t, k)).astype(np.float32)
    y0 = rng.standard_normal((t, r)).astype(np.float32)
    wq, (got,) = run_quant(subgroups, quant, w, x, y0, "none", kernel="decode")
    want = y0 + x.astype(np.float64) @ wq.astype(np.float64).T
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("unroll", SETTINGS)
@pytest.mark.parametrize("t,k,r", [(1, 8200, 37), (2, 5000, 13), (1, 2100, 70), (3, 13, 5)])
def test_decode_parts_adds_parts_as_reduce_does(subgroups, monkeypatch, unroll, t, k, r):
    """`decode_parts` (K parts summed in the workgroup) equals `decode_split` + `reduce` bit for
    bit, and numpy within rounding; with accumulate and an activation."""
    use(monkeypatch, unroll)
    rng = np.random.default_rng(k + r + t)
    w = rng.standard_normal((r, k)).astype(np.float32) / np.sqrt(k)
    x = rng.standard_normal((t, k)).astype(np.float32)
    y0 = rng.standard_normal((t, r)).astype(np.float32)
    split, _ = run_matmul(subgroups, w, x, "tanh", y0=y0, accumulate=True, kernel="decode_split")
    parts, _ = run_matmul(subgroups, w, x, "tanh", y0=y0, accumulate=True, kernel="decode_parts")
    np.testing.assert_allclose(parts, y0 + oracle(w, x, "tanh"), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(parts, split)


@pytest.mark.parametrize("quant", [Quant.INT8, Quant.NF4])
@pytest.mark.parametrize("t,k,r", [(1, 1000, 13), (3, 1000, 37), (2, 72, 7), (1, 8200, 5)])
def test_vector_x_reads_change_nothing(subgroups, monkeypatch, quant, t, k, r):
    """The quantized one-token kernels read x as vec4s where aligned (x8_fast): the same values
    as the scalar reads, so the same sums bit for bit (the rows of 3 tokens x 1000 values and
    of 72 values leave some reads unaligned or past the view)."""
    rng = np.random.default_rng(k + r + t)
    w = rng.standard_normal((r, k)).astype(np.float32) / np.sqrt(k)
    x = rng.standard_normal((t, k)).astype(np.float32)
    y0 = np.zeros((t, r), np.float32)
    wq, (fast,) = run_quant(subgroups, quant, w, x, y0, "none", kernel="decode")
    monkeypatch.setattr(mm, "VEC_X", False)
    _, (scalar,) = run_quant(subgroups, quant, w, x, y0, "none", kernel="decode")
    np.testing.assert_array_equal(fast, scalar)
    np.testing.assert_allclose(fast, x.astype(np.float64) @ wq.astype(np.float64).T, rtol=1e-5, atol=1e-5)
