"""Make the tiny LoRA fixtures read by tests/weights/test_lora.py (run once; needs torch).

    python scripts/make_lora_fixtures.py

All are LoRAs for tests/fixtures/models/v7_L2_C64_V97.pth (C = 64, F = 96). Writes into
tests/fixtures/lora/:
  v7_rwkvlm.pth   RWKV-LM-LoRA naming (``blocks.i.att.key.lora_A``), bf16, rank 4 on
                  att.key/att.value/ffn.key of both blocks, plus two full tensors to blend:
                  ``blocks.1.att.x_k`` (1, 1, C) and ``blocks.0.att.ln_x.weight`` (C)
  v7_peft.pth     ``<name>.weight.lora_A`` naming, fp32, rank 2 on blocks.0.att.key,
                  blocks.0.att.receptance and blocks.1.ffn.value
  v7_webrwkv.st   v7_rwkvlm.pth as web-rwkv's convert_safetensors.py writes it: fp16,
                  ``lora_A/lora_B -> lora.0/lora.1``, ``lora.0`` stored transposed
Output is deterministic (fixed seeds).
"""

from __future__ import annotations

import collections
import os
import sys

import numpy as np
import torch

ROOT = os.path.join(os.path.dirname(__file__), "..")
sys.path.insert(0, ROOT)
from rwkv_webgpu.weights import save_safetensors

OUT = os.path.join(ROOT, "tests", "fixtures", "lora")
C, F = 64, 96


def _pair(g: torch.Generator, out: int, inp: int, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    a = torch.randn(rank, inp, generator=g) * 0.1
    b = torch.randn(out, rank, generator=g) * 0.1
    return a, b


def rwkvlm() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(10)
    sd: dict[str, torch.Tensor] = collections.OrderedDict()
    for i in range(2):
        for module, out, inp in (("att.key", C, C), ("att.value", C, C), ("ffn.key", F, C)):
            a, b = _pair(g, out, inp, 4)
            sd[f"blocks.{i}.{module}.lora_A"] = a.bfloat16()
            sd[f"blocks.{i}.{module}.lora_B"] = b.bfloat16()
    sd["blocks.1.att.x_k"] = torch.rand(1, 1, C, generator=g).bfloat16()
    sd["blocks.0.att.ln_x.weight"] = (1 + 0.2 * torch.randn(C, generator=g)).bfloat16()
    return sd


def peft() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(11)
    sd: dict[str, torch.Tensor] = collections.OrderedDict()
    for name, out, inp in (
        ("blocks.0.att.key.weight", C, C),
        ("blocks.0.att.receptance.weight", C, C),
        ("blocks.1.ffn.value.weight", C, F),
    ):
        a, b = _pair(g, out, inp, 2)
        sd[f"{name}.lora_A"] = a
        sd[f"{name}.lora_B"] = b
    return sd


def webrwkv(sd: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name, t in sd.items():
        new = name.replace("lora_A", "lora.0").replace("lora_B", "lora.1").lower()
        arr = t.float().numpy().astype(np.float16)
        out[new] = np.ascontiguousarray(arr.T) if "lora.0" in new else arr
    return out


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    lm = rwkvlm()
    torch.save(lm, os.path.join(OUT, "v7_rwkvlm.pth"))
    torch.save(peft(), os.path.join(OUT, "v7_peft.pth"))
    save_safetensors(webrwkv(lm), os.path.join(OUT, "v7_webrwkv.st"), {"format": "pt"})


if __name__ == "__main__":
    main()
