"""Per-layer statistics of the residual stream (through hooks), and a small PNG chart of them."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .models.base import Model

STATS = ("mean", "std", "max_abs", "norm_last")


def layer_stats(model: Model, tokens: Sequence[int]) -> list[dict[str, float]]:
    """Feed ``tokens`` to a fresh state and describe each layer's output ``[T, C]``.

    ``norm_last`` is the L2 norm of the last token's row; the others cover every token.
    """
    remove = model.hooks.add("*.out", lambda frame: frame.capture())
    try:
        model.hooks.captured.clear()
        model.forward(tokens, model.new_state())
        rows = []
        for i in range(model.info.num_layer):
            x = np.concatenate(model.hooks.captured[f"{i}.out"], axis=0).astype(np.float64)
            rows.append({"layer": i, "mean": float(x.mean()), "std": float(x.std()),
                         "max_abs": float(np.abs(x).max()), "norm_last": float(np.linalg.norm(x[-1]))})  # fmt: skip
        return rows
    finally:
        remove()
        model.hooks.captured.clear()


def format_table(rows: list[dict[str, float]]) -> str:
    lines = ["layer       mean        std    max|x|  |x_last|"]
    for r in rows:
        lines.append(f"{int(r['layer']):5d} {r['mean']:10.4f} {r['std']:10.4f} {r['max_abs']:9.3f} {r['norm_last']:9.3f}")
    return "\n".join(lines)


def plot_png(rows: list[dict[str, float]], path: str | Path, width: int = 640, height: int = 320) -> None:
    """A bar chart (std in blue, max|x| in orange, per layer, each scaled to its own maximum)."""
    img = np.full((height, width, 3), 255, np.uint8)
    img[height - 21, 20 : width - 10] = 0  # baseline
    n = max(len(rows), 1)
    slot = (width - 40) / n
    for j, (key, colour) in enumerate((("std", (40, 90, 200)), ("max_abs", (230, 130, 30)))):
        top = max(r[key] for r in rows) or 1.0
        for i, r in enumerate(rows):
            h = int((height - 40) * r[key] / top)
            x0 = int(20 + i * slot + j * slot / 2 + 1)
            x1 = int(20 + i * slot + (j + 1) * slot / 2 - 1)
            img[height - 21 - h : height - 21, x0 : max(x1, x0 + 1)] = colour
    _write_png(img, Path(path))


def _write_png(img: np.ndarray, path: Path) -> None:
    h, w, _ = img.shape
    raw = b"".join(b"\x00" + img[y].tobytes() for y in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))
