"""Weight quantization (numpy, at load time): Int8 with per-block min/scale, and 4-bit codebooks
(NF4, SF4) with per-block absmax. The GPU kernels in shaders/matmul_quant.wgsl decode them.

Layouts, for a matrix ``[R, K]`` padded to ``KP`` columns (a multiple of the block):
- int8: codes ``u8 [R, KP]`` (four per u32), ``mins`` and ``scales`` ``f32 [R, KP / 128]``;
  ``w = min + code * scale``.
- nf4 / sf4: codes ``u4 [R, KP]`` (eight per u32, low nibble first), ``absmax f32 [R, KP / 64]``;
  ``w = codebook[code] * absmax``.

A :class:`QuantPlan` says which kind each matrix gets: one kind for all, or a mix (attention in
int8 and the FFN in 4 bits, say), so one model can hold matrices of several kinds.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

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
        if not isinstance(value, str):
            raise ConfigError(f"quantization must be a name such as 'int8' or a mix, got {value!r}")
        try:
            return cls(value.lower())
        except ValueError:
            raise ConfigError(f"unknown quantization {value!r}; choose from {[q.value for q in cls]}") from None


# The matrices quantization applies to: each layer's large attention/FFN ones (the embedding,
# head and small LoRA matrices stay f16).
BLOCKS = {"att": ("receptance", "key", "value", "output", "gate"), "ffn": ("key", "value", "receptance")}
QUANTIZABLE = frozenset(f"{block}.{name}.weight" for block, names in BLOCKS.items() for name in names)
PLAN_KEYS = ("att", "ffn", *(f"{block}.{name}" for block, names in BLOCKS.items() for name in names))


@dataclass(frozen=True)
class QuantPlan:
    """The kind each large matrix is stored in: one for all of them (``"nf4"``), or a mix chosen
    per block or per matrix (``{"att": "int8", "ffn": "nf4"}``; a matrix's own entry, such as
    ``"att.key"``, wins over its block's). Matrices no entry names stay f16."""

    rules: tuple[tuple[str, Quant], ...] = ()  # (key, kind); key "*" is every matrix

    @classmethod
    def parse(cls, value: Any) -> QuantPlan:
        """From None, a kind (``"int8"``, :class:`Quant`), a mapping of :data:`PLAN_KEYS` to kinds,
        or that mapping written ``"att=int8,ffn=nf4"`` (the command line's form)."""
        if isinstance(value, QuantPlan):
            return value
        if isinstance(value, str) and "=" in value:
            pairs = [item.partition("=") for item in value.split(",") if item.strip()]
            if any(not sep for _, sep, _ in pairs):
                raise ConfigError(f"quantization {value!r}: write a mix as KEY=KIND pairs, e.g. 'att=int8,ffn=nf4'")
            value = {key.strip(): kind.strip() for key, _, kind in pairs}
        if isinstance(value, Mapping):
            rules = []
            for key, kind in value.items():
                if key not in PLAN_KEYS:
                    raise ConfigError(f"quantization mix: unknown matrix {key!r}; choose from {list(PLAN_KEYS)}")
                try:
                    rules.append((key, Quant.parse(kind)))
                except ConfigError as exc:
                    raise ConfigError(f"quantization mix, {key}: {exc}") from None
            return cls(tuple(sorted(rules)))
        kind = Quant.parse(value)
        return cls((("*", kind),) if kind is not Quant.NONE else ())

    def kind(self, name: str) -> Quant:
        """The kind of ``<block>.<matrix>.weight`` (a layer's name without ``blocks.N.``)."""
        if name not in QUANTIZABLE:
            return Quant.NONE
        rules = dict(self.rules)
        block, matrix, _ = name.split(".")
        return rules.get(f"{block}.{matrix}", rules.get(block, rules.get("*", Quant.NONE)))

    def __bool__(self) -> bool:
        return any(kind is not Quant.NONE for _, kind in self.rules)

    def __str__(self) -> str:
        if not self:
            return "none"
        if len(self.rules) == 1 and self.rules[0][0] == "*":
            return self.rules[0][1].value
        return ",".join(f"{key}={kind.value}" for key, kind in self.rules)


def quant_for(name: str, plan: QuantPlan, layers: set[int]) -> Quant:
    """The kind ``name`` (an official tensor name) is stored in: :data:`Quant.NONE` unless it is
    one of the large attention/FFN matrices of a layer in ``layers`` that ``plan`` quantizes."""
    parts = name.split(".", 2)
    if not plan or len(parts) < 3 or parts[0] != "blocks" or not parts[1].isdigit() or int(parts[1]) not in layers:
        return Quant.NONE
    return plan.kind(parts[2])


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
