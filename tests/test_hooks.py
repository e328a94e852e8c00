"""Hooks: captured hidden states and steering vectors against a numpy reference forward."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import reference_v7

import rwkv_webgpu as rw
from rwkv_webgpu.hooks import point_names

FIX = Path(__file__).resolve().parent / "fixtures"
NAME = "v7_L3_C64_V89"


@pytest.fixture(scope="module")
def golden():
    g = np.load(FIX / "golden" / f"{NAME}.npz")
    return g["tokens"].tolist()[:12], reference_v7.load(str(FIX / "models" / f"{NAME}.pth"))


def rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_reference_matches_official():
    g = np.load(FIX / "golden" / f"{NAME}.npz")
    z = reference_v7.load(str(FIX / "models" / f"{NAME}.pth"))
    assert rel(reference_v7.forward(z, g["tokens"].tolist())["logits"], g["logits"]) < 1e-6


def test_captured_layer_outputs_equal_reference(vulkan_device, golden):
    tokens, z = golden
    model = rw.load_model(FIX / "models" / f"{NAME}.pth", device=vulkan_device)
    model.hooks.add("*.out", lambda frame: frame.capture())
    model.forward(tokens, model.new_state())
    ref = reference_v7.forward(z, tokens)["layers"]
    for i, want in enumerate(ref):
        (got,) = model.hooks.captured[f"{i}.out"]
        assert got.shape == want.shape
        assert rel(got, want) < 1e-4


def test_steering_vector_changes_logits_as_reference(vulkan_device, golden):
    tokens, z = golden
    model = rw.load_model(FIX / "models" / f"{NAME}.pth", device=vulkan_device)
    plain = model.forward(tokens, model.new_state(), full=True)
    steer = np.random.default_rng(3).standard_normal(model.info.num_emb) * 0.5
    remove = model.hooks.add("1.out", lambda frame: frame.add(steer))
    steered = model.forward(tokens, model.new_state(), full=True)
    ref = reference_v7.forward(z, tokens, steer={1: steer})["logits"]
    assert rel(steered, ref) < 2e-3
    assert rel(steered, plain) > 1e-2
    remove()
    assert np.array_equal(model.forward(tokens, model.new_state(), full=True), plain)


def test_scale_and_capture_every_point(vulkan_device, golden):
    tokens, _ = golden
    model = rw.load_model(FIX / "models" / f"{NAME}.pth", device=vulkan_device)
    model.hooks.add("*", lambda frame: frame.capture())
    logits = model.forward(tokens, model.new_state())
    names = point_names(model.info.num_layer)
    assert sorted(model.hooks.captured) == sorted(names)
    assert np.allclose(model.hooks.captured["logits"][0][-1], logits)
    model.hooks.clear()
    model.hooks.add("logits", lambda frame: frame.scale(2.0))
    assert np.allclose(model.forward(tokens, model.new_state()), 2 * logits, rtol=1e-5, atol=1e-5)


def test_no_hooks_records_nothing_extra(vulkan_device):
    model = rw.load_model(FIX / "models" / f"{NAME}.pth", device=vulkan_device)
    state = model.new_state()
    model.forward([1, 2], state)
    before = len(model.runner.graph(state)[0].items)
    remove = model.hooks.add("0.out", lambda frame: frame.capture())
    with_hook = len(model.runner.graph(state)[0].items)
    remove()
    after = len(model.runner.graph(state)[0].items)
    assert with_hook == before + 1
    assert after == before


def test_bad_hook_vector_is_a_clear_error(vulkan_device):
    model = rw.load_model(FIX / "models" / f"{NAME}.pth", device=vulkan_device)
    model.hooks.add("0.out", lambda frame: frame.add(np.ones(3)))
    with pytest.raises(rw.RWKVError, match="0.out"):
        model.forward([1], model.new_state())
    model.hooks.clear()
    assert model.forward([1], model.new_state()).shape == (model.info.num_vocab,)


def test_inspect_cli_prints_layers_and_plots(vulkan_device, tmp_path, capsys):
    from rwkv_webgpu.cli import main

    png = tmp_path / "layers.png"
    assert main(["--adapter", "vulkan", "inspect", "--prompt", "def main():", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert len(rows) == 4  # the demo model's layers
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 500


def test_layer_stats_match_reference(vulkan_device, golden):
    from rwkv_webgpu.inspector import layer_stats

    tokens, z = golden
    model = rw.load_model(FIX / "models" / f"{NAME}.pth", device=vulkan_device)
    rows = layer_stats(model, tokens)
    ref = reference_v7.forward(z, tokens)["layers"]
    for row, x in zip(rows, ref):
        assert abs(row["std"] - x.std()) < 1e-4 * x.std()
        assert abs(row["norm_last"] - np.linalg.norm(x[-1])) < 1e-4 * np.linalg.norm(x[-1])
    assert not model.hooks.hooks  # the inspector removed its hook


def test_custom_wgsl_kernel_hook(vulkan_device, golden):
    """A hook's own kernel (here: negate the residual stream leaving layer 0) runs at its point."""
    tokens, z = golden
    model = rw.load_model(FIX / "models" / f"{NAME}.pth", device=vulkan_device)
    code = """
struct Params { c: u32, off: u32, stride: u32, _pad: u32 }
@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read_write> x: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    if gid.x >= p.c || gid.y >= count.n { return; }
    let e = p.off + gid.y * p.stride + gid.x;
    x[e] = -x[e];
}
"""
    dtype = np.dtype([(n, "<u4") for n in ("c", "off", "stride", "_pad")])

    def negate(frame):
        params = np.array([(frame.x.cols, frame.x.offset, frame.x.stride, 0)], dtype)
        frame.kernel(code, [frame.x.buffer], params, lambda n: ((frame.x.cols + 63) // 64, n, 1))

    model.hooks.add("0.out", negate)
    model.hooks.add("0.out", lambda frame: frame.capture("after"))
    model.forward(tokens, model.new_state())
    ref = reference_v7.forward(z, tokens)["layers"][0]
    assert rel(model.hooks.captured["after"][0], -ref) < 1e-4


def test_blit_copies_the_tensor_to_a_user_buffer(vulkan_device, golden):
    tokens, z = golden
    model = rw.load_model(FIX / "models" / f"{NAME}.pth", device=vulkan_device)
    dst = vulkan_device.storage(len(tokens) * model.info.num_emb * 4, "mine")
    model.hooks.add("2.out", lambda frame: frame.blit(dst))
    model.forward(tokens, model.new_state())
    got = vulkan_device.read(dst, np.float32).reshape(len(tokens), -1)
    assert rel(got, reference_v7.forward(z, tokens)["layers"][2]) < 1e-4
