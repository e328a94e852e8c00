"""RWKV_WEBGPU_SHADER_CHECKS: which runtime checks the project's kernels are compiled with, and
that a kernel compiled through wgpu-native's trusted call computes what the checked one does."""

from __future__ import annotations

import numpy as np
import pytest

import rwkv_webgpu as rw
from rwkv_webgpu.gpu import trusted
from rwkv_webgpu.gpu.shaders import PipelineCache


def test_auto_mode_drops_loop_counters_everywhere_and_clamps_only_outside_the_tiles(monkeypatch):
    monkeypatch.delenv("RWKV_WEBGPU_SHADER_CHECKS", raising=False)
    assert trusted.trusted_checks("matmul_tiled") == 0
    assert trusted.trusted_checks("matmul_group_tiled") == 0
    assert trusted.trusted_checks("sample") == trusted.BOUNDS
    assert trusted.trusted_checks("time_mix_v7") == trusted.BOUNDS


@pytest.mark.parametrize(("mode", "want"), [("all", None), ("bounds", trusted.BOUNDS), ("none", 0), (" None ", 0)])
def test_explicit_modes_apply_to_every_kernel(monkeypatch, mode, want):
    monkeypatch.setenv("RWKV_WEBGPU_SHADER_CHECKS", mode)
    assert trusted.trusted_checks("matmul_tiled") == want
    assert trusted.trusted_checks("sample") == want


def test_unknown_mode_is_a_config_error_naming_the_choices(monkeypatch):
    monkeypatch.setenv("RWKV_WEBGPU_SHADER_CHECKS", "fast")
    with pytest.raises(rw.ConfigError, match="auto, all, bounds, none.*'fast'"):
        trusted.trusted_checks("sample")


def _product(device, kernel: str) -> np.ndarray:
    """y = tanh(x W^T) through ``kernel`` on odd sizes (partial tiles, K not a multiple of a slice)."""
    from rwkv_webgpu.gpu import Counter, Graph, act_buffer, upload_matrix
    from rwkv_webgpu.ops import matmul

    rng = np.random.default_rng(3)
    r, k, t = 131, 77, 133
    w = rng.standard_normal((r, k)).astype(np.float32) / np.sqrt(k)
    x = rng.standard_normal((t, k)).astype(np.float32)
    g = Graph(device)
    cnt = Counter(device, "n")
    xa, ya = act_buffer(device, t, k, "x"), act_buffer(device, t, r, "y")
    device.write(xa.buffer, x)
    matmul(g, cnt, xa, upload_matrix(device, w, "w"), ya, act="tanh", kernel=kernel)
    cnt.set(t)
    g.run()
    return device.read(ya.buffer)[: t * r].reshape(t, r)


@pytest.mark.parametrize("kernel", ["big", "tall", "tiled"])
@pytest.mark.parametrize("mode", ["bounds", "none"])
def test_kernels_compiled_without_checks_give_the_same_bits(monkeypatch, device, mode, kernel):
    """The tiled products give bit-identical results whichever runtime
    checks their modules were compiled with (each mode compiles afresh, on every adapter)."""
    saved = device.pipelines
    try:
        monkeypatch.setenv("RWKV_WEBGPU_SHADER_CHECKS", "all")
        device.pipelines = PipelineCache(device)
        want = _product(device, kernel)
        monkeypatch.setenv("RWKV_WEBGPU_SHADER_CHECKS", mode)
        device.pipelines = PipelineCache(device)
        got = _product(device, kernel)
        assert trusted.trusted_module(device.device, "@compute @workgroup_size(1) fn main() {}", "probe", 0) is not None
    finally:
        device.pipelines = saved
    np.testing.assert_array_equal(got, want)


def test_a_failing_trusted_call_falls_back_to_the_usual_compile(monkeypatch, device):
    """Where wgpu-py's internals differ (the trusted call raises or is missing), kernels still
    compile with wgpu's checks and compute the same result."""
    from rwkv_webgpu.gpu import shaders

    saved = device.pipelines
    try:
        monkeypatch.setenv("RWKV_WEBGPU_SHADER_CHECKS", "all")
        device.pipelines = PipelineCache(device)
        want = _product(device, "tiled")

        def broken(*_args, **_kwargs):
            raise RuntimeError("no such call in this wgpu-py")

        monkeypatch.setenv("RWKV_WEBGPU_SHADER_CHECKS", "none")
        for replacement in (broken, lambda *_a, **_k: None):
            monkeypatch.setattr(shaders, "trusted_module", replacement)
            device.pipelines = PipelineCache(device)
            np.testing.assert_array_equal(_product(device, "tiled"), want)
    finally:
        device.pipelines = saved
