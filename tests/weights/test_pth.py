"""Reading torch ``.pth`` zips without torch (fixtures from scripts/make_weight_fixtures.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from rwkv_webgpu.errors import CheckpointError
from rwkv_webgpu.weights import open_checkpoint

FIXTURES = Path(__file__).parents[1] / "fixtures" / "weights"
EXPECTED = dict(np.load(FIXTURES / "expected.npz"))


def _expected(file: str) -> dict[str, np.ndarray]:
    return {k.split("/", 1)[1]: v for k, v in EXPECTED.items() if k.startswith(file + "/")}


@pytest.mark.parametrize("file", ["state_dict", "module", "wrapped", "big_endian"])
def test_fixture_values(file: str) -> None:
    expected = _expected(file)
    with open_checkpoint(FIXTURES / f"{file}.pth") as ckpt:
        assert ckpt.names() == list(expected)
        for name, want in expected.items():
            assert ckpt.shape(name) == want.shape
            got = ckpt.load(name, want.dtype)
            assert got.flags.c_contiguous and got.dtype == want.dtype
            np.testing.assert_array_equal(got, want, err_msg=name)


def test_dtypes_and_views() -> None:
    with open_checkpoint(FIXTURES / "state_dict.pth") as ckpt:
        assert [ckpt.dtype(n) for n in ("bf16", "fp16", "fp32", "int64")] == [
            "bf16", "f16", "f32", "i64",
        ]  # fmt: skip
        assert ckpt.load("bf16").dtype == np.float32  # bf16 widened by default
        assert ckpt.load("fp16", np.float16).dtype == np.float16
        # two tensors over one storage overlap in elements 4 and 5
        a, b = ckpt.load("shared_a"), ckpt.load("shared_b")
        np.testing.assert_array_equal(a[4:], b.reshape(-1)[:2])
        assert "transposed" in ckpt and "nope" not in ckpt and len(ckpt) == 11
        with pytest.raises(CheckpointError, match="nope"):
            ckpt.load("nope")


def test_compressed_members_fall_back(tmp_path: Path) -> None:
    src, dst = FIXTURES / "state_dict.pth", tmp_path / "deflated.pth"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for item in zin.infolist():
            zout.writestr(item.filename, zin.read(item))
    with open_checkpoint(dst) as ckpt:
        for name, want in _expected("state_dict").items():
            np.testing.assert_array_equal(ckpt.load(name, want.dtype), want)


def test_no_torch_needed() -> None:
    code = (
        "import sys, numpy as np; sys.modules['torch'] = None\n"
        "from rwkv_webgpu.weights import open_checkpoint\n"
        f"c = open_checkpoint({str(FIXTURES / 'state_dict.pth')!r})\n"
        "assert c.load('bf16').shape == (4, 6)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such file"):
        open_checkpoint(tmp_path / "absent.pth")


@pytest.mark.parametrize("cut", [0.2, 0.5, 0.9, 0.99])
def test_truncated_zip(tmp_path: Path, cut: float) -> None:
    data = (FIXTURES / "state_dict.pth").read_bytes()
    path = tmp_path / "cut.pth"
    path.write_bytes(data[: int(len(data) * cut)])
    # either opening or loading must notice
    with pytest.raises(CheckpointError, match="cut.pth"), open_checkpoint(path) as ckpt:
        for name in ckpt.names():
            ckpt.load(name)


@pytest.mark.parametrize("content", [b"", b"\x00" * 10, os.urandom(4096), b"PK\x03\x04junk"])
def test_random_bytes(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "random.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="random.pth"):
        open_checkpoint(path)


def test_legacy_format(tmp_path: Path) -> None:
    path = tmp_path / "old.pth"
    path.write_bytes(b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.")  # torch's legacy magic
    with pytest.raises(CheckpointError, match="legacy"):
        open_checkpoint(path)


def test_short_storage_names_tensor(tmp_path: Path) -> None:
    src, dst = FIXTURES / "state_dict.pth", tmp_path / "short.pth"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename.endswith("/data/0"):  # the first storage: tensor "bf16"
                data = data[:10]
            zout.writestr(item.filename, data)
    with pytest.raises(CheckpointError, match=r"short\.pth.*'bf16'"):
        open_checkpoint(dst)


def test_directory_is_not_a_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="directory"):
        open_checkpoint(tmp_path)
