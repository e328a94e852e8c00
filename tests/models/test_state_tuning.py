"""State tuning (``blocks.{i}.att.time_state``) against the official implementation.

Fixtures ``st_*`` from scripts/make_fixtures.py (see tests/fixtures/README.md): V5.2 and V6
models holding ``time_state``, and a V7 model with a separate ``st_..._state.pth``. Goldens
hold the official logits from the tuned state (``logits``, ``logits_split``) and from a zero
state (``logits_plain``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import rwkv_webgpu as rw

FIX = Path(__file__).resolve().parents[1] / "fixtures"
ST = sorted(p.stem for p in (FIX / "golden").glob("st_*.npz"))
BOUND = 2e-3  # max |ours - ref| / max |ref|, as in test_parity.py
CLEAR = 0.05  # the tuned state moves the logits by at least this much (same measure)


def rel_err(ours: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


def golden(name: str) -> dict:
    g = np.load(FIX / "golden" / f"{name}.npz")
    out = {k: g[k] for k in g.files if k != "meta"}
    out["tokens"] = out["tokens"].tolist()
    out["meta"] = json.loads(str(g["meta"]))
    return out


def state_file(name: str) -> Path | None:
    f = golden(name)["meta"]["state_file"]
    return None if f is None else FIX / "models" / f


def load_tuned(name: str, device, **kw):
    return rw.load_model(
        FIX / "models" / f"{name}.pth", device=device, state_file=state_file(name), **kw
    )


def time_state(name: str) -> np.ndarray:
    """The fixture's time_state as [L, H, N, N] float32 (exact upcast of the stored bf16)."""
    from rwkv_webgpu.weights import open_checkpoint

    src = state_file(name) or FIX / "models" / f"{name}.pth"
    with open_checkpoint(src) as ck:
        L = golden(name)["meta"]["L"]
        return np.stack([ck.load(f"blocks.{i}.att.time_state", np.float32) for i in range(L)])


def test_fixtures_present():
    assert {golden(n)["meta"]["version"] for n in ST} == {"v5.2", "v6", "v7"}


@pytest.mark.parametrize("name", ST)
@pytest.mark.parametrize("chunk", [128, 5])
def test_tuned_matches_official(vulkan_device, name, chunk):
    g = golden(name)
    model = load_tuned(name, vulkan_device, token_chunk_size=chunk)
    ours = model.forward(g["tokens"], model.new_state(), full=True)
    assert ours.shape == g["logits"].shape
    assert rel_err(ours, g["logits"]) <= BOUND
    # the state matters: the tuned logits are far from the zero-state ones
    assert rel_err(ours, g["logits_plain"]) >= CLEAR
    assert rel_err(g["logits"], g["logits_plain"]) >= CLEAR


@pytest.mark.parametrize("name", ST)
def test_tuned_split_run(vulkan_device, name):
    """Carrying the state on from a tuned start matches the official split run."""
    g = golden(name)
    model = load_tuned(name, vulkan_device)
    state = model.new_state()
    k = g["meta"]["split_at"]
    first = model.forward(g["tokens"][:k], state, full=True)
    rest = model.forward(g["tokens"][k:], state, full=True)
    assert rel_err(np.concatenate([first, rest]), g["logits_split"]) <= BOUND


@pytest.mark.parametrize("name", ST)
def test_initial_state_is_time_state_as_is(vulkan_device, name):
    """A new slot's wkv part is time_state, copied without a transpose; the rest is zero."""
    model = load_tuned(name, vulkan_device)
    slot = model.new_state(2).get_slot(1)
    np.testing.assert_array_equal(slot["wkv"], time_state(name))
    for part, arr in slot.items():
        if part != "wkv":
            assert not arr.any(), part


@pytest.mark.parametrize("name", ST)
def test_zero_state_gives_plain_logits(vulkan_device, name):
    """The same model started from an all-zero slot matches the official zero-state run."""
    g = golden(name)
    model = load_tuned(name, vulkan_device)
    state = model.new_state()
    state.set_slot(0, {k: np.zeros_like(v) for k, v in model.initial_state().items()})
    ours = model.forward(g["tokens"], state, full=True)
    assert rel_err(ours, g["logits_plain"]) <= BOUND


@pytest.mark.parametrize("name", [n for n in ST if golden(n)["meta"]["state_file"]])
def test_plain_load_without_state_file(vulkan_device, name):
    g = golden(name)
    model = rw.load_model(FIX / "models" / f"{name}.pth", device=vulkan_device)
    assert not model.initial_state()["wkv"].any()
    ours = model.forward(g["tokens"], model.new_state(), full=True)
    assert rel_err(ours, g["logits_plain"]) <= BOUND
    assert rel_err(ours, g["logits"]) >= CLEAR


