"""Weight quantization (numpy, at load time): Int8 with per-block min/scale, and 4-bit codebooks
(NF4, SF4) with per-block absmax. The GPU kernels in shaders/matmul_quant.wgsl decode them.

Layouts, for a matrix ``[R, K]`` padded to ``KP`` columns (a multiple of the block):
- int8: codes ``u8 [R, KP]`` (four per u32), ``mins`` and ``scales`` ``f32 [R, KP / 128]``;
  ``w = min + code * scale``.
- nf4 / sf4: codes ``u4 [R, KP]`` (eight per u32, low nibble first), ``absmax f32 [R, KP / 64]``;
  ``w = codebook[code] * absmax``.
"""

from __future__ import annotations

import enum
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError


class Quant(enum.Enum):
    """How the large attention/FFN matrices are stored on the GPU."""

    NONE = "none"
    INT8 = "int8"
    NF4 = "nf4"
    SF4 = "sf4"

    @classmethod
    def parse(cls, value: str | Quant | None) -> Quant:
        if value is None:
            return cls.NONE
        if isinstance(value, Quant):
            return value
        try:
            return cls(value.lower())
        except ValueError:
            raise ConfigError(f"unknown quantization {value!r}; choose from {[q.value for q in cls]}") from None


# The matrices quantization applies to: each layer's large attention/FFN ones (the embedding,
# head and small LoRA matrices stay f16).
QUANTIZABLE = frozenset(
    f"{block}.{name}.weight"
    for block, names in (("att", ("receptance", "key", "value", "output", "gate")), ("ffn", ("key", "value", "receptance")))
    for name in names
)


def quantized_here(name: str, quant: Quant, layers: set[int]) -> bool:
    """Whether ``name`` is one of the large attention/FFN matrices of a layer in ``layers``."""
    parts = name.split(".", 2)
    if quant is Quant.NONE or len(parts) < 3 or parts[0] != "blocks" or not parts[1].isdigit():
        return False
    return int(parts[1]) in layers and parts[2] in QUANTIZABLE


INT8_BLOCK = 128
Q4_BLOCK = 64
# NF4: the 16 quantiles of a unit normal, scaled to [-1, 1] (as in QLoRA).
NF4_CODES = np.array([
    -1.0, -0.6961928, -0.52507305, -0.39491749, -0.28444138, -0.18477343, -0.09105004, 0.0,
    0.0795803, 0.1609302, 0.2461123, 0.33791524, 0.44070983, 0.562617, 0.72295684, 1.0,
], dtype=np.float32)  # fmt: skip
# SF4: a small float (1 sign, 2 exponent, 1 mantissa bits: 0, 0.5, 1, 1.5, 2, 3, 4, 6) scaled to [-1, 1].
SF4_CODES = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6], dtype=np.float32) / 6.0
CODEBOOKS = {Quant.NF4: NF4_CODES, Quant.SF4: SF4_CODES}


@dataclass
class QuantizedMatrix:
    """Host-side result of quantizing one ``[R, K]`` matrix."""

    quant: Quant
    rows: int
    k: int
    kp: int
    codes: np.ndarray  # u32 [R, KP / 4] (int8) or [R, KP / 8] (4-bit)
    scales: np.ndarray  # f32 [R, KP / block] x (2 for int8: mins then scales) interleaved per row

    def dequantize(self) -> np.ndarray:
        """The matrix the GPU computes with, ``f32 [R, K]`` (for tests and error reports)."""
        if self.quant is Quant.INT8:
            q = self.codes.view(np.uint8).reshape(self.rows, self.kp).astype(np.float32)
            nb = self.kp // INT8_BLOCK
            mins, scales = self.scales[:, :nb], self.scales[:, nb:]
            w = q.reshape(self.rows, nb, INT8_BLOCK) * scales[..., None] + mins[..., None]
        else:
            b = self.codes.view(np.uint8).reshape(self.rows, self.kp // 2)
            idx = np.stack([b & 15, b >> 4], axis=-1).reshape(self.rows, self.kp)
            nb = self.kp // Q4_BLOCK
            w = CODEBOOKS[self.quant][idx].reshape(self.rows, nb, Q4_BLOCK) * self.scales[..., None]
        return w.reshape(self.rows, self.kp)[:, : self.k]


QUANT_CHUNK_ROWS = 512  # rows quantized per task; the tasks run on every core (numpy releases the GIL)


def quantize(w: np.ndarray, quant: Quant) -> QuantizedMatrix:
    """Quantize ``w`` ``[R, K]`` (rows are output features, as in a PyTorch Linear). Rows are
    independent, so chunks of QUANT_CHUNK_ROWS run in parallel (a 1.6B model's matrices: ~18 s on
    one core)."""
    w = np.asarray(w, dtype=np.float32)
    rows, k = w.shape
    block = INT8_BLOCK if quant is Quant.INT8 else Q4_BLOCK
    kp = -(-k // block) * block
    nb = kp // block
    if quant is Quant.INT8:
        codes = np.empty((rows, kp), np.uint8)
        scales = np.empty((rows, 2 * nb), np.float32)  # per row: the mins, then the steps
    else:
        codes = np.empty((rows, kp // 2), np.uint8)
        scales = np.empty((rows, nb), np.float32)  # absmax
        book = CODEBOOKS[quant]
        # nearest codebook entry: the rank among the midpoints of the sorted codes (counting the
        # midpoints below a value is searchsorted's answer, 2x faster for 15 of them)
        order = np.argsort(book).astype(np.uint8)
        mids = (book[order][1:] + book[order][:-1]) / 2

    def chunk(r0: int) -> None:
        r1 = min(rows, r0 + QUANT_CHUNK_ROWS)
        padded = np.zeros((r1 - r0, kp), np.float32)
        padded[:, :k] = w[r0:r1]
        blocks = padded.reshape(r1 - r0, nb, block)
        if quant is Quant.INT8:
            lo = blocks.min(-1)
            step = (blocks.max(-1) - lo) / 255.0
            step = np.where(step > 0, step, 1.0).astype(np.float32)
            q = np.clip(np.rint((blocks - lo[..., None]) / step[..., None]), 0, 255)
            codes[r0:r1] = q.reshape(r1 - r0, kp)
            scales[r0:r1, :nb] = lo
            scales[r0:r1, nb:] = step
            return
        absmax = np.abs(blocks).max(-1)
        absmax = np.where(absmax > 0, absmax, 1.0).astype(np.float32)
        part = blocks / absmax[..., None]
        rank = np.zeros(part.shape, np.uint8)
        for m in mids:
            rank += part > m
        idx = order[rank].reshape(r1 - r0, kp)
        codes[r0:r1] = idx[:, 0::2] | (idx[:, 1::2] << 4)
        scales[r0:r1] = absmax

    starts = range(0, rows, QUANT_CHUNK_ROWS)
    if len(starts) == 1:
        chunk(0)
    else:
        with ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1, len(starts))) as pool:
            list(pool.map(chunk, starts))
    return QuantizedMatrix(quant, rows, k, kp, codes.view(np.uint32), scales)
