"""A quick speed check of a loaded model, optionally against web-rwkv-py 0.2.3 on the same
checkpoint: what `rwkv-webgpu bench` measures (benchmarks/ holds the full benchmark suite).
Greedy decoding after a random prompt, so both engines do the same work."""

from __future__ import annotations

import importlib
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .models.base import Model, Progress
from .weights.quant import BLOCKS

Run = Callable[[list[int]], Any]  # ids -> logits of the last one


def bench_prompt(model: Model, n: int, seed: int) -> list[int]:
    """``n`` random token ids the tokenizer (if any) can decode, id 0 excluded."""
    from .sampling import valid_ids

    v = model.info.num_vocab
    ok = valid_ids(model.tokenizer, v).copy() if model.tokenizer is not None else np.ones(v, dtype=bool)
    ok[0] = False
    ids = np.flatnonzero(ok)
    return [int(t) for t in np.random.default_rng(seed).choice(ids, n)]


def time_engine(run: Run, reset: Callable[[], None], prompt: Sequence[int], tokens: int) -> dict[str, float]:
    """Prefill ``prompt`` then decode ``tokens`` greedily through ``run``; tok/s of each."""
    reset()
    logits = run(list(prompt))  # warm-up: build the pipelines of the prompt's chunks and of one token
    run([int(np.argmax(logits))])
    reset()
    t0 = time.perf_counter()
    logits = run(list(prompt))
    t1 = time.perf_counter()
    for _ in range(tokens):
        logits = run([int(np.argmax(logits))])
    t2 = time.perf_counter()
    return {"prefill_tok_s": len(prompt) / (t1 - t0), "decode_tok_s": tokens / max(t2 - t1, 1e-9)}


def time_model(model: Model, prompt: Sequence[int], tokens: int) -> dict[str, Any]:
    """This engine on ``model``."""
    state = [model.new_state()]

    def reset() -> None:
        state[0] = model.new_state()

    return {"engine": "rwkv-webgpu", **time_engine(lambda ids: model.forward(ids, state[0]), reset, prompt, tokens)}


def time_peer(model: Model, prompt: Sequence[int], tokens: int, progress: Progress | None = None) -> dict[str, Any]:
    """web-rwkv-py 0.2.3 on ``model``'s checkpoint (converted to .st, ``progress`` reporting the
    conversion), in the same chunks, or ``{"skipped": why}``."""
    from .config import Version
    from .weights.convert import convert

    name = "web-rwkv-py"
    try:
        web_rwkv_py = importlib.import_module("web_rwkv_py")
    except ImportError:
        return {"engine": name, "skipped": "web-rwkv-py is not installed (pip install web-rwkv-py==0.2.3)"}
    if model.info.version not in (Version.V4, Version.V5, Version.V6):
        return {"engine": name, "skipped": f"web-rwkv-py 0.2.3 runs RWKV V4-V6 only, this is {model.info.describe()}"}
    options = peer_quantization(model)
    if isinstance(options, str):
        return {"engine": name, "skipped": options}
    path = Path(model.path)
    with tempfile.TemporaryDirectory() as tmp:
        st = path
        if path.suffix != ".st":
            st = Path(tmp) / (path.stem + ".st")
            convert(path, st, progress=progress)
        try:
            peer = web_rwkv_py.Model(str(st), **options)
            chunk = model.token_chunk_size
            res = time_engine(lambda ids: peer.run(ids, token_chunk_size=chunk), peer.clear_state, prompt, tokens)
        except BaseException as exc:  # a Rust panic arrives as a BaseException (pyo3)
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            return {"engine": name, "skipped": f"web-rwkv-py failed: {type(exc).__name__}: {exc}"}
    return {"engine": name, **res, **({"quant": options} if any(options.values()) else {})}


# a layer's matrices that quantization applies to, as the model classes name them
LARGE = tuple(name if block == "att" else f"{block}_{name}" for block, names in BLOCKS.items() for name in names)


def peer_quantization(model: Model) -> dict[str, int] | str:
    """web-rwkv-py's options for the quantization ``model`` has (all its large matrices int8, or
    all nf4, in the first N layers), or why web-rwkv-py has no match (sf4, a mix, a prefab file)."""
    from .gpu import QMatrix
    from .weights import open_checkpoint
    from .weights.prefab import prefab_metadata

    if not str(model.path).endswith((".pth", ".st")):  # a prefab is a safetensors file
        with open_checkpoint(model.path) as ckpt:
            if prefab_metadata(ckpt) is not None:
                return "web-rwkv-py cannot read a prefab file; compare on the original checkpoint"
    kinds: list[set[str]] = []
    for layer in model.layers:
        mats = [getattr(layer, a) for a in LARGE if hasattr(layer, a)]
        kinds.append({m.quant.value if isinstance(m, QMatrix) else "f16" for m in mats})
    n = sum(k != {"f16"} for k in kinds)
    if n == 0:
        return {"quant": 0, "quant_nf4": 0}
    if all(k == kinds[0] for k in kinds[:n]) and kinds[0] in ({"int8"}, {"nf4"}) and all(k == {"f16"} for k in kinds[n:]):
        return {"quant": n, "quant_nf4": 0} if kinds[0] == {"int8"} else {"quant": 0, "quant_nf4": n}
    return f"web-rwkv-py has no quantization like this model's ({model.quant}); it quantizes all large matrices of the first N layers to int8 or nf4"

