"""Quantization error on a benchmark-shaped random model, against the official implementation.

The golden fixtures of ``tests/`` are tiny; this measures the same max relative logit error on a
random model of a benchmark shape (``random_model.py``): the official ``rwkv`` package (fp32 on
the CPU, needs torch) gives the reference logits of a few 32-token prompts, then rwkv-webgpu
runs them in f16 / int8 / nf4 / sf4, and with ``--peer`` web-rwkv-py in f16 / int8 / nf4
(fed token by token, through the checkpoint ``rwkv_webgpu.weights.convert`` writes for it).

    python benchmarks/quant_vs_official.py --shape v6-small --peer --out results.json

Reported per engine and format: the error over every position of every prompt, and over the
last token only (max |logits - reference| / max |reference|).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def rel_err(out: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(out - ref).max() / np.abs(ref).max())


def official_logits(model_path: Path, prompts: list[list[int]], tmp: Path, v7: bool) -> list[np.ndarray]:
    """Every position's logits of each prompt from the official package, fp32 on the CPU."""
    os.environ.update(RWKV_JIT_ON="0", RWKV_CUDA_ON="0", CUDA_VISIBLE_DEVICES="")
    if v7:  # must be set before rwkv.model is imported; RWKV_x070 takes the path without '.pth'
        os.environ["RWKV_V7_ON"] = "1"
    import rwkv.model as rm
    import torch
    from safetensors.numpy import load_file

    pth = tmp / "model.pth"
    torch.save({k: torch.from_numpy(v.astype(np.float32)) for k, v in load_file(str(model_path)).items()}, pth)
    model = rm.RWKV(str(pth)[:-4], strategy="cpu fp32") if v7 else rm.RWKV(str(pth), strategy="cpu fp32", verbose=False)
    return [model.forward(p, None, full_output=True)[0].float().numpy() for p in prompts]


def summary(outs: list[np.ndarray], refs: list[np.ndarray]) -> dict:
    return {
        "all_positions": max(rel_err(o, r) for o, r in zip(outs, refs)),
        "last_token": max(rel_err(o[-1], r[-1]) for o, r in zip(outs, refs)),
        "last_token_per_prompt": [rel_err(o[-1], r[-1]) for o, r in zip(outs, refs)],
    }


def ours(model_path: Path, prompts: list[list[int]], refs: list[np.ndarray], adapter: str | None) -> dict:
    import rwkv_webgpu as rw

    res = {}
    for quant in (None, "int8", "nf4", "sf4"):
        model = rw.load_model(model_path, adapter=adapter, quant=quant)
        outs = [model.forward(p, model.new_state(), full=True) for p in prompts]
        res[quant or "f16"] = summary(outs, refs)
        print("rwkv-webgpu", quant or "f16", res[quant or "f16"], flush=True)
    return res


def peer(model_path: Path, layers: int, prompts: list[list[int]], refs: list[np.ndarray], tmp: Path) -> dict:
    import web_rwkv_py as wr

    from rwkv_webgpu.weights import convert

    st = tmp / "model.st"
    convert(str(model_path), str(st))
    res = {}
    for name, kw in (("f16", {}), ("int8", {"quant": layers}), ("nf4", {"quant_nf4": layers})):
        model = wr.Model(str(st), **kw)
        outs = []
        for p in prompts:
            model.clear_state()
            outs.append(np.stack([np.asarray(model.run([t]), np.float32) for t in p]))
        res[name] = summary(outs, refs)
        print("web-rwkv-py", name, res[name], flush=True)
    return res


def main() -> None:
    from random_model import SHAPES, write_random_model

    from rwkv_webgpu.config import Version

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="v6-small", choices=sorted(SHAPES))
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--adapter", default=None)
    ap.add_argument("--peer", action="store_true", help="also web-rwkv-py (V4-V6 only: it has no V7)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    info = SHAPES[args.shape]
    rng = np.random.default_rng(7)
    prompts = [rng.integers(1, info.num_vocab, args.tokens).tolist() for _ in range(args.prompts)]
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        model_path = tmp / f"{args.shape}.safetensors"
        write_random_model(args.shape, model_path)
        refs = official_logits(model_path, prompts, tmp, info.version == Version.V7)
        out = {"shape": args.shape, "prompts": args.prompts, "tokens": args.tokens,
               "rwkv-webgpu": ours(model_path, prompts, refs, args.adapter)}  # fmt: skip
        if args.peer:
            out["web-rwkv-py 0.2.3"] = peer(model_path, info.num_layer, prompts, refs, tmp)
    text = json.dumps(out, indent=1)
    if args.out:
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
