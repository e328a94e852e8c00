"""Serving throughput: N concurrent greedy requests through the continuously batched Engine
versus the same requests served one after another. Prints one JSON object to stdout.

    python benchmarks/bench_runtime.py [MODEL] [--requests 16] [--prompt-tokens 16]
        [--max-tokens 32] [--max-batch N] [--token-chunk-size 128] [--adapter vulkan] [--repeat 1]

MODEL defaults to the V7 test fixture. Models without a tokenizer get a toy one (token i is
the text "w{i} "). Every request generates exactly ``--max-tokens`` tokens (EOS ignored), so
both modes do the same work. "serial" uses an Engine with ``max_batch=1``, one request at a
time; "concurrent" submits all requests at once to an Engine with ``max_batch`` slots
(default: N). Throughput counts prompt + generated tokens and generated tokens alone;
each figure is the best of ``--repeat`` runs, after one warm-up request per engine.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
try:
    import rwkv_webgpu as rw
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))
    import rwkv_webgpu as rw
from rwkv_webgpu.runtime import Engine

DEFAULT_MODEL = ROOT / "tests" / "fixtures" / "models" / "v7_L2_C64_V97.pth"
GREEDY = rw.SamplingConfig(temperature=0)


class ToyTokenizer:
    """Token i <-> "w{i} ", for fixture models that have no tokenizer."""

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size

    def encode(self, text: str) -> list[int]:
        return [int(w[1:]) for w in text.split()]

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        return "".join(f"w{int(i)} " for i in ids).encode()

    def decode(self, ids: Sequence[int]) -> str:
        return self.decode_bytes(ids).decode()


def run_serial(model, prompts, max_tokens) -> tuple[float, list[list[int]]]:
    with Engine(model, max_batch=1) as engine:
        engine.generate(prompts[0], max_tokens=2, sampling=GREEDY)  # warm-up
        t0 = time.perf_counter()
        out = [
            engine.generate(p, max_tokens=max_tokens, sampling=GREEDY, stop_at_eos=False).tokens
            for p in prompts
        ]
        return time.perf_counter() - t0, out


def run_concurrent(model, prompts, max_tokens, max_batch) -> tuple[float, list[list[int]], dict]:
    with Engine(model, max_batch=max_batch) as engine:
        engine.generate(prompts[0], max_tokens=2, sampling=GREEDY)  # warm-up (graph, thread)
        steps0 = engine.stats.steps
        t0 = time.perf_counter()
        handles = [
            engine.submit(p, max_tokens=max_tokens, sampling=GREEDY, stop_at_eos=False)
            for p in prompts
        ]
        out = [h.result().tokens for h in handles]
        return time.perf_counter() - t0, out, {"steps": engine.stats.steps - steps0}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", nargs="?", default=str(DEFAULT_MODEL))
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--prompt-tokens", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--max-batch", type=int, default=0, help="engine slots (default: --requests)")
    ap.add_argument("--token-chunk-size", type=int, default=128)
    ap.add_argument("--adapter", default=None, help='adapter filter, e.g. "vulkan" (default: best)')
    ap.add_argument("--tokenizer", default=None)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    t0 = time.perf_counter()
    model = rw.load_model(args.model, adapter=args.adapter, token_chunk_size=args.token_chunk_size,
                          tokenizer=args.tokenizer)  # fmt: skip
    load_s = time.perf_counter() - t0
    if model.tokenizer is None:
        model.tokenizer = ToyTokenizer(model.info.num_vocab)
    rng = np.random.default_rng(args.seed)
    prompts = [
        rng.integers(1, model.info.num_vocab, args.prompt_tokens).tolist()
        for _ in range(args.requests)
    ]
    max_batch = args.max_batch or args.requests

    serial = [run_serial(model, prompts, args.max_tokens) for _ in range(args.repeat)]
    conc = [run_concurrent(model, prompts, args.max_tokens, max_batch) for _ in range(args.repeat)]
    s_time, s_out = min(serial, key=lambda r: r[0])
    c_time, c_out, c_extra = min(conc, key=lambda r: r[0])

    gen = args.requests * args.max_tokens
    total = gen + args.requests * args.prompt_tokens
    info = model.device.info
    result = {
        "benchmark": "runtime",
        "adapter": info.name,
        "backend": info.backend,
        "adapter_type": info.adapter_type,
        "model": Path(args.model).name,
        "model_info": model.info.describe(),
        "requests": args.requests,
        "prompt_tokens": args.prompt_tokens,
        "max_tokens": args.max_tokens,
        "max_batch": max_batch,
        "token_chunk_size": args.token_chunk_size,
        "load_s": round(load_s, 3),
        "serial": {
            "seconds": round(s_time, 3),
            "generated_tok_s": round(gen / s_time, 1),
            "total_tok_s": round(total / s_time, 1),
        },
        "concurrent": {
            "seconds": round(c_time, 3),
            "generated_tok_s": round(gen / c_time, 1),
            "total_tok_s": round(total / c_time, 1),
            "engine_steps": c_extra["steps"],
        },
        "speedup": round(s_time / c_time, 2),
        "outputs_match": s_out == c_out,
        "repeat": args.repeat,
        "python": platform.python_version(),
    }
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
