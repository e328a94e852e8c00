"""Make the tiny ``.pth`` fixtures read by tests/weights (run once; needs torch).

    python scripts/make_weight_fixtures.py

Writes into tests/fixtures/weights/:
  state_dict.pth   an OrderedDict: bf16, fp16, fp32, int64, a parameter, a transposed view,
                   a strided slice with an offset, two tensors sharing one storage, a 0-d and
                   an empty tensor
  module.pth       ``nn.Module.state_dict()`` (an OrderedDict carrying ``_metadata``), bf16
  wrapped.pth      ``{"state_dict": {...}, "epoch": 3}`` as training scripts save it
  big_endian.pth   state of fp32 tensors, rewritten as torch writes it on a big-endian host
  expected.npz     "<file>/<tensor>" -> the values (bf16 widened to fp32)
"""

from __future__ import annotations

import collections
import os
import zipfile

import numpy as np
import torch

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "weights")


def _numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach()
    return (t.float() if t.dtype == torch.bfloat16 else t).contiguous().numpy()


def state_dict() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, 4, generator=g)
    strided = torch.randn(5, 8, generator=g)
    shared = torch.randn(10, generator=g).bfloat16()
    return collections.OrderedDict(
        bf16=torch.randn(4, 6, generator=g).bfloat16(),
        fp16=torch.randn(5, generator=g).half(),
        fp32=torch.randn(3, 4, generator=g),
        int64=torch.arange(7, dtype=torch.int64) - 3,
        param=torch.nn.Parameter(torch.randn(2, 3, generator=g)),
        transposed=base.t(),  # stride (1, 4)
        strided=strided[1:, ::3],  # offset 8, stride (8, 3)
        shared_a=shared[:6],
        shared_b=shared[4:].view(2, 3),  # same storage, offset 4
        scalar=torch.tensor(2.5),
        empty=torch.zeros(0, 3),
    )


def module_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4)).bfloat16()
    return net.state_dict()


def to_big_endian(src: str, dst: str) -> None:
    """Byte-swap every 4-byte storage and mark the archive big-endian."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename.endswith("/byteorder"):
                data = b"big"
            elif "/data/" in item.filename:
                data = np.frombuffer(data, "<f4").astype(">f4").tobytes()
            zout.writestr(item.filename, data)


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    expected: dict[str, np.ndarray] = {}
    g = torch.Generator().manual_seed(2)
    files = {
        "state_dict": state_dict(),
        "module": module_state(),
        "wrapped": {"state_dict": {"w": torch.randn(2, 2, generator=g).half()}, "epoch": 3},
        "fp32_only": {"a": torch.randn(3, 2, generator=g), "b": torch.randn(4, generator=g).t()},
    }
    for name, obj in files.items():
        torch.save(obj, os.path.join(OUT, f"{name}.pth"))
        tensors = obj.get("state_dict", obj)
        expected.update({f"{name}/{k}": _numpy(v) for k, v in tensors.items()})
    to_big_endian(os.path.join(OUT, "fp32_only.pth"), os.path.join(OUT, "big_endian.pth"))
    os.remove(os.path.join(OUT, "fp32_only.pth"))
    for k in [k for k in expected if k.startswith("fp32_only/")]:
        expected[k.replace("fp32_only/", "big_endian/")] = expected.pop(k)
    np.savez(os.path.join(OUT, "expected.npz"), **expected)
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"wrote {len(os.listdir(OUT))} files, {total} bytes, into {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()
