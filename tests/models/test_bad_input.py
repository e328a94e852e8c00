"""Bad input raises a clear RWKVError subclass, and the same model keeps working afterwards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import rwkv_webgpu as rw

FIX = Path(__file__).resolve().parents[1] / "fixtures"
NAME = sorted(p.stem for p in (FIX / "golden").glob("v7_*.npz"))[0]


@pytest.fixture(scope="module")
def model(vulkan_device):
    return rw.load_model(FIX / "models" / f"{NAME}.pth", device=vulkan_device)


def works(model) -> None:
    g = np.load(FIX / "golden" / f"{NAME}.npz")
    out = model.forward(g["tokens"].tolist(), model.new_state(), full=True)
    assert np.abs(out - g["logits"]).max() / np.abs(g["logits"]).max() < 2e-3


@pytest.mark.parametrize(
    "tokens, match",
    [
        ([], "empty"),
        ([1, 2, 10**6], "10000000?|outside"),
        ([3, -1], "-1"),
        (["a"], "integers"),
    ],
)
def test_bad_tokens(model, tokens, match):
    with pytest.raises(rw.TokenError, match=match):
        model.forward(tokens, model.new_state())
    works(model)


def test_token_at_vocab_size_is_refused(model):
    v = model.info.num_vocab
    with pytest.raises(rw.TokenError, match=f"token {v} at position 0"):
        model.forward([v], model.new_state())
    works(model)


def test_wrong_state(model, vulkan_device):
    with pytest.raises(rw.StateError):
        model.forward([1], "not a state")
    other = rw.load_model(FIX / "models" / f"{NAME}.pth", device=vulkan_device)
    with pytest.raises(rw.StateError):
        model.forward([1], other.new_state())
    with pytest.raises(rw.StateError, match="slot 3"):
        model.forward([1], model.new_state(2), slot=3)
    with pytest.raises(rw.StateError, match="inputs"):
        model.forward_batch([[1]], model.new_state(2))
    works(model)


def test_missing_file(vulkan_device, tmp_path):
    with pytest.raises(rw.CheckpointError, match="nope.pth"):
        rw.load_model(tmp_path / "nope.pth", device=vulkan_device)


def test_random_bytes_and_truncated(vulkan_device, tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(rw.CheckpointError):
        rw.load_model(junk, device=vulkan_device)
    data = (FIX / "models" / f"{NAME}.pth").read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(rw.CheckpointError):
        rw.load_model(cut, device=vulkan_device)


def test_wrong_shape(vulkan_device, tmp_path):
    from rwkv_webgpu.weights import open_checkpoint
    from rwkv_webgpu.weights.safetensors_io import save_safetensors

    with open_checkpoint(FIX / "models" / f"{NAME}.pth") as ck:
        tensors = {n: ck.load(n) for n in ck.names()}
    tensors["blocks.0.att.key.weight"] = tensors["blocks.0.att.key.weight"][:, :-1].copy()
    bad = tmp_path / "bad.safetensors"
    save_safetensors(tensors, bad, {})
    with pytest.raises(rw.ShapeError, match="blocks.0.att.key.weight"):
        rw.load_model(bad, device=vulkan_device)


def test_unknown_version(vulkan_device, tmp_path):
    from rwkv_webgpu.weights.safetensors_io import save_safetensors

    bad = tmp_path / "other.safetensors"
    save_safetensors({"foo.weight": np.zeros((2, 2), np.float32)}, bad, {})
    with pytest.raises(rw.UnknownVersionError):
        rw.load_model(bad, device=vulkan_device)


def test_no_adapter_is_a_clear_error():
    from rwkv_webgpu.gpu.device import choose_adapter

    with pytest.raises(rw.AdapterError, match="no WebGPU adapter matches"):
        choose_adapter("no-such-gpu-anywhere")


def test_too_large_allocation_is_a_clear_error_and_model_keeps_working(model):
    with pytest.raises(rw.GPUMemoryError, match="MiB"):
        model.new_state(batch_size=10**7)
    works(model)


def test_adapter_without_optional_features(vulkan_device):
    """A device opened without shader-f16 and subgroups (as on adapters that lack them) runs the
    portable kernels and still matches the official logits."""
    from rwkv_webgpu.gpu import Device

    plain = Device("vulkan", use_f16=False, use_subgroup=False)
    assert not plain.info.subgroup and not plain.info.shader_f16
    model = rw.load_model(FIX / "models" / f"{NAME}.pth", device=plain)
    works(model)
    with pytest.raises(ValueError, match="subgroup"):
        from rwkv_webgpu.gpu import Counter, Graph, act_buffer, upload_matrix
        from rwkv_webgpu.ops import matmul

        g = Graph(plain)
        matmul(g, Counter(plain, "n"), act_buffer(plain, 1, 8, "x"), upload_matrix(plain, np.ones((2, 8)), "w"),
               act_buffer(plain, 1, 2, "y"), kernel="subgroup")  # fmt: skip
