"""Raw tensor descriptions shared by the file readers, and block-wise conversion.

A reader hands out zero-copy numpy *views* of the bytes in a file (memory-mapped where
possible). bfloat16 has no numpy dtype, so its views are ``uint16`` and :func:`materialize`
widens them (``u16 << 16`` reinterpreted as ``f32``). Conversion runs in row blocks so the
peak memory stays about one copy of the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

# Canonical dtype tags used across the weights package (safetensors spells them upper-case).
_NUMPY_OF_TAG: dict[str, str] = {
    "bf16": "u2",  # bit pattern only; widened by materialize()
    "f16": "f2",
    "f32": "f4",
    "f64": "f8",
    "i8": "i1",
    "i16": "i2",
    "i32": "i4",
    "i64": "i8",
    "u8": "u1",
    "u16": "u2",
    "u32": "u4",
    "u64": "u8",
    "bool": "?",
}

_BLOCK_BYTES = 16 << 20  # conversion scratch per block: bounded, still large enough to be fast


def numpy_dtype(tag: str, byteorder: str = "little") -> np.dtype:
    """The numpy dtype storing a tensor of dtype ``tag`` (bf16 -> its uint16 bit pattern)."""
    code = _NUMPY_OF_TAG[tag]
    if code in ("?", "i1", "u1"):
        return np.dtype(code)
    return np.dtype(("<" if byteorder == "little" else ">") + code)


def itemsize(tag: str) -> int:
    return np.dtype(_NUMPY_OF_TAG[tag]).itemsize


def known_tag(tag: str) -> bool:
    return tag in _NUMPY_OF_TAG


@dataclass(frozen=True)
class TensorInfo:
    """What a reader knows about one tensor before reading it."""

    dtype: str  # a tag of _NUMPY_OF_TAG
    shape: tuple[int, ...]


class RawReader(Protocol):
    """What :class:`~rwkv_webgpu.weights.checkpoint.Checkpoint` needs from a file format."""

    path: str

    def names(self) -> list[str]: ...

    def info(self, name: str) -> TensorInfo: ...

    def view(self, name: str) -> np.ndarray:
        """Zero-copy (possibly strided) array of the stored elements; bf16 as uint16."""
        ...

    def close(self) -> None: ...


def widen_bf16(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) -> float32, exact."""
    wide = bits.astype(np.uint32)
    wide <<= 16
    return wide.view(np.float32)


def materialize(view: np.ndarray, src_tag: str, dtype: np.dtype | type) -> np.ndarray:
    """Copy ``view`` into a new C-contiguous array of ``dtype``, converting in row blocks."""
    out_dtype = np.dtype(dtype)
    out = np.empty(view.shape, dtype=out_dtype)
    if view.size == 0:
        return out
    if view.ndim == 0:
        out[...] = widen_bf16(view) if src_tag == "bf16" else view
        return out
    row_bytes = max(1, (view.size // view.shape[0]) * max(4, out_dtype.itemsize))
    step = max(1, _BLOCK_BYTES // row_bytes)
    for start in range(0, view.shape[0], step):
        block = view[start : start + step]
        out[start : start + step] = widen_bf16(block) if src_tag == "bf16" else block
    return out
