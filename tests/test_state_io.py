"""State files (save/load, refusal of foreign or broken files, atomic writes) and per-slot operations."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import rwkv_webgpu as rw
from rwkv_webgpu.weights import safetensors_io

MODELS = Path(__file__).resolve().parent / "fixtures" / "models"
CHUNK = 16


def load(device, name):
    return rw.load_model(MODELS / f"{name}.pth", device=device, token_chunk_size=CHUNK)


@pytest.fixture(scope="module")
def v7(vulkan_device):
    return load(vulkan_device, "v7_L2_C64_V97")


@pytest.fixture(scope="module")
def v4(vulkan_device):
    return load(vulkan_device, "v4_L2_C64_V101")


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def toks(n: int, seed: int, vocab: int) -> list[int]:
    return np.random.default_rng(seed).integers(1, vocab, n).tolist()


# -- save / load ------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["v7", "v4"])
def test_save_load_continue_is_bit_identical(request, tmp_path, which):
    model = request.getfixturevalue(which)
    v = model.info.num_vocab
    state = model.new_state(2)
    model.forward_batch([toks(9, 1, v), toks(4, 2, v)], state)
    path = tmp_path / "s.safetensors"
    state.save(path)
    loaded = model.load_state(path)
    assert loaded.batch_size == 2
    assert same(loaded.to_numpy(), state.to_numpy())
    more = [toks(5, 3, v), toks(2, 4, v)]
    ref = model.forward_batch(more, state, full=True)
    got = model.forward_batch(more, loaded, full=True)
    for a, b in zip(ref, got):
        assert np.array_equal(a, b)
    assert same(loaded.to_numpy(), state.to_numpy())
    # rw.State.load is the same thing
    again = rw.State.load(model, str(path))
    assert np.array_equal(
        model.forward([7], again, slot=1), model.forward([7], model.load_state(path), slot=1)
    )


def test_state_of_another_model_is_refused(tmp_path, v7, v4, vulkan_device):
    path = tmp_path / "v7.st"
    v7.new_state().save(path)
    other_shape = load(vulkan_device, "v7_L3_C64_V89")  # same version, 3 layers
    with pytest.raises(rw.StateError, match="num_layer"):
        other_shape.load_state(path)
    wide = load(vulkan_device, "v7_L1_C128_V101")
    with pytest.raises(rw.StateError, match="different model"):
        wide.load_state(path)
    v6 = load(vulkan_device, "v6_L2_C64_V67")  # same L and C, another version
    with pytest.raises(rw.StateError, match="version"):
        v6.load_state(path)
    with pytest.raises(rw.StateError, match="version"):
        v4.load_state(path)
    v4_path = tmp_path / "v4.st"
    v4.new_state().save(v4_path)
    with pytest.raises(rw.StateError):
        v7.load_state(v4_path)
    # the owner still loads it
    assert v7.load_state(path).batch_size == 1


def test_state_object_of_another_model_is_refused(v7, v4):
    with pytest.raises(rw.StateError):
        v7.forward([1], v4.new_state())
    with pytest.raises(rw.StateError):
        v7.new_state().copy_slot(0, 0, v4.new_state())


def test_broken_state_files_raise_rwkv_errors(tmp_path, v7):
    good = tmp_path / "good.st"
    v7.new_state(2).save(good)
    data = good.read_bytes()
    cases = {
        "truncated": data[: len(data) // 2],
        "header_only": data[:40],
        "empty": b"",
        "garbage": np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "text": b"this is not a state file\n" * 10,
    }
    for name, raw in cases.items():
        p = tmp_path / f"{name}.st"
        p.write_bytes(raw)
        with pytest.raises(rw.RWKVError):
            v7.load_state(p)
    with pytest.raises(rw.CheckpointError):
        v7.load_state(tmp_path / "missing.st")
    # a well-formed safetensors file that is not a state
    plain = tmp_path / "plain.safetensors"
    safetensors_io.save_safetensors({"x": np.zeros(3, np.float32)}, str(plain))
    with pytest.raises(rw.StateError):
        v7.load_state(plain)
    # right metadata, wrong tensor shapes
    arrays = v7.new_state(2).to_numpy()
    arrays["wkv"] = arrays["wkv"][:, :1]
    meta = safetensors_io.SafetensorsReader(str(good)).metadata
    bad = tmp_path / "badshape.st"
    safetensors_io.save_safetensors(arrays, str(bad), meta)
    with pytest.raises(rw.StateError):
        v7.load_state(bad)
    assert v7.load_state(good).batch_size == 2  # unaffected


def test_save_is_atomic(tmp_path, v7, monkeypatch):
    state = v7.new_state()
    v7.forward([1, 2, 3], state)
    path = tmp_path / "s.st"
    state.save(path)
    before = path.read_bytes()
    v7.forward([4, 5], state)  # the state moves on

    real = safetensors_io.write_safetensors
    written: list[str] = []

    def failing(path, specs, produce, metadata=None, progress=None):
        def produce_then_fail(spec):
            if written:  # the header and one tensor are already in the temporary file
                raise OSError("disk full (simulated)")
            written.append(spec.name)
            return produce(spec)

        return real(path, specs, produce_then_fail, metadata, progress)

    monkeypatch.setattr(safetensors_io, "write_safetensors", failing)
    with pytest.raises(OSError, match="simulated"):
        state.save(path)
    assert written  # the failure happened midway, not before writing started
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["s.st"]  # no temporary file left behind
    with pytest.raises(OSError):
        state.save(tmp_path / "new.st")
    assert os.listdir(tmp_path) == ["s.st"]
    monkeypatch.undo()
    # the old file still loads, and a new save replaces it
    old = v7.load_state(path)
    assert not same(old.to_numpy(), state.to_numpy())
    state.save(path)
    assert same(v7.load_state(path).to_numpy(), state.to_numpy())
    assert os.listdir(tmp_path) == ["s.st"]


# -- per-slot operations -------------------------------------------------------------------------


@pytest.fixture
def busy(v7):
    """A 3-slot state whose slots hold different sequences."""
    v = v7.info.num_vocab
    state = v7.new_state(3)
    v7.forward_batch([toks(5, 10, v), toks(3, 11, v), toks(4, 12, v)], state)
    return state


def test_to_numpy_and_get_slot_layout(v7, busy):
    arrays = busy.to_numpy()
    L = v7.info.num_layer
    assert set(arrays) == set(v7.state_spec())
    for name, shape in v7.state_spec().items():
        assert arrays[name].shape == (L, 3, *shape)
        assert arrays[name].dtype == np.float32
    for b in range(3):
        slot = busy.get_slot(b)
        assert same(slot, {k: a[:, b] for k, a in arrays.items()})
    assert not np.array_equal(arrays["wkv"][:, 0], arrays["wkv"][:, 1])


def test_reset_one_slot_and_all(v7, v4, busy):
    before = busy.to_numpy()
    busy.reset(1)
    after = busy.to_numpy()
    init = v7.initial_state()
    for k in before:
        assert np.array_equal(after[k][:, 1], init[k])
        assert np.array_equal(after[k][:, [0, 2]], before[k][:, [0, 2]])
    busy.reset()
    assert all(
        np.array_equal(a, np.broadcast_to(init[k][:, None], a.shape))
        for k, a in busy.to_numpy().items()
    )
    # V4's initial state is not all zeros (the log-space maximum starts at -1e30)
    s = v4.new_state(2)
    v4.forward_batch([[1, 2], [3]], s)
    s.reset(0)
    got = s.get_slot(0)
    assert got["wkv"][:, 2].max() <= -1e29
    assert same(got, v4.initial_state())
    assert np.array_equal(v4.forward([5, 6], s, slot=0), v4.forward([5, 6], v4.new_state()))
    with pytest.raises(rw.StateError, match="slot 2"):
        s.reset(2)


def test_set_slot_and_errors(v7, busy):
    slot0 = busy.get_slot(0)
    busy.set_slot(2, slot0)
    assert same(busy.get_slot(2), slot0)
    bad = dict(slot0)
    bad["wkv"] = bad["wkv"][:1]
    with pytest.raises(rw.StateError, match="wkv"):
        busy.set_slot(1, bad)
    with pytest.raises(rw.StateError):
        busy.set_slot(1, {k: v for k, v in slot0.items() if k != "att_shift"})
    for fn in (busy.get_slot, busy.extract):
        with pytest.raises(rw.StateError):
            fn(3)
        with pytest.raises(rw.StateError):
            fn(-1)


def test_copy_slot_within_a_state(v7, busy):
    before = busy.to_numpy()
    busy.copy_slot(0, 2)
    after = busy.to_numpy()
    for k in before:
        assert np.array_equal(after[k][:, 2], before[k][:, 0])
        assert np.array_equal(after[k][:, :2], before[k][:, :2])
    # the copy continues exactly like the original
    out = v7.forward_batch([[7, 8], [], [7, 8]], busy)
    assert out[1] is None
    assert np.array_equal(out[0], out[2])


def test_copy_slot_across_states(v7, busy):
    before = busy.to_numpy()
    other = v7.new_state(2)
    busy.copy_slot(1, 1, other)
    assert same(other.get_slot(1), busy.get_slot(1))
    assert same(other.get_slot(0), v7.initial_state())
    other.copy_slot(1, 0, busy)  # and back, into another slot
    after = busy.to_numpy()
    for k in before:
        assert np.array_equal(after[k][:, 0], before[k][:, 1])
        assert np.array_equal(after[k][:, 1:], before[k][:, 1:])
    # the copy continues exactly like the original
    out = v7.forward_batch([[7, 8], [7, 8], []], busy)
    assert out[2] is None
    assert np.array_equal(out[0], out[1])
    with pytest.raises(rw.StateError):
        busy.copy_slot(0, 2, other)
    with pytest.raises(rw.StateError):
        busy.copy_slot(3, 0, other)


def test_extract_insert_clone(v7, busy):
    before = busy.to_numpy()
    one = busy.extract(1)
    assert one.batch_size == 1
    assert same(one.get_slot(0), busy.get_slot(1))
    # extract is a copy: advancing it leaves the source alone
    lone = v7.forward([9, 10], one)
    assert same(busy.to_numpy(), before)
    # and it continues like the slot would have
    clone = busy.clone()
    assert same(clone.to_numpy(), before)
    assert np.array_equal(lone, v7.forward([9, 10], clone, slot=1))
    assert same(busy.to_numpy(), before)  # the clone is independent
    # insert puts the advanced one-slot state into slot 0
    busy.insert(0, one)
    after = busy.to_numpy()
    for k in before:
        assert np.array_equal(after[k][:, 0], one.get_slot(0)[k])
        assert np.array_equal(after[k][:, 1:], before[k][:, 1:])
    # insert from a chosen slot of a multi-slot state
    busy.insert(2, clone, from_slot=1)
    assert same(busy.get_slot(2), clone.get_slot(1))
    with pytest.raises(rw.StateError):
        busy.insert(0, clone, from_slot=5)


def test_load_numpy_round_trip_and_errors(v7, busy):
    arrays = busy.to_numpy()
    fresh = v7.new_state(3)
    fresh.load_numpy(arrays)
    assert same(fresh.to_numpy(), arrays)
    assert np.array_equal(v7.forward([3], fresh, slot=2), v7.forward([3], busy, slot=2))
    with pytest.raises(rw.StateError, match="expected shape"):
        v7.new_state(2).load_numpy(arrays)  # batch mismatch
    with pytest.raises(rw.StateError):
        fresh.load_numpy({k: v for k, v in arrays.items() if k != "wkv"})
    # float64 input is accepted and converted
    fresh.load_numpy({k: v.astype(np.float64) for k, v in arrays.items()})
    assert same(fresh.to_numpy(), arrays)
    with pytest.raises(rw.StateError):
        v7.new_state(0)
