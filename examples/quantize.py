"""Quantize a model at load, compare it with f16, save it as a prefab file and load that back.

    python examples/quantize.py [--model PATH] [--quant att=int8,ffn=nf4] [--adapter vulkan]

Without --model it uses the bundled demo model. For each kind it prints the weight memory of the
large matrices, how far the logits of a prompt move from the f16 model's, and how the greedy
continuation reads; then it saves the last one and checks the reloaded file gives the same logits.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

import rwkv_webgpu as rw
from rwkv_webgpu.gpu import Matrix, QMatrix

DEMO = Path(rw.__file__).resolve().parent / "demo"
PROMPT = "The Python interpreter"


def weight_bytes(model: rw.Model) -> int:
    """Bytes of the matrices quantization applies to (the embedding and head stay f16)."""
    large = ("receptance", "key", "value", "output", "gate", "ffn_key", "ffn_value", "ffn_receptance")
    return sum(getattr(layer, a).nbytes for layer in model.layers for a in large
               if isinstance(getattr(layer, a, None), (Matrix, QMatrix)))  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="checkpoint (default: the bundled demo model)")
    ap.add_argument("--tokenizer", help="default: the demo model's, or the model's own")
    ap.add_argument("--quant", action="append", help="kinds to try (repeatable; default int8, nf4 and a mix)")
    ap.add_argument("--adapter", help="adapter filter, e.g. vulkan")
    ap.add_argument("--max-tokens", type=int, default=16)
    args = ap.parse_args()
    path = Path(args.model) if args.model else DEMO / "rwkv7-demo.pth"
    tokenizer = args.tokenizer or (str(DEMO / "tokenizer.json") if not args.model else None)
    if not path.is_file():
        print(f"no model at {path}: pass --model PATH (any RWKV checkpoint)")
        return 0
    kinds = args.quant or ["int8", "nf4", "att=int8,ffn=nf4"]

    base = rw.load_model(path, tokenizer=tokenizer, adapter=args.adapter)
    ids = base.tokenizer.encode(PROMPT)
    ref = base.forward(ids, base.new_state(), full=True)
    greedy = rw.SamplingConfig(temperature=0)
    print(f"{base.info.describe()} on {base.device.info.describe()}")
    print(f"f16                 {weight_bytes(base) / 2**20:8.2f} MiB   "
          f"{rw.generate(base, PROMPT, max_tokens=args.max_tokens, sampling=greedy)!r}")  # fmt: skip
    model = base
    for kind in kinds:
        model = rw.load_model(path, tokenizer=tokenizer, adapter=args.adapter, quant=kind)
        out = model.forward(ids, model.new_state(), full=True)
        err = float(np.abs(out - ref).max() / np.abs(ref).max())
        text = rw.generate(model, PROMPT, max_tokens=args.max_tokens, sampling=greedy)
        print(f"{kind:<19} {weight_bytes(model) / 2**20:8.2f} MiB   max rel logit change {err:.3f}   {text!r}")

    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / "model.prefab"
        model.save(saved)
        t0 = time.perf_counter()
        again = rw.load_model(saved, tokenizer=tokenizer, adapter=args.adapter)
        same = np.array_equal(again.forward(ids, again.new_state(), full=True),
                              model.forward(ids, model.new_state(), full=True))  # fmt: skip
        print(f"saved {kinds[-1]} as a prefab ({saved.stat().st_size / 2**20:.2f} MiB), reloaded in "
              f"{time.perf_counter() - t0:.2f} s, identical logits: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
