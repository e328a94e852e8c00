"""Embedding rows gathered on the GPU for token ids that a kernel chose (ops.sample's output).

The host normally looks tokens up in ``Model.emb`` and writes the rows; a decoding step whose
token was sampled on the GPU reads it from the sampler's ids instead (models/chain.py), so the
step can be submitted before the id comes back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import GPUMemoryError
from ..gpu import Act, Counter, Device, Graph, ceil_div, pack_params

PARAMS = np.dtype([(n, "<u4") for n in ("c", "x_off", "x_stride", "part_rows", "row_words", "_pad0", "_pad1", "_pad2")])
WG = 64
MAX_PARTS = 4  # table parts the kernel binds (bindings 4-7)


@dataclass(frozen=True)
class EmbeddingTable:
    """A ``[V, C]`` table on the GPU in parts of ``part_rows`` rows (one binding each), rows of
    ``row_words`` u32: f16 pairs (``f16``) or f32 bits."""

    parts: tuple[Any, ...]
    rows: int
    cols: int
    part_rows: int
    row_words: int
    f16: bool

    @property
    def nbytes(self) -> int:
        return self.rows * self.row_words * 4


def upload_table(device: Device, emb: np.ndarray, label: str = "emb", max_part_bytes: int | None = None) -> EmbeddingTable:
    """Upload ``emb`` ([V, C], f16 or f32) split so that each part fits one buffer binding.

    f16 rows are packed in pairs (a zero half pads an odd C), as the weights are; f32 rows keep
    their bits. Raises GPUMemoryError when even four parts exceed the adapter's bindings.
    """
    if emb.ndim != 2:
        raise ValueError(f"embedding table must be [V, C], got shape {emb.shape}")
    v, c = emb.shape
    f16 = emb.dtype == np.float16
    if f16:
        half = np.zeros((v, c + c % 2), np.float16)
        half[:, :c] = emb
        words = half.view(np.uint32)
    else:
        words = np.ascontiguousarray(emb, np.float32).view(np.uint32)
    row_words = words.shape[1]
    limit = min(device.info.max_binding_size, device.info.max_buffer_size)
    if max_part_bytes is not None:
        limit = min(limit, max_part_bytes)
    part_rows = max(1, limit // (row_words * 4))
    n_parts = ceil_div(v, part_rows)
    if n_parts > MAX_PARTS:
        raise GPUMemoryError(f"embedding table [{v}, {c}] needs {n_parts} buffer bindings of at most "
                             f"{limit} bytes on {device.info.name}; the gather kernel binds {MAX_PARTS}")  # fmt: skip
    part_rows = ceil_div(v, n_parts)  # equal parts
    parts = tuple(device.upload(words[i * part_rows : (i + 1) * part_rows], f"{label}.{i}") for i in range(n_parts))
    return EmbeddingTable(parts, v, c, part_rows, row_words, f16)


def embed_rows(graph: Graph, counter: Counter, ids: Any, table: EmbeddingTable, x: Act, *, label: str = "embed") -> None:
    """Record ``x[t] = table[ids[t]]`` for the counter's T tokens (ids u32 [T], x [T, C])."""
    if x.cols != table.cols:
        raise ValueError(f"embedding rows have {table.cols} values, the output view {x.cols}")
    params = pack_params(PARAMS, c=table.cols, x_off=x.offset, x_stride=x.stride, part_rows=table.part_rows,
                         row_words=table.row_words, _pad0=0, _pad1=0, _pad2=0)  # fmt: skip
    parts = list(table.parts) + [table.parts[0]] * (MAX_PARTS - len(table.parts))
    buffers = {2: ids, 3: x.buffer, **{4 + i: b for i, b in enumerate(parts)}}
    graph.dispatch("embed", counter, params, buffers, lambda n: (ceil_div(table.cols, WG), n, 1),
                   entry="gather", label=label, WG=WG, F16=int(table.f16))  # fmt: skip
