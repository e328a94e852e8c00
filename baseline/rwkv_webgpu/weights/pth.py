"""Read an official PyTorch ``.pth`` checkpoint without torch.

A torch checkpoint is a zip archive::

    <prefix>/data.pkl      pickle of the state dict; tensors refer to storages by key
    <prefix>/data/<key>    raw bytes of each storage (stored uncompressed, 64-byte aligned)
    <prefix>/byteorder     "little" or "big" (absent in old files: little)

The pickle is untrusted input. :class:`_StateDictUnpickler` resolves only the handful of
globals a plain state dict of tensors uses, each to a harmless stand-in of ours; any other
global raises :class:`UnsafeCheckpointError` before anything is called. Tensors stay lazy:
parsing records dtype, shape, stride and offset, and bytes are memory-mapped on request.
"""

from __future__ import annotations

import collections
import io
import mmap
import pickle
import struct
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import CheckpointError, RWKVError, UnsafeCheckpointError
from ._arrays import TensorInfo, itemsize, numpy_dtype

# torch storage class name -> dtype tag
_STORAGE_TAGS: dict[str, str] = {
    "BFloat16Storage": "bf16",
    "HalfStorage": "f16",
    "FloatStorage": "f32",
    "DoubleStorage": "f64",
    "CharStorage": "i8",
    "ShortStorage": "i16",
    "IntStorage": "i32",
    "LongStorage": "i64",
    "ByteStorage": "u8",
    "BoolStorage": "bool",
}

_ZIP_MAGIC = b"PK\x03\x04"
_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, ..., name length, extra length


@dataclass(frozen=True)
class _StorageType:
    """Stand-in for ``torch.<X>Storage``: only its dtype matters."""

    tag: str

    def __setstate__(self, state: object) -> None:
        raise UnsafeCheckpointError("pickle tried to modify a storage type")


@dataclass(frozen=True)
class _StorageRef:
    """A persistent id ('storage', type, key, location, numel) after validation."""

    tag: str
    key: str
    numel: int


@dataclass(frozen=True)
class _TensorRef:
    """A tensor as the pickle describes it; no bytes read yet."""

    storage: _StorageRef
    offset: int  # in elements
    shape: tuple[int, ...]
    stride: tuple[int, ...]  # in elements


class _Rebuild:
    """Stand-in for the torch functions that turn a storage into a tensor or parameter."""

    __slots__ = ("kind",)

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __setstate__(self, state: object) -> None:
        raise UnsafeCheckpointError(f"pickle tried to modify {self.kind}")

    def __call__(self, *args: Any) -> Any:
        if self.kind == "tensor":
            return _rebuild_tensor(*args)
        if self.kind == "parameter":  # (data, requires_grad, hooks[, state])
            if not args or not isinstance(args[0], _TensorRef):
                raise CheckpointError("malformed parameter record in pickle")
            return args[0]
        raise CheckpointError(f"unexpected call to {self.kind} in pickle")


def _int_tuple(value: object, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
    ):
        raise CheckpointError(f"malformed tensor {what} in pickle: {value!r}")
    return value


def _rebuild_tensor(
    storage: object, offset: object, size: object, stride: object, *_rest: object
) -> _TensorRef:
    # torch: _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, hooks, ...)
    if not isinstance(storage, _StorageRef) or not isinstance(offset, int) or offset < 0:
        raise CheckpointError("malformed tensor record in pickle")
    shape = _int_tuple(size, "size")
    strides = _int_tuple(stride, "stride")
    if len(shape) != len(strides):
        raise CheckpointError(f"tensor size {shape} and stride {strides} differ in length")
    return _TensorRef(storage, offset, shape, strides)


# (module, name) -> stand-in. Nothing else may be named by the pickle.
_ALLOWED: dict[tuple[str, str], object] = {
    ("collections", "OrderedDict"): collections.OrderedDict,  # C type: immutable, inert
    ("torch._utils", "_rebuild_tensor_v2"): _Rebuild("tensor"),
    ("torch._utils", "_rebuild_parameter"): _Rebuild("parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"): _Rebuild("parameter"),
    **{("torch", n): _StorageType(t) for n, t in _STORAGE_TAGS.items()},
}


class _StateDictUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, path: str) -> None:
        super().__init__(io.BytesIO(data))
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        stand_in = _ALLOWED.get((module, name))
        if stand_in is None:
            raise UnsafeCheckpointError(
                f"{self._path}: refusing to load global {module}.{name} from the pickle "
                "(a checkpoint should hold only tensors)"
            )
        return stand_in

    def persistent_load(self, pid: Any) -> _StorageRef:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise CheckpointError(f"{self._path}: unexpected persistent id {pid!r:.80}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType) or not isinstance(key, str):
            raise CheckpointError(f"{self._path}: malformed storage reference {pid!r:.80}")
        if not isinstance(numel, int) or numel < 0:
            raise CheckpointError(f"{self._path}: bad storage size in {pid!r:.80}")
        return _StorageRef(storage_type.tag, key, numel)


def is_pth(head: bytes) -> bool:
    return head.startswith(_ZIP_MAGIC)


def _collect(obj: object, path: str) -> dict[str, _TensorRef]:
    """name -> tensor from the unpickled top-level object (a dict, maybe under 'state_dict')."""
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: the pickle holds {type(obj).__name__}, not a state dict")
    # Non-tensor entries (an epoch counter, say) are not weights: skip them.
    return {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, _TensorRef)}


