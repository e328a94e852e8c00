"""A ``.pth`` pickle is untrusted: anything but plain tensors is refused and never run."""

from __future__ import annotations

import builtins
import collections
import os
import pickle
import zipfile
from pathlib import Path

import pytest

from rwkv_webgpu.errors import CheckpointError, UnsafeCheckpointError
from rwkv_webgpu.weights import open_checkpoint


def _torch_zip(path: Path, pickled: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickled)
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/version", "3\n")
    return path


class _System:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


class _Eval:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (builtins.eval, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("gadget", [_System, _Eval])
def test_reduce_gadget_refused_and_not_run(tmp_path: Path, gadget: type, protocol: int) -> None:
    marker = tmp_path / "pwned"
    state = collections.OrderedDict(weight=gadget(marker))
    path = _torch_zip(tmp_path / "evil.pth", pickle.dumps(state, protocol=protocol))
    with pytest.raises(UnsafeCheckpointError) as err:
        open_checkpoint(path)
    assert not marker.exists()
    msg = str(err.value)
    assert "evil.pth" in msg
    assert (".system" in msg) if gadget is _System else ("builtin" in msg and ".eval" in msg)


@pytest.mark.parametrize(
    "module, name", [("torch", "load"), ("numpy", "frombuffer"), ("subprocess", "Popen")]
)
def test_any_other_global_refused(tmp_path: Path, module: str, name: str) -> None:
    pickled = b"\x80\x02c" + f"{module}\n{name}\n".encode() + b")R."
    with pytest.raises(UnsafeCheckpointError, match=f"{module}.{name}"):
        open_checkpoint(_torch_zip(tmp_path / "g.pth", pickled))


def test_build_cannot_patch_allowed_types(tmp_path: Path) -> None:
    # GLOBAL collections.OrderedDict; BUILD (None, {"foo": 1}) -> setattr(OrderedDict, "foo", 1)
    pickled = b"\x80\x02ccollections\nOrderedDict\nN}X\x03\x00\x00\x00fooK\x01s\x86b."
    with pytest.raises(CheckpointError):
        open_checkpoint(_torch_zip(tmp_path / "b.pth", pickled))
    assert not hasattr(collections.OrderedDict, "foo")
    # BUILD on our stand-in for torch's rebuild function
    pickled = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n}X\x01\x00\x00\x00xK\x01sb."
    with pytest.raises(CheckpointError):
        open_checkpoint(_torch_zip(tmp_path / "c.pth", pickled))


def test_malformed_tensor_records(tmp_path: Path) -> None:
    # _rebuild_tensor_v2("not a storage", 0, (2,), (1,)) inside a dict
    pickled = (
        b"\x80\x02}X\x01\x00\x00\x00actorch._utils\n_rebuild_tensor_v2\n"
        b"(X\x03\x00\x00\x00badK\x00K\x02\x85K\x01\x85tRs."
    )
    with pytest.raises(CheckpointError, match="malformed"):
        open_checkpoint(_torch_zip(tmp_path / "m.pth", pickled))


def test_not_a_dict(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not a state dict"):
        open_checkpoint(_torch_zip(tmp_path / "l.pth", pickle.dumps([1, 2], protocol=2)))


def test_bad_persistent_id(tmp_path: Path) -> None:
    # {"a": persistent_load(("storage", "x"))}
    pickled = b"\x80\x02}X\x01\x00\x00\x00a(X\x07\x00\x00\x00storageX\x01\x00\x00\x00xtQs."
    with pytest.raises(CheckpointError, match="persistent id"):
        open_checkpoint(_torch_zip(tmp_path / "p.pth", pickled))
