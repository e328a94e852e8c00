"""Read and write ``.safetensors`` / web-rwkv ``.st`` files.

The format is small enough to handle directly, which lets us memory-map the data and read
bfloat16 (the ``safetensors`` numpy backend cannot)::

    u64 little-endian N | N bytes of JSON header | data
    header: {"<name>": {"dtype": "F16", "shape": [..], "data_offsets": [begin, end]}, ...,
             "__metadata__": {"<str>": "<str>"}}   offsets are relative to the data start

Writing streams tensor by tensor into a temporary file in the destination directory, then
fsyncs and renames it over the destination, so a crash never leaves a half-written model.
"""

from __future__ import annotations

import contextlib
import json
import math
import mmap
import os
import struct
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO

import numpy as np

from ..errors import CheckpointError
from ._arrays import TensorInfo, itemsize, known_tag, numpy_dtype

_MAX_HEADER = 100_000_000  # the limit the reference implementation enforces
_LEN = struct.Struct("<Q")


def is_safetensors(head: bytes, file_size: int) -> bool:
    """Whether the first bytes look like a safetensors header (length, then a JSON object)."""
    if len(head) < 9:
        return False
    (n,) = _LEN.unpack_from(head)
    return 2 <= n <= min(_MAX_HEADER, file_size - 8) and head[8:9] == b"{"


@dataclass(frozen=True)
class _Entry:
    info: TensorInfo
    begin: int  # absolute file offsets
    end: int


