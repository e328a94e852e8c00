"""Block-wise conversion: exact bf16 widening, strided sources, bounded peak memory."""

from __future__ import annotations

import json
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from rwkv_webgpu.weights import _arrays, open_checkpoint
from rwkv_webgpu.weights._arrays import materialize


def test_blocks_cover_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_arrays, "_BLOCK_BYTES", 64)  # many tiny blocks, a ragged last one
    src = np.arange(7 * 5, dtype=np.float32).reshape(7, 5)
    for view in (src, src.T, src[::2, 1:]):
        out = materialize(view, "f32", np.float16)
        assert out.flags.c_contiguous
        np.testing.assert_array_equal(out, view.astype(np.float16))
    bits = (src.view(np.uint32) >> 16).astype(np.uint16).T
    np.testing.assert_array_equal(
        materialize(bits, "bf16", np.float32), (bits.astype(np.uint32) << 16).view(np.float32)
    )


def _bf16_file(path: Path, rows: int, cols: int) -> Path:
    header = json.dumps(
        {"w": {"dtype": "BF16", "shape": [rows, cols], "data_offsets": [0, rows * cols * 2]}}
    ).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header)
        f.write(np.full(rows * cols, 0x3F80, dtype="<u2").tobytes())  # bf16 1.0
    return path


def test_peak_memory_is_about_one_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_arrays, "_BLOCK_BYTES", 1 << 20)
    path = _bf16_file(tmp_path / "big.safetensors", 1024, 4096)  # 8 MiB on disk
    with open_checkpoint(path) as ckpt:
        tracemalloc.start()
        out = ckpt.load("w", np.float32)  # 16 MiB result
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert out.shape == (1024, 4096) and (out == 1.0).all()
    assert peak < out.nbytes + (4 << 20), peak
