"""convert(): official -> web-rwkv .st -> back gives the same names, shapes and values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

from rwkv_webgpu.weights import convert, detect, open_checkpoint

from . import synthetic as syn

FIXTURES = Path(__file__).parents[1] / "fixtures" / "weights"

MODELS = {
    "v4": syn.v4,
    "5.2": lambda: syn.v5("5.2"),
    "v6": lambda: syn.v6(time_state=True),
    "v7": lambda: syn.v7(time_state=True),
}


def _convert(tmp_path: Path, shapes: dict) -> tuple[dict[str, np.ndarray], Path, list]:  # type: ignore[type-arg]
    src, dst = tmp_path / "m.safetensors", tmp_path / "m.st"
    tensors = syn.write(src, shapes)
    calls: list = []  # type: ignore[type-arg]
    convert(src, dst, progress=lambda *a: calls.append(a))
    return tensors, dst, calls


@pytest.mark.parametrize("model", list(MODELS))
def test_round_trip(tmp_path: Path, model: str) -> None:
    tensors, dst, calls = _convert(tmp_path, MODELS[model]())
    assert calls == [(i + 1, len(tensors), n) for i, n in enumerate(tensors)]
    with open_checkpoint(tmp_path / "m.safetensors") as src, open_checkpoint(dst) as back:
        assert back.names() == list(tensors)
        for name, want in tensors.items():
            assert back.shape(name) == want.shape and back.dtype(name) == "f16"
            np.testing.assert_array_equal(
                back.load(name), want.astype(np.float16).astype(np.float32)
            )
        assert detect(back) == detect(src)


def test_written_layout_is_webrwkv(tmp_path: Path) -> None:
    """Spot-check the raw file against web-rwkv's converter, read by the reference package."""
    _, v6, _ = _convert(tmp_path, syn.v6(time_state=True))
    with safe_open(str(v6), framework="numpy") as f:
        keys = set(f.keys())
        assert all(f.get_tensor(k).dtype == np.float16 for k in keys)
        assert f.get_slice("blocks.0.att.time_mix_w1").get_shape() == [5 * syn.DM, syn.C]
        assert f.get_slice("blocks.0.att.time_mix_w2").get_shape() == [5, syn.C, syn.DM]
        assert f.get_slice("blocks.0.att.time_decay_w2").get_shape() == [syn.C, syn.DD]
        assert f.get_slice("blocks.1.att.time_first").get_shape() == [syn.H, syn.N]
        assert "blocks.1.ffn.time_mix_r" in keys and not any(
            "maa" in k or "faaaa" in k for k in keys
        )
    with open_checkpoint(v6) as back:
        state = back.load("blocks.0.att.time_state")
    with safe_open(str(v6), framework="numpy") as f:
        np.testing.assert_array_equal(f.get_tensor("blocks.0.att.time_state"), state.swapaxes(1, 2))
    (tmp_path / "m.safetensors").unlink()
    _, v7, _ = _convert(tmp_path, syn.v7())
    with safe_open(str(v7), framework="numpy") as f:
        assert f.get_slice("blocks.0.att.w1").get_shape() == [syn.DW, syn.C]
        assert f.get_slice("blocks.1.att.v2").get_shape() == [syn.C, syn.DV]
        assert f.get_slice("blocks.1.att.r_k").get_shape() == [syn.H, syn.N]


def test_v5_0_and_5_1_become_webrwkv_bonus_and_decay(tmp_path: Path) -> None:
    tensors, dst, _ = _convert(tmp_path, syn.v5("5.0"))
    with open_checkpoint(dst) as back:
        assert detect(back).sub_version == "5.0"
        u = back.load("blocks.0.att.time_faaaa")
    want = np.exp(tensors["blocks.0.att.time_first"]).astype(np.float16)
    np.testing.assert_array_equal(u, want.astype(np.float32))

    tensors, dst, _ = _convert(tmp_path, syn.v5("5.1"))
    with open_checkpoint(dst) as back:
        assert detect(back).sub_version == "5.2"  # per-head values repeated over N: same math
        decay = back.load("blocks.1.att.time_decay")
    assert decay.shape == (syn.H, syn.N)
    np.testing.assert_array_equal(
        decay[:, 0], tensors["blocks.1.att.time_decay"].astype(np.float16)
    )
    assert (decay == decay[:, :1]).all()


def test_reconverting_is_stable(tmp_path: Path) -> None:
    _, st, _ = _convert(tmp_path, syn.v7())
    again = tmp_path / "again.st"
    convert(st, again)
    assert again.read_bytes() == st.read_bytes()


def test_pth_without_model_converts_name_by_name(tmp_path: Path) -> None:
    dst = tmp_path / "state.st"
    convert(FIXTURES / "module.pth", dst)
    with open_checkpoint(FIXTURES / "module.pth") as src, open_checkpoint(dst) as back:
        assert back.names() == src.names()
        for name in src.names():
            want = src.load(name, np.float16)
            np.testing.assert_array_equal(back.load(name, np.float16), want)