def _elements_needed(ref: _TensorRef) -> int:
    """How many storage elements the tensor spans (0 for an empty tensor)."""
    if 0 in ref.shape:
        return 0
    return ref.offset + 1 + sum((n - 1) * s for n, s in zip(ref.shape, ref.stride))


class PthReader:
    """Lazy reader of one ``.pth`` file (see module docstring)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._file = open(path, "rb")  # noqa: SIM115 - closed in close()
        try:
            self._open()
        except BaseException:
            self._file.close()
            raise

    def _open(self) -> None:
        try:
            self._zip = zipfile.ZipFile(self._file)
        except (zipfile.BadZipFile, OSError, ValueError) as e:
            raise CheckpointError(f"{self.path}: not a readable torch zip checkpoint ({e})") from e
        pickles = [n for n in self._zip.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise CheckpointError(
                f"{self.path}: expected one data.pkl in the zip, found {len(pickles)}"
            )
        self._prefix = pickles[0][: -len("data.pkl")]
        self._byteorder = self._read_byteorder()
        try:
            data = self._zip.read(pickles[0])
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise CheckpointError(f"{self.path}: cannot read {pickles[0]} ({e})") from e
        try:
            obj = _StateDictUnpickler(data, self.path).load()
        except RWKVError as e:
            if self.path in str(e):
                raise
            raise type(e)(f"{self.path}: {e}") from e
        except Exception as e:  # any malformed pickle: never let it look like success
            raise CheckpointError(f"{self.path}: corrupt pickle in data.pkl ({e})") from e
        self._tensors = _collect(obj, self.path)
        self._mm: mmap.mmap | None = None
        self._size = self._file.seek(0, io.SEEK_END)
        for name, ref in self._tensors.items():
            self._check_extent(name, ref)

    def _read_byteorder(self) -> str:
        try:
            raw = self._zip.read(self._prefix + "byteorder").decode().strip()
        except KeyError:
            return "little"
        except (zipfile.BadZipFile, OSError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{self.path}: unreadable byteorder record ({e})") from e
        if raw not in ("little", "big"):
            raise CheckpointError(f"{self.path}: unknown byteorder {raw!r}")
        return raw

    def _member(self, name: str, ref: _TensorRef) -> zipfile.ZipInfo:
        try:
            return self._zip.getinfo(f"{self._prefix}data/{ref.storage.key}")
        except KeyError:
            raise CheckpointError(
                f"{self.path}: storage {ref.storage.key!r} of tensor {name!r} is missing"
            ) from None

    def _check_extent(self, name: str, ref: _TensorRef) -> None:
        """The tensor must lie inside its storage, and the storage inside its zip member."""
        member = self._member(name, ref)
        need = _elements_needed(ref)
        have = min(ref.storage.numel, member.file_size // itemsize(ref.storage.tag))
        if need > have:
            raise CheckpointError(
                f"{self.path}: tensor {name!r} needs {need} elements but its storage "
                f"{ref.storage.key!r} holds {have} (truncated or corrupt file)"
            )

    def names(self) -> list[str]:
        return list(self._tensors)

    def info(self, name: str) -> TensorInfo:
        ref = self._tensors[name]
        return TensorInfo(ref.storage.tag, ref.shape)

    def _storage_bytes(self, name: str, ref: _TensorRef) -> np.ndarray:
        member = self._member(name, ref)
        nbytes = ref.storage.numel * itemsize(ref.storage.tag)
        nbytes = min(nbytes, member.file_size)
        if member.compress_type != zipfile.ZIP_STORED:
            try:
                return np.frombuffer(self._zip.read(member), dtype=np.uint8)[:nbytes]
            except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
                raise CheckpointError(f"{self.path}: cannot read tensor {name!r} ({e})") from e
        self._file.seek(member.header_offset)
        sig, name_len, extra_len = _LOCAL_HEADER.unpack(self._file.read(_LOCAL_HEADER.size))
        start = member.header_offset + _LOCAL_HEADER.size + name_len + extra_len
        if sig != _ZIP_MAGIC or start + nbytes > self._size:
            raise CheckpointError(f"{self.path}: data of tensor {name!r} is truncated or corrupt")
        if nbytes == 0:
            return np.zeros(0, dtype=np.uint8)
        if self._mm is None:
            self._mm = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        return np.frombuffer(self._mm, dtype=np.uint8, count=nbytes, offset=start)

    def view(self, name: str) -> np.ndarray:
        ref = self._tensors[name]
        dt = numpy_dtype(ref.storage.tag, self._byteorder)
        raw = self._storage_bytes(name, ref)
        elems = raw[: (raw.size // dt.itemsize) * dt.itemsize].view(dt)
        if 0 in ref.shape:
            return np.zeros(ref.shape, dtype=dt)
        if elems.size < _elements_needed(ref):  # guarded at open; as_strided must never overrun
            raise CheckpointError(f"{self.path}: storage of tensor {name!r} is too short")
        return np.lib.stride_tricks.as_strided(
            elems[ref.offset :],
            shape=ref.shape,
            strides=tuple(s * dt.itemsize for s in ref.stride),
            writeable=False,
        )

    def close(self) -> None:
        if getattr(self, "_mm", None) is not None:
            assert self._mm is not None
            try:
                self._mm.close()
            except BufferError:  # a view is still alive somewhere; the GC will unmap it
                pass
            self._mm = None
        zf = getattr(self, "_zip", None)
        if zf is not None:
            zf.close()
        self._file.close()
