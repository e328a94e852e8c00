"""Quantized matmul kernels against numpy with the same dequantized weights."""

import numpy as np
import pytest

from rwkv_webgpu.gpu import Counter, Graph, act_buffer, upload_qmatrix
from rwkv_webgpu.ops import matmul
from rwkv_webgpu.weights.quant import Quant, quantize


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
def test_quantization_error_is_bounded(quant):
    w = np.random.default_rng(0).standard_normal((64, 256)).astype(np.float32)
    err = np.abs(quantize(w, quant).dequantize() - w).max() / np.abs(w).max()
    assert err < {Quant.INT8: 0.01, Quant.NF4: 0.15, Quant.SF4: 0.15}[quant]
