"""Quantized matmul kernels against numpy with the same dequantized weights."""

import importlib

import numpy as np
import pytest

from rwkv_webgpu.gpu import Counter, Graph, act_buffer, upload_qmatrix
from rwkv_webgpu.ops import matmul
from rwkv_webgpu.weights.quant import Quant, quantize

ACTS = {"none": lambda y: y, "tanh": np.tanh, "sigmoid": lambda y: 1 / (1 + np.exp(-y)),
        "relu_sq": lambda y: np.maximum(y, 0) ** 2, "silu": lambda y: y / (1 + np.exp(-y))}  # fmt: skip


def run_quant(device, quant, w, x, y0, act, kernel=None, steps=None):
    """y0 (+)= act(x @ W^T) with W quantized, through one recorded graph run for each step size in
    ``steps`` (default: all T rows); returns the dequantized W and y after each run."""
    t, k = x.shape
    qm = quantize(w, quant)
    g, cnt = Graph(device), Counter(device, "n")
    xa, ya = act_buffer(device, t, k, "x"), act_buffer(device, t, w.shape[0], "y")
    device.write(xa.buffer, x)
    wm = upload_qmatrix(device, qm, "w")
    matmul(g, cnt, xa, wm, ya, act=act, accumulate=y0 is not None, kernel=kernel)
    outs = []
    for n in steps or [t]:
        if y0 is not None:
            device.write(ya.buffer, y0)
        cnt.set(n)
        g.run()
        outs.append(device.read(ya.buffer)[: n * w.shape[0]].reshape(n, w.shape[0]))
    return qm.dequantize(), outs


def oracle(wq, x, act):
    return ACTS[act](x.astype(np.float64) @ wq.astype(np.float64).T)


@pytest.mark.parametrize("quant", [Quant.INT8, Quant.NF4, Quant.SF4])
@pytest.mark.parametrize("t,k,r", [(1, 64, 4), (1, 130, 7), (3, 256, 33), (6, 200, 65)])
def test_quant_matmul_matches_dequantized_numpy(device, quant, t, k, r):
    rng = np.random.default_rng(t + k + r)
    w = rng.standard_normal((r, k)).astype(np.float32) / np.sqrt(k)
    x = rng.standard_normal((t, k)).astype(np.float32)
    y0 = rng.standard_normal((t, r)).astype(np.float32)
    qm = quantize(w, quant)
    g, cnt = Graph(device), Counter(device, "n")
    xa, ya = act_buffer(device, t, k, "x"), act_buffer(device, t, r, "y")
    device.write(xa.buffer, x)
    device.write(ya.buffer, y0)
    matmul(g, cnt, xa, upload_qmatrix(device, qm, "w"), ya, act="sigmoid", accumulate=True)
    cnt.set(t)
    g.run()
    got = device.read(ya.buffer)[: t * r].reshape(t, r)
    want = y0 + 1 / (1 + np.exp(-(x.astype(np.float64) @ qm.dequantize().astype(np.float64).T)))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("quant", [Quant.INT8, Quant.NF4, Quant.SF4])
