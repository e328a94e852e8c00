"""Decode speed with no hooks, with a capture hook on every layer, and after removing it.

    python benchmarks/bench_hooks.py [--model PATH] [--tokens 32] [--adapter vulkan]

A model with no hooks records exactly the same graph as before hooks existed, so the first and
last figures should agree within noise; the middle one shows what reading every layer back costs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def decode_rate(model, tokens: int) -> tuple[float, int]:
    state = model.new_state()
    logits = model.forward([1, 2, 3], state)
    for _ in range(4):
        logits = model.forward([int(np.argmax(logits))], state)
    t0 = time.perf_counter()
    for _ in range(tokens):
        logits = model.forward([int(np.argmax(logits))], state)
    rate = tokens / (time.perf_counter() - t0)
    return rate, len(model.runner.graph(state)[0].items)


def main() -> None:
    import rwkv_webgpu as rw
    from rwkv_webgpu.cli import demo_model_path

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--adapter", default=None)
    args = ap.parse_args()
    model = rw.load_model(args.model or demo_model_path(), adapter=args.adapter)
    out = {"adapter": model.device.info.describe(), "model": model.info.describe()}
    out["no_hooks_tok_s"], out["no_hooks_items"] = decode_rate(model, args.tokens)
    remove = model.hooks.add("*.out", lambda frame: frame.capture())
    out["capture_every_layer_tok_s"], out["capture_items"] = decode_rate(model, args.tokens)
    remove()
    model.hooks.captured.clear()
    out["hooks_removed_tok_s"], out["hooks_removed_items"] = decode_rate(model, args.tokens)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