class SafetensorsReader:
    """Lazy, memory-mapped reader of one safetensors file."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._file = open(path, "rb")  # noqa: SIM115 - closed in close()
        self._mm: mmap.mmap | None = None
        try:
            self._entries, self.metadata = self._parse_header()
        except BaseException:
            self._file.close()
            raise

    def _parse_header(self) -> tuple[dict[str, _Entry], dict[str, str]]:
        size = os.fstat(self._file.fileno()).st_size
        head = self._file.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{self.path}: too short to be a safetensors file")
        (n,) = _LEN.unpack(head)
        if n > min(_MAX_HEADER, size - 8):
            raise CheckpointError(f"{self.path}: bad safetensors header length {n}")
        try:
            header = json.loads(self._file.read(n))
        except (UnicodeDecodeError, ValueError) as e:
            raise CheckpointError(f"{self.path}: safetensors header is not valid JSON ({e})") from e
        if not isinstance(header, dict):
            raise CheckpointError(f"{self.path}: safetensors header is not a JSON object")
        metadata = header.pop("__metadata__", None) or {}
        if not isinstance(metadata, dict):
            raise CheckpointError(f"{self.path}: safetensors __metadata__ is not an object")
        data_start = 8 + n
        entries = {name: self._entry(name, raw, data_start, size) for name, raw in header.items()}
        return entries, {str(k): str(v) for k, v in metadata.items()}

    def _entry(self, name: str, raw: object, data_start: int, size: int) -> _Entry:
        where = f"{self.path}: tensor {name!r}"
        if not isinstance(raw, dict):
            raise CheckpointError(f"{where}: malformed header entry")
        tag = str(raw.get("dtype", "")).lower()
        shape, offsets = raw.get("shape"), raw.get("data_offsets")
        if not known_tag(tag):
            raise CheckpointError(f"{where}: unsupported dtype {raw.get('dtype')!r}")
        if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
            raise CheckpointError(f"{where}: malformed shape {shape!r}")
        if not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(isinstance(o, int) for o in offsets)
            and 0 <= offsets[0] <= offsets[1]
        ):
            raise CheckpointError(f"{where}: malformed data_offsets {offsets!r}")
        begin, end = data_start + offsets[0], data_start + offsets[1]
        if end - begin != math.prod(shape) * itemsize(tag):
            raise CheckpointError(
                f"{where}: {end - begin} bytes stored but shape {tuple(shape)} {tag} needs "
                f"{math.prod(shape) * itemsize(tag)}"
            )
        if end > size:
            raise CheckpointError(f"{where}: data runs past the end of the file (truncated?)")
        return _Entry(TensorInfo(tag, tuple(shape)), begin, end)

    def names(self) -> list[str]:
        return list(self._entries)

    def info(self, name: str) -> TensorInfo:
        return self._entries[name].info

    def view(self, name: str) -> np.ndarray:
        e = self._entries[name]
        dt = numpy_dtype(e.info.dtype)
        if e.end == e.begin:
            return np.zeros(e.info.shape, dtype=dt)
        if self._mm is None:
            self._mm = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        count = (e.end - e.begin) // dt.itemsize
        return np.frombuffer(self._mm, dtype=dt, count=count, offset=e.begin).reshape(e.info.shape)

    def close(self) -> None:
        if self._mm is not None:
            try:
                self._mm.close()
            except BufferError:  # a view is still alive somewhere; the GC will unmap it
                pass
            self._mm = None
        self._file.close()


# ---------------------------------------------------------------------------------------------
# writing


@dataclass(frozen=True)
class TensorSpec:
    """One tensor to write: its name, dtype tag ("f16", "f32", ...) and shape."""

    name: str
    dtype: str
    shape: tuple[int, ...]


def tag_of(dtype: np.dtype) -> str:
    """The dtype tag of a numpy dtype (bf16 cannot be expressed in numpy)."""
    for tag in ("f16", "f32", "f64", "i8", "i16", "i32", "i64", "u8", "u16", "u32", "u64", "bool"):
        if numpy_dtype(tag).newbyteorder("=") == dtype.newbyteorder("="):
            return tag
    raise CheckpointError(f"cannot store numpy dtype {dtype} in safetensors")


@contextlib.contextmanager
def atomic_write(path: str) -> Iterator[IO[bytes]]:
    """Yield a file whose content replaces ``path`` only if the block completes."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path), suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # persist the rename itself (POSIX only)
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _header_bytes(specs: Sequence[TensorSpec], metadata: Mapping[str, str] | None) -> bytes:
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for s in specs:
        if s.name in header or s.name == "__metadata__":
            raise CheckpointError(f"duplicate or reserved tensor name {s.name!r}")
        nbytes = math.prod(s.shape) * itemsize(s.dtype)
        header[s.name] = {
            "dtype": s.dtype.upper(),
            "shape": list(s.shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    return text + b" " * (-(8 + len(text)) % 8)  # data starts 8-byte aligned


def write_safetensors(
    path: str,
    specs: Sequence[TensorSpec],
    produce: Callable[[TensorSpec], np.ndarray],
    metadata: Mapping[str, str] | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> None:
    """Write tensors one at a time: ``produce(spec)`` is called in order, right before its
    bytes are written, so only one tensor needs to be in memory. Atomic (see module doc).
    ``progress(done, total, name)`` is called after each tensor is written."""
    header = _header_bytes(specs, metadata)
    with atomic_write(path) as f:
        f.write(_LEN.pack(len(header)))
        f.write(header)
        for done, spec in enumerate(specs, 1):
            arr = produce(spec)
            if tuple(arr.shape) != spec.shape or tag_of(arr.dtype) != spec.dtype:
                raise CheckpointError(
                    f"tensor {spec.name!r}: produced {arr.dtype}{tuple(arr.shape)}, "
                    f"header says {spec.dtype}{spec.shape}"
                )
            arr = np.ascontiguousarray(arr, dtype=numpy_dtype(spec.dtype))  # little-endian
            f.write(arr.reshape(-1).view(np.uint8).data)
            del arr
            if progress is not None:
                progress(done, len(specs), spec.name)


def save_safetensors(
    tensors: Mapping[str, np.ndarray], path: str, metadata: Mapping[str, str] | None = None
) -> None:
    """Write numpy arrays to a safetensors file atomically (names kept in the given order)."""
    specs = [TensorSpec(n, tag_of(a.dtype), tuple(a.shape)) for n, a in tensors.items()]
    write_safetensors(path, specs, lambda s: tensors[s.name], metadata)
