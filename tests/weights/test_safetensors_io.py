"""Our safetensors reader/writer, checked against the reference ``safetensors`` package."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

from rwkv_webgpu.errors import CheckpointError
from rwkv_webgpu.weights import open_checkpoint, save_safetensors
from rwkv_webgpu.weights.safetensors_io import TensorSpec, write_safetensors

TENSORS = {
    "a.f32": np.arange(12, dtype=np.float32).reshape(3, 4),
    "b.f16": np.linspace(-2, 2, 5).astype(np.float16),
    "c.i64": np.array([[-1, 2, 3]], dtype=np.int64),
    "d.u8": np.arange(3, dtype=np.uint8),
    "e.empty": np.zeros((0, 2), dtype=np.float32),
}


def test_written_file_reads_in_reference_package(tmp_path: Path) -> None:
    path = tmp_path / "x.safetensors"
    save_safetensors(TENSORS, str(path), {"format": "pt"})
    with safe_open(str(path), framework="numpy") as f:
        assert f.metadata() == {"format": "pt"}
        for name, want in TENSORS.items():
            np.testing.assert_array_equal(f.get_tensor(name), want)


def test_reads_reference_written_file(tmp_path: Path) -> None:
    path = tmp_path / "y.safetensors"
    save_file(TENSORS, str(path))
    with open_checkpoint(path) as ckpt:
        assert sorted(ckpt.names()) == sorted(TENSORS)
        for name, want in TENSORS.items():
            assert ckpt.shape(name) == want.shape
            np.testing.assert_array_equal(ckpt.load(name, want.dtype), want)


def _raw_file(path: Path, header: dict, data: bytes) -> Path:
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


def test_bf16(tmp_path: Path) -> None:
    values = np.array([[1.0, -2.5, 3.140625], [0.0, 1e-3, -7e3]], dtype=np.float32)
    bits = (values.view(np.uint32) >> 16).astype("<u2")  # bf16 = the top half of an f32
    want = (bits.astype(np.uint32) << 16).view(np.float32)
    header = {"w": {"dtype": "BF16", "shape": [2, 3], "data_offsets": [0, 12]}}
    path = _raw_file(tmp_path / "bf.safetensors", header, bits.tobytes())
    with open_checkpoint(path) as ckpt:
        assert ckpt.dtype("w") == "bf16"
        np.testing.assert_array_equal(ckpt.load("w"), want)
        np.testing.assert_array_equal(ckpt.load("w", np.float16), want.astype(np.float16))


@pytest.mark.parametrize(
    "header, data, match",
    [
        ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8, "past the end"),
        ({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}}, b"\0" * 16, "needs 12"),
        ({"w": {"dtype": "F8_E4M3", "shape": [1], "data_offsets": [0, 1]}}, b"\0", "dtype"),
        ({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4, "shape"),
        ({"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}, b"\0" * 4, "offsets"),
        ({"w": [1, 2]}, b"", "malformed"),
    ],
)
def test_bad_headers(tmp_path: Path, header: dict, data: bytes, match: str) -> None:
    path = _raw_file(tmp_path / "bad.safetensors", header, data)
    with pytest.raises(CheckpointError, match=match):
        open_checkpoint(path)


def test_bad_json_and_truncation(tmp_path: Path) -> None:
    path = tmp_path / "j.safetensors"
    path.write_bytes(struct.pack("<Q", 10) + b"{not json}")
    with pytest.raises(CheckpointError, match="JSON"):
        open_checkpoint(path)
    good = tmp_path / "g.safetensors"
    save_safetensors(TENSORS, str(good))
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[:-7])
    with pytest.raises(CheckpointError, match="cut.safetensors"):
        open_checkpoint(cut)


def test_atomic_write_keeps_old_file_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "m.st"
    save_safetensors({"x": np.ones(3, np.float32)}, str(path))
    before = path.read_bytes()

    def produce(spec: TensorSpec) -> np.ndarray:
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        write_safetensors(str(path), [TensorSpec("y", "f32", (2,))], produce)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.st"]  # no temporary left behind


def test_producer_must_match_header(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="header says"):
        write_safetensors(
            str(tmp_path / "z.st"),
            [TensorSpec("y", "f16", (2,))],
            lambda spec: np.zeros(3, np.float16),
        )
