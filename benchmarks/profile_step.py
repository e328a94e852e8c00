"""Where one decode step of B slots spends its time: GPU per kernel (timestamp queries) and the
host side (packing, encoding, readback).

    python benchmarks/profile_step.py MODEL --batch 64
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    import rwkv_webgpu as rw
    from bench_models import _group
    from rwkv_webgpu.models.step import Plan

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--adapter", default=None)
    args = ap.parse_args()
    model = rw.load_model(args.model, adapter=args.adapter, tokenizer="world")
    state = model.new_state(args.batch)
    toks = [[int(t)] for t in np.random.default_rng(0).integers(1, model.info.num_vocab, args.batch)]
    for _ in range(3):
        model.run([list(t) for t in toks], state)
    out: dict = {"batch": args.batch}
    t0 = time.perf_counter()
    for _ in range(8):
        model.run([list(t) for t in toks], state)
    out["step_ms"] = (time.perf_counter() - t0) / 8 * 1000
    plan = Plan.pack(toks, list(range(args.batch)), False)
    t0 = time.perf_counter()
    cmd = model.runner.encode(state, plan)
    out["encode_ms"] = (time.perf_counter() - t0) * 1000
    t0 = time.perf_counter()
    model.runner.submit(state, plan, cmd)
    out["submit_ms"] = (time.perf_counter() - t0) * 1000
    t0 = time.perf_counter()
    model.runner.collect(state, plan)
    out["wait_and_read_ms"] = (time.perf_counter() - t0) * 1000
    out["gpu_us"] = _group(model.runner.profile(state, plan))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
