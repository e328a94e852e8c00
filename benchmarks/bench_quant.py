"""Quantization: accuracy against the official fp32 logits, weight memory, and load time from
the original checkpoint (quantizing at load) against a saved prefab file.

    python benchmarks/bench_quant.py [--shape v6-small] [--adapter vulkan] [--out results.json]

Kinds: int8, nf4, sf4, and the mix of int8 attention with nf4 FFN matrices (att=int8,ffn=nf4).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

LARGE = ("receptance", "key", "value", "output", "gate", "ffn_key", "ffn_value", "ffn_receptance")
KINDS = ("int8", "nf4", "sf4", "att=int8,ffn=nf4")


def main() -> None:
    from random_model import write_random_model

    import rwkv_webgpu as rw

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="v6-small")
    ap.add_argument("--adapter", default=None)
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args()
    out: dict = {"accuracy": {}, "memory_mb": {}, "load_s": {}}
    fix = ROOT / "tests" / "fixtures"
    for golden in sorted((fix / "golden").glob("v*.npz")):
        g = np.load(golden)
        row = {}
        for quant in KINDS:
            model = rw.load_model(fix / "models" / f"{golden.stem}.pth", adapter=args.adapter, quant=quant)
            logits = model.forward(g["tokens"].tolist(), model.new_state(), full=True)
            row[quant] = float(np.abs(logits - g["logits"]).max() / np.abs(g["logits"]).max())
        out["accuracy"][golden.stem] = row
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / f"{args.shape}.safetensors"
        write_random_model(args.shape, src)
        for quant in (None, *KINDS):
            t0 = time.perf_counter()
            model = rw.load_model(src, adapter=args.adapter, quant=quant, tokenizer="world")
            out["load_s"][f"{quant or 'f16'} from checkpoint"] = time.perf_counter() - t0
            out["memory_mb"][quant or "f16"] = sum(
                getattr(layer, a).nbytes for layer in model.layers for a in LARGE if hasattr(layer, a)
            ) / 2**20
            out["adapter"] = model.device.info.describe()
            if quant:
                prefab = Path(tmp) / f"{quant}.prefab"
                model.save(prefab)
                t0 = time.perf_counter()
                rw.load_model(prefab, adapter=args.adapter, tokenizer="world")
                out["load_s"][f"{quant} from prefab"] = time.perf_counter() - t0
    print(json.dumps(out, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
