"""Consistency of the prompt kernels on a large random model (run on a real GPU, where the
tiled groups and split-K tiles take over from 384 tokens): the logits of one 1024-token prompt
fed in one chunk and in 512-token chunks differ from those of 100-token chunks (other kernels,
other summation orders) by no more than twice what 100- and 64-token chunks differ between
themselves (random V6 weights amplify rounding-order differences to ~1e-3; V7 ~1e-5);
batched GPU sampling (greedy) picks the argmax of the logits path at batch 64; decoding one step
ahead (DecodeChain, with a cancel) gives the plain loop's tokens and exactly its state; one token
through the FFN value with K in parts agrees with the 64-lane GEMV within twice what another
summation order (whole rows through the one-token kernel) differs from it.

    python benchmarks/check_large.py MODEL
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    import rwkv_webgpu as rw

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--adapter", default=None)
    args = ap.parse_args()
    model = rw.load_model(args.model, adapter=args.adapter, token_chunk_size=1024)
    prompt = np.random.default_rng(0).integers(1, model.info.num_vocab, 1024).tolist()
    out: dict = {"adapter": model.device.info.describe()}
    logits = {}
    for chunk in (1024, 512, 100, 64):
        model.token_chunk_size = chunk
        logits[chunk] = model.forward(prompt, model.new_state())
    model.token_chunk_size = 1024
    scale = float(np.abs(logits[100]).max())
    for chunk in (1024, 512, 64):
        out[f"max_rel_diff_chunk{chunk}_vs_100"] = float(np.abs(logits[chunk] - logits[100]).max()) / scale
    b = 64
    st, twin = model.new_state(b), model.new_state(b)
    toks = [[int(t)] for t in np.random.default_rng(1).integers(1, model.info.num_vocab, b)]
    greedy = rw.SamplingConfig(temperature=0)
    agree = 0
    for _ in range(4):
        ids = model.forward_sample_batch(toks, st, greedy, np.random.default_rng(0))
        ref = model.forward_batch(toks, twin)
        agree += sum(int(i == int(np.argmax(r))) for i, r in zip(ids, ref))
        toks = [[i] for i in ids]
    out["batch64_greedy_agree"] = f"{agree}/{4 * b}"
    chained = chain_matches_plain_loop(model)
    out.update(chained)
    split_diff, order_diff = decode_split_vs_gemv(model, prompt[:8])
    out["decode_split_vs_gemv_max_rel_diff"] = split_diff
    out["whole_row_decode_vs_gemv_max_rel_diff"] = order_diff
    print(json.dumps(out, indent=1))
    spread = max(out["max_rel_diff_chunk64_vs_100"], 1e-6)
    worst = max(out["max_rel_diff_chunk1024_vs_100"], out["max_rel_diff_chunk512_vs_100"])
    ok = worst <= 2 * spread and worst < 1e-2 and agree == 4 * b
    ok = ok and chained["chain_tokens_equal"] and chained["chain_state_max_abs_diff"] == 0.0
    ok = ok and split_diff <= 2 * max(order_diff, 1e-5) and split_diff < 1e-2
    sys.exit(0 if ok else 1)


def chain_matches_plain_loop(model, steps: int = 40) -> dict:
    """A DecodeChain (next step submitted ahead, a cancel at the end) against a forward_sample
    loop: the same tokens and, bit for bit, the same state."""
    import rwkv_webgpu as rw

    cfg = rw.SamplingConfig(temperature=1.0, top_p=0.9)
    plain, rng = model.new_state(), np.random.default_rng(3)
    want = [7]
    for _ in range(steps):
        want.append(model.forward_sample([want[-1]], plain, cfg, rng))
    state, rng = model.new_state(), np.random.default_rng(3)
    chain = model.decode_chain(state, cfg, rng)
    chain.feed([7])
    got = [7] + [chain.next(ahead=True)[0] for _ in range(steps)]
    chain.cancel()  # the last token was fed ahead: take it back, as the plain loop never fed it
    a, b = state.to_numpy(), plain.to_numpy()
    return {"chain_tokens_equal": got == want, "chain_state_max_abs_diff": max(float(np.abs(a[k] - b[k]).max()) for k in a)}


def decode_split_vs_gemv(model, tokens: list[int]) -> tuple[float, float]:
    """One token at a time through the FFN value with K in parts (`decode_parts`), through the
    64-lane GEMV and through the one-token kernel over whole rows: the largest logit difference
    of K in parts against the GEMV, and of whole rows against the GEMV (what another summation
    order alone gives on this model), each relative to the largest logit."""
    import importlib

    mm = importlib.import_module("rwkv_webgpu.ops.matmul")
    runs = []
    for split, max_k in ((True, mm.DECODE_MAX_K), (False, mm.DECODE_MAX_K), (False, 1 << 20)):
        mm.DECODE_SPLIT, mm.DECODE_MAX_K, before = split, max_k, mm.DECODE_MAX_K
        model.runner.forget_graphs()  # record the step again with this choice
        state = model.new_state()
        runs.append(np.stack([model.forward([t], state) for t in tokens]))
        mm.DECODE_SPLIT, mm.DECODE_MAX_K = True, before
    model.runner.forget_graphs()
    scale = float(np.abs(runs[1]).max())
    return float(np.abs(runs[0] - runs[1]).max()) / scale, float(np.abs(runs[2] - runs[1]).max()) / scale


if __name__ == "__main__":
    main()