@pytest.mark.parametrize("kernel", ["gemv", "decode", "tiled", "big", "big_split", "tile16"])
@pytest.mark.parametrize("t", [1, 5, 70])
@pytest.mark.parametrize("k", [72, 130, 200])
@pytest.mark.parametrize("r", [7, 65, 130])
def test_every_quant_matmul_kernel(device, kernel, quant, t, k, r):
    """Each quantized kernel on every adapter, at sizes off every tile and block edge."""
    if kernel == "decode" and not device.info.subgroup:
        pytest.skip("adapter without subgroups")
    rng = np.random.default_rng(t * 1000 + k + r)
    w = rng.standard_normal((r, k)).astype(np.float32) / np.sqrt(k)
    x = rng.standard_normal((t, k)).astype(np.float32)
    y0 = rng.standard_normal((t, r)).astype(np.float32)
    wq, (got,) = run_quant(device, quant, w, x, y0, "tanh", kernel=kernel)
    np.testing.assert_allclose(got, y0 + oracle(wq, x, "tanh"), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel", ["gemv", "decode", "tiled", "big", "big_split", "tile16"])
@pytest.mark.parametrize("t", [1, 70])
def test_quant_kernels_add_times_a_gate(device, kernel, t):
    """The gated output (y += gate * W x, gate in y's buffer) of the quantized kernels."""
    if kernel == "decode" and not device.info.subgroup:
        pytest.skip("adapter without subgroups")
    r, k = 65, 130
    rng = np.random.default_rng(t + 3)
    w = rng.standard_normal((r, k)).astype(np.float32) / np.sqrt(k)
    x = rng.standard_normal((t, k)).astype(np.float32)
    y0, gate = rng.standard_normal((2, t, r)).astype(np.float32)
    qm = quantize(w, Quant.INT8)
    g, cnt = Graph(device), Counter(device, "n")
    xa, ya = act_buffer(device, t, k, "x"), act_buffer(device, t, r, "y", planes=2)
    device.write(xa.buffer, x)
    device.write(ya.buffer, np.stack([y0, gate]))
    matmul(g, cnt, xa, upload_qmatrix(device, qm, "w"), ya, gate=ya.at(t * r), kernel=kernel)
    cnt.set(t)
    g.run()
    got = device.read(ya.buffer)[: t * r].reshape(t, r)
    np.testing.assert_allclose(got, y0 + gate * oracle(qm.dequantize(), x, "none"), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("quant", [Quant.INT8, Quant.NF4, Quant.SF4])
@pytest.mark.parametrize("act", list(ACTS))
def test_quant_tiled_activations(device, quant, act):
    rng = np.random.default_rng(3)
    w = rng.standard_normal((65, 130)).astype(np.float32) / np.sqrt(130)
    x = rng.standard_normal((70, 130)).astype(np.float32)
    wq, (got,) = run_quant(device, quant, w, x, None, act, kernel="tiled")
    np.testing.assert_allclose(got, oracle(wq, x, act), rtol=1e-5, atol=1e-5)


def test_quant_kernel_choice(device, monkeypatch):
    """GPUs: the one-token subgroup kernel for decoding, the GEMV-style kernel for small steps,
    the tiled one for steps with enough 64 x 64 tiles; CPUs: one token on the subgroup kernel where
    they have subgroups (else the GEMV), more on the 16 x 16 register tiles (with those off: the
    64 x 64 tiles from TILED_FROM tokens); switched per step in one recorded graph."""
    import dataclasses
    import importlib

    from rwkv_webgpu.ops.matmul import DECODE_UNTIL, TILED_FROM, TILED_MIN_TILES, _choose_quant

    mm = importlib.import_module("rwkv_webgpu.ops.matmul")
    g = Graph(device)
    decode = device.info.subgroup  # (CPU adapters with subgroups too: QUANT_DECODE_CPU)
    big = ["big"] * (not device.info.cpu)  # GPUs: the 128 x 128 tiles too
    if not device.info.cpu:
        assert [name for name, _ in _choose_quant(g, 4096, None)] == ["decode"] * decode + ["gemv", "tiled"] + big
    else:  # one token on the subgroup kernel there (else the GEMV), more on register tiles
        one = "decode" if decode else "gemv"
        assert [name for name, _ in _choose_quant(g, 4096, None)] == [one, "tile16"]  # nothing recorded that never runs
        cpu = dict(_choose_quant(g, 4096, None))
        assert cpu[one](1) != (0, 0, 0) and cpu[one](2) == (0, 0, 0)
        assert cpu["tile16"](1) == (0, 0, 0) and cpu["tile16"](2) == (4, 1, 1) and cpu["tile16"](40) == (4, 3, 1)
        monkeypatch.setattr(mm, "QUANT_DECODE_CPU", False)
        monkeypatch.setattr(mm, "QUANT_TILE16_CPU", False)
        assert [name for name, _ in _choose_quant(g, 4096, None)] == ["gemv", "tiled"]
        assert dict(_choose_quant(g, 4096, None))["tiled"](TILED_FROM) != (0, 0, 0)
        monkeypatch.setattr(mm, "QUANT_DECODE_CPU", True)
        monkeypatch.setattr(mm, "QUANT_TILE16_CPU", True)
    gpu = dataclasses.replace(device.info, adapter_type="DiscreteGPU")
    monkeypatch.setattr(device, "info", gpu)
    rows = 64 * TILED_MIN_TILES  # one token tile is enough
    grids = dict(_choose_quant(g, rows, None))
    assert grids["tiled"](1) == (0, 0, 0)
    assert grids["gemv"](TILED_FROM) == (0, 0, 0)
    assert grids["tiled"](TILED_FROM) == (TILED_MIN_TILES, 1, 1)
    assert dict(_choose_quant(g, 64, None))["tiled"](TILED_FROM) == (0, 0, 0)  # too few tiles
    # 128 x 128 tiles where f16 weights take them (64 x 64 ones with QUANT_BIG off)
    assert grids["tiled"](128 * TILED_MIN_TILES) == (0, 0, 0)
    assert grids["big"](128 * TILED_MIN_TILES) == (TILED_MIN_TILES // 2, TILED_MIN_TILES, 1)
    monkeypatch.setattr(mm, "QUANT_BIG", False)
    assert dict(_choose_quant(g, rows, None))["tiled"](128 * TILED_MIN_TILES) == (TILED_MIN_TILES, 2 * TILED_MIN_TILES, 1)
    monkeypatch.setattr(mm, "QUANT_BIG", True)
    if device.info.subgroup:  # one-token subgroup kernel below DECODE_UNTIL tokens
        assert grids["decode"](1) != (0, 0, 0) and grids["gemv"](1) == (0, 0, 0)
        assert grids["decode"](DECODE_UNTIL) == (0, 0, 0) and grids["gemv"](DECODE_UNTIL) != (0, 0, 0)
        # long rows (the FFN value, K = 7168): still the one-token kernel for quantized weights,
        # whatever f16 weights of that shape take (their K-in-parts variant has no quantized twin)
        long_rows = dict(_choose_quant(g, 2048, None, 7168))
        assert long_rows["decode"](1) != (0, 0, 0) and long_rows["gemv"](1) == (0, 0, 0)
    rng = np.random.default_rng(4)
    w = rng.standard_normal((rows, 40)).astype(np.float32)
    x = rng.standard_normal((TILED_FROM + 3, 40)).astype(np.float32)
    wq, outs = run_quant(device, Quant.NF4, w, x, None, "none", steps=[TILED_FROM + 3, 3])
    for got in outs:
        np.testing.assert_allclose(got, oracle(wq, x[: len(got)], "none"), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("quant", [Quant.NF4, Quant.SF4])
@pytest.mark.parametrize("rpl,book2", [(1, True), (2, True), (4, True), (2, False), (4, False), (0, True)])
def test_4bit_one_token_kernel_settings(device, monkeypatch, quant, rpl, book2):
    """The 4-bit one-token kernel with 1, 2 or 4 rows a lane (`decode_rows`) and either codebook
    lookup (a byte or a code at a time), and `main` (rpl 0): numpy's sums at row counts off every
    lane group and K off the word and block sizes, whatever the rows a lane (the same bits)."""
    mm = importlib.import_module("rwkv_webgpu.ops.matmul")

    if not device.info.subgroup:
        pytest.skip("adapter without subgroups")
    monkeypatch.setattr(mm, "QUANT4_RPL", rpl)
    monkeypatch.setattr(mm, "QUANT4_WIDE_RPL", rpl)
    monkeypatch.setattr(mm, "QUANT4_BOOK2", book2)
    for r, k in ((7, 72), (65, 200), (130, 1000), (3, 30)):
        rng = np.random.default_rng(r * k)
        w = rng.standard_normal((r, k)).astype(np.float32) / np.sqrt(k)
        x = rng.standard_normal((1, k)).astype(np.float32)
        y0 = rng.standard_normal((1, r)).astype(np.float32)
        wq, (got,) = run_quant(device, quant, w, x, y0, "silu", kernel="decode")
        np.testing.assert_allclose(got, y0 + oracle(wq, x, "silu"), rtol=1e-5, atol=1e-5)
        if rpl != 1:
            monkeypatch.setattr(mm, "QUANT4_RPL", 1)
            monkeypatch.setattr(mm, "QUANT4_WIDE_RPL", 1)
            _, (one,) = run_quant(device, quant, w, x, y0, "silu", kernel="decode")
            if rpl:  # rows a lane change nothing in a row's sum
                np.testing.assert_array_equal(got, one)
            monkeypatch.setattr(mm, "QUANT4_RPL", rpl)
            monkeypatch.setattr(mm, "QUANT4_WIDE_RPL", rpl)


def test_one_token_kernel_entries_and_grids(device, monkeypatch):
    """int8 takes `main` (a row a lane group, the whole subgroup on matrices of at most
    NARROW_ROWS rows), 4-bit codes `decode_rows` with QUANT4_RPL rows a lane, QUANT4_WIDE_RPL
    from QUANT4_WIDE_ROWS rows; the grid covers every row once."""
    mm = importlib.import_module("rwkv_webgpu.ops.matmul")

    g = Graph(device)
    int8, nf4 = mm.QUANT_CODE["int8"], mm.QUANT_CODE["nf4"]
    for rows, narrow in ((1000, True), (mm.NARROW_ROWS + 1, False)):
        entry, consts, grid = mm.quant_decode(g, int8, rows)
        assert entry == "main" and "RPL" not in consts
        assert consts["LANES"] == mm.decode_lanes(g, narrow)
        assert grid(3) == (-(-rows // (mm.DECODE_WGS // consts["LANES"])), 3, 1)
    for rows, rpl in ((1000, mm.QUANT4_RPL), (mm.QUANT4_WIDE_ROWS, mm.QUANT4_WIDE_RPL)):
        entry, consts, grid = mm.quant_decode(g, nf4, rows)
        assert entry == "decode_rows" and consts["RPL"] == rpl and consts["UNROLL"] == 1
        per = mm.DECODE_WGS // consts["LANES"] * rpl
        assert grid(1) == (-(-rows // per), 1, 1)
    monkeypatch.setattr(mm, "QUANT4_RPL", 0)
    assert mm.quant_decode(g, nf4, 1 << 14)[0] == "main"


def test_quant_matmul_rejects_f16_only_kernels(device):
    with pytest.raises(ValueError, match="quantized"):
        run_quant(device, Quant.INT8, np.ones((4, 8), np.float32), np.ones((1, 8), np.float32), None, "none",
                  kernel="rowwise")  # fmt: skip


@pytest.mark.parametrize("quant", [Quant.INT8, Quant.NF4, Quant.SF4])
def test_quantization_error_is_bounded(quant):
    w = np.random.default_rng(0).standard_normal((64, 256)).astype(np.float32)
    err = np.abs(quantize(w, quant).dequantize() - w).max() / np.abs(w).max()
    assert err < {Quant.INT8: 0.01, Quant.NF4: 0.15, Quant.SF4: 0.15}[quant]


@pytest.mark.parametrize("quant", [Quant.INT8, Quant.NF4, Quant.SF4])
def test_quantization_in_parallel_row_chunks_equals_row_by_row(quant, monkeypatch):
    """quantize() runs chunks of rows on several threads: the same codes and scales as each row
    quantized alone (rows are independent), across chunk edges, with K off the block size."""
    from rwkv_webgpu.weights import quant as qmod

    monkeypatch.setattr(qmod, "QUANT_CHUNK_ROWS", 7)
    w = np.random.default_rng(1).standard_normal((45, 200)).astype(np.float32)
    w[3] = 0  # a row of zeros: scale 1
    got = quantize(w, quant)
    for r in range(len(w)):
        one = quantize(w[r : r + 1], quant)
        np.testing.assert_array_equal(got.codes[r], one.codes[0])
        np.testing.assert_array_equal(got.scales[r], one.scales[0])


def test_quant_tiles_where_f16_takes_tall_tiles(device, monkeypatch):
    """Batched steps on a GPU: quantized weights keep the 64 x 64 tiles wherever those fill the
    GPU, including the step sizes at which f16 weights run 128 x 64 tiles."""
    import dataclasses

    from rwkv_webgpu.ops.matmul import _choose_quant

    gpu = dataclasses.replace(device.info, adapter_type="DiscreteGPU", subgroup=True, subgroup_size=32)
    monkeypatch.setattr(device, "info", gpu)
    assert [name for name, _ in _choose_quant(Graph(device), 8192, None, 2048)] == ["decode", "gemv", "tiled", "big",
                                                                                   "big_split"]  # fmt: skip
    grids = dict(_choose_quant(Graph(device), 8192, None, 2048))
    assert grids["tiled"](64) == (128, 1, 1) and grids["gemv"](64) == (0, 0, 0)
    grids = dict(_choose_quant(Graph(device), 2048, None, 2048))
    assert grids["tiled"](64) == (0, 0, 0) and grids["gemv"](64) != (0, 0, 0)


def test_quant_long_rows_follow_their_own_bound(device, monkeypatch):
    """One token with rows longer than DECODE_MAX_K: the GEMV-style kernel, unless
    QUANT_DECODE_MAX_K lets the quantized one-token kernel take them."""
    import dataclasses
    import importlib

    mm = importlib.import_module("rwkv_webgpu.ops.matmul")
    if not device.info.subgroup:
        pytest.skip("adapter without subgroups")
    monkeypatch.setattr(device, "info", dataclasses.replace(device.info, adapter_type="DiscreteGPU"))
    g = Graph(device)
    for bound, one_token in ((mm.DECODE_MAX_K, "gemv"), (8192, "decode")):
        monkeypatch.setattr(mm, "QUANT_DECODE_MAX_K", bound)
        grids = dict(mm._choose_quant(g, 2048, None, 7168))
        assert [name for name, grid in grids.items() if grid(1) != (0, 0, 0)] == [one_token]
        assert grids["decode"](2) != (0, 0, 0)  # a few tokens: the one-token kernel either way
