"""GPU-resident arrays: f32 activation views and f16 weight matrices split to fit bindings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .device import Device


@dataclass(frozen=True)
class Act:
    """A 2-D f32 view ``[rows, cols]`` into a storage buffer (rows = tokens, usually).

    ``offset`` and ``stride`` are in elements; rows beyond the step's count are ignored.
    """

    buffer: Any
    cols: int
    stride: int
    offset: int = 0
    max_rows: int = 0

    def at(self, offset: int, cols: int | None = None) -> Act:
        """Another view into the same buffer, ``offset`` elements further."""
        return Act(self.buffer, cols or self.cols, self.stride, self.offset + offset, self.max_rows)


def act_buffer(device: Device, rows: int, cols: int, label: str, planes: int = 1) -> Act:
    """A fresh zeroed ``[planes, rows, cols]`` f32 buffer seen as its first plane."""
    buf = device.storage(planes * rows * cols * 4, label)
    return Act(buf, cols, cols, 0, rows)


@dataclass(frozen=True)
class BufferRange:
    """A byte range of a storage buffer, bound in place of the whole buffer (``offset`` is a
    multiple of 256, the largest offset alignment WebGPU lets an adapter ask for)."""

    buffer: Any
    offset: int
    size: int


def vec4_start(buffer: Any) -> tuple[Any, int]:
    """A buffer or BufferRange as (the whole buffer, the vec4 its data starts at): for kernels
    that bind the whole buffer and index from there."""
    if isinstance(buffer, BufferRange):
        return buffer.buffer, buffer.offset // 16
    return buffer, 0


@dataclass(frozen=True)
class MatrixPart:
    buffer: Any  # a buffer, or a BufferRange of a buffer shared with other matrices
    row0: int
    rows: int


@dataclass(frozen=True)
class Matrix:
    """A weight matrix ``[R, K]`` (PyTorch Linear order: out x in) stored as f16 pairs in u32.

    Rows are padded to ``kp`` (a multiple of 8) so a thread loads 8 weights at once, and the
    matrix is cut into row blocks so no binding exceeds the adapter's limit.
    """

    parts: tuple[MatrixPart, ...]
    rows: int
    k: int
    kp: int

    @property
    def nbytes(self) -> int:
        return self.rows * self.kp * 2


def upload_matrix(device: Device, w: np.ndarray, label: str) -> Matrix:
    """Store ``w`` ([R, K], any float dtype) on the GPU as f16, split by rows to fit bindings."""
    if w.ndim != 2:
        raise ValueError(f"{label}: a matrix must be 2-D, got shape {w.shape}")
    rows, k = w.shape
    kp = (k + 7) // 8 * 8
    row_bytes = kp * 2
    limit = min(device.info.max_binding_size, device.info.max_buffer_size)
    # a dispatch covers at most 65535 workgroups of 4 rows in x
    per_part = max(1, min(limit // row_bytes, 65535 * 4))
    parts = []
    for r0 in range(0, rows, per_part):
        r1 = min(rows, r0 + per_part)
        block = np.zeros((r1 - r0, kp), dtype=np.float16)
        block[:, :k] = w[r0:r1]
        parts.append(MatrixPart(device.upload(block.view(np.uint32), f"{label}[{r0}:{r1}]"), r0, r1 - r0))
    return Matrix(tuple(parts), rows, k, kp)


RANGE_ALIGN = 256


def _aligned_ranges(sizes: list[int]) -> tuple[list[int], int]:
    """Offsets of byte ranges of ``sizes`` back to back, each start RANGE_ALIGN-aligned, and the
    total."""
    offsets, total = [], 0
    for size in sizes:
        offsets.append(total)
        total += -(-size // RANGE_ALIGN) * RANGE_ALIGN
    return offsets, total


def upload_matrices(device: Device, ws: list[np.ndarray], labels: list[str]) -> list[Matrix]:
    """Store several matrices back to back in one buffer (each start 256-byte aligned), so one
    dispatch can read them all (ops.matmul_group); each is still a Matrix of its own. A single
    matrix, or matrices that would not fit one binding together, are uploaded separately."""
    kps = [(w.shape[1] + 7) // 8 * 8 for w in ws]
    offsets, total = _aligned_ranges([w.shape[0] * kp * 2 for w, kp in zip(ws, kps)])
    if len(ws) < 2 or total > min(device.info.max_binding_size, device.info.max_buffer_size):
        return [upload_matrix(device, w, label) for w, label in zip(ws, labels)]
    raw = np.zeros(total, np.uint8)
    mats = []
    for w, kp, off in zip(ws, kps, offsets):
        rows, k = w.shape
        block = raw[off : off + rows * kp * 2].view(np.float16).reshape(rows, kp)
        block[:, :k] = w
        mats.append((rows, k, kp, off))
    buffer = device.upload(raw.view(np.uint32), "+".join(labels))
    return [Matrix((MatrixPart(BufferRange(buffer, off, rows * kp * 2), 0, rows),), rows, k, kp) for rows, k, kp, off in mats]


@dataclass(frozen=True)
class QMatrixPart:
    codes: Any
    scales: Any
    row0: int
    rows: int


@dataclass(frozen=True)
class QMatrix:
    """A quantized weight matrix ``[R, K]`` on the GPU (see rwkv_webgpu/weights/quant.py)."""

    parts: tuple[QMatrixPart, ...]
    rows: int
    k: int
    kp: int
    quant: Any  # weights.quant.Quant

    @property
    def nbytes(self) -> int:
        codes = self.rows * self.kp // (1 if self.quant.value == "int8" else 2)
        blocks = self.kp // (128 if self.quant.value == "int8" else 64)
        return codes + self.rows * blocks * 4 * (2 if self.quant.value == "int8" else 1)


def upload_qmatrix(device: Device, qm: Any, label: str) -> QMatrix:
    """Upload a ``weights.quant.QuantizedMatrix``, split by rows to fit bindings."""
    limit = min(device.info.max_binding_size, device.info.max_buffer_size)
    row_bytes = qm.codes.shape[1] * 4
    per_part = max(1, min(limit // row_bytes, 65535 * 4))
    parts = []
    for r0 in range(0, qm.rows, per_part):
        r1 = min(qm.rows, r0 + per_part)
        codes = device.upload(np.ascontiguousarray(qm.codes[r0:r1]), f"{label}.codes[{r0}:{r1}]")
        scales = device.upload(np.ascontiguousarray(qm.scales[r0:r1]), f"{label}.scales[{r0}:{r1}]")
        parts.append(QMatrixPart(codes, scales, r0, r1 - r0))
    return QMatrix(tuple(parts), qm.rows, qm.k, qm.kp, qm.quant)


Weight = Matrix | QMatrix  # what a model layer holds for each linear map


def upload_qmatrices(device: Device, qms: list[Any], labels: list[str]) -> list[QMatrix]:
    """Several quantized matrices of one kind with their codes back to back in one buffer and
    their scales in another (each start 256-byte aligned), so one dispatch can read them all
    (ops.matmul_group); each is still a QMatrix of its own. Mixed kinds, a single matrix, or
    matrices that would not fit one binding together are uploaded separately."""
    limit = min(device.info.max_binding_size, device.info.max_buffer_size)
    code_offs, code_total = _aligned_ranges([qm.codes.nbytes for qm in qms])
    scale_offs, scale_total = _aligned_ranges([qm.scales.nbytes for qm in qms])
    too_big = max(code_total, scale_total) > limit or any(qm.rows > 65535 * 4 for qm in qms)
    if len(qms) < 2 or len({qm.quant for qm in qms}) > 1 or too_big:
        return [upload_qmatrix(device, qm, label) for qm, label in zip(qms, labels)]
    codes, scales = np.zeros(code_total, np.uint8), np.zeros(scale_total, np.uint8)
    for qm, co, so in zip(qms, code_offs, scale_offs):
        codes[co : co + qm.codes.nbytes] = np.ascontiguousarray(qm.codes).view(np.uint8).ravel()
        scales[so : so + qm.scales.nbytes] = np.ascontiguousarray(qm.scales, np.float32).view(np.uint8).ravel()
    name = "+".join(labels)
    cbuf = device.upload(codes.view(np.uint32), f"{name}.codes")
    sbuf = device.upload(scales.view(np.uint32), f"{name}.scales")
    return [
        QMatrix(
            (QMatrixPart(BufferRange(cbuf, co, qm.codes.nbytes), BufferRange(sbuf, so, qm.scales.nbytes), 0, qm.rows),),
            qm.rows, qm.k, qm.kp, qm.quant,
        )
        for qm, co, so in zip(qms, code_offs, scale_offs)
    ]