@pytest.mark.parametrize("name", ST)
def test_reset_returns_to_tuned_state(vulkan_device, name):
    g = golden(name)
    model = load_tuned(name, vulkan_device)
    state = model.new_state(2)
    model.forward(g["tokens"], state, slot=0)
    model.forward(g["tokens"][:5], state, slot=1)
    state.reset(1)
    np.testing.assert_array_equal(state.get_slot(1)["wkv"], time_state(name))
    assert rel_err(model.forward(g["tokens"], state, full=True, slot=1), g["logits"]) <= BOUND
    state.reset()
    for s in range(2):
        np.testing.assert_array_equal(state.get_slot(s)["wkv"], time_state(name))
    assert rel_err(model.forward(g["tokens"], state, full=True), g["logits"]) <= BOUND


@pytest.mark.parametrize("name", ST)
def test_batched_slots_start_tuned(vulkan_device, name):
    g = golden(name)
    model = load_tuned(name, vulkan_device)
    toks = g["tokens"]
    outs = model.forward_batch([toks, toks[:9]], model.new_state(2), full=True)
    assert rel_err(outs[0], g["logits"]) <= BOUND
    assert rel_err(outs[1], g["logits"][:9]) <= BOUND


def test_safetensors_state_file(vulkan_device, tmp_path):
    """A safetensors state file (float32) works like the .pth one."""
    from rwkv_webgpu.weights.safetensors_io import save_safetensors

    name = next(n for n in ST if golden(n)["meta"]["state_file"])
    g = golden(name)
    ts = time_state(name)
    path = tmp_path / "state.safetensors"
    save_safetensors({f"blocks.{i}.att.time_state": t for i, t in enumerate(ts)}, str(path))
    model = rw.load_model(FIX / "models" / f"{name}.pth", device=vulkan_device, state_file=path)
    ours = model.forward(g["tokens"], model.new_state(), full=True)
    assert rel_err(ours, g["logits"]) <= BOUND


def _v7_state_fixture() -> str:
    return next(n for n in ST if golden(n)["meta"]["state_file"])


def test_state_file_of_another_shape(vulkan_device):
    """v7_L3_C64_V89 is H=1 x N=64 with 3 layers; the st_ V7 state is 2 layers of (2, 32, 32)."""
    with pytest.raises(rw.StateError):
        rw.load_model(
            FIX / "models" / "v7_L3_C64_V89.pth",
            device=vulkan_device,
            state_file=state_file(_v7_state_fixture()),
        )
    # a tuned V6 model file used as a state file: also (2, 32, 32), but only 2 layers
    v6 = next(n for n in ST if n.startswith("st_v6_"))
    with pytest.raises(rw.StateError):
        rw.load_model(
            FIX / "models" / "v7_L3_C64_V89.pth",
            device=vulkan_device,
            state_file=FIX / "models" / f"{v6}.pth",
        )


def test_state_file_missing_a_layer(vulkan_device, tmp_path):
    from rwkv_webgpu.weights.safetensors_io import save_safetensors

    name = _v7_state_fixture()
    path = tmp_path / "one_layer.safetensors"
    save_safetensors({"blocks.0.att.time_state": time_state(name)[0]}, str(path))
    with pytest.raises(rw.StateError):
        rw.load_model(FIX / "models" / f"{name}.pth", device=vulkan_device, state_file=path)


def test_state_file_transposed_head_layout(vulkan_device, tmp_path):
    """(N, H, N) instead of (H, N, N) is refused, not silently reshaped."""
    from rwkv_webgpu.weights.safetensors_io import save_safetensors

    name = _v7_state_fixture()
    ts = time_state(name)
    path = tmp_path / "bad.safetensors"
    save_safetensors(
        {
            f"blocks.{i}.att.time_state": np.ascontiguousarray(t.transpose(1, 0, 2))
            for i, t in enumerate(ts)
        },
        str(path),
    )
    with pytest.raises(rw.StateError):
        rw.load_model(FIX / "models" / f"{name}.pth", device=vulkan_device, state_file=path)


def test_v4_refuses_a_state_file(vulkan_device):
    with pytest.raises(rw.StateError):
        rw.load_model(
            FIX / "models" / "v4_L2_C64_V101.pth",
            device=vulkan_device,
            state_file=state_file(_v7_state_fixture()),
        )
