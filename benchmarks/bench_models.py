"""Speed and memory of rwkv-webgpu against web-rwkv-py 0.2.3, in the same run on the same adapter.

    python benchmarks/bench_models.py --shapes v6-1.6b v7-1.5b --out results.json

For each shape it writes a random-weight checkpoint of real size (benchmarks/random_model.py),
then measures, each engine in its own process (so peak memory is its own):
load time, prefill tok/s of a 1024-token prompt (chunks 128 and 512), batch-1 decode tok/s in a
sampling loop (top-p 0.9 on the host, as a user's loop would; ours also with the GPU sampling
`generate` uses), batched decode throughput, peak host RSS and GPU memory. Prompt and batch-1
figures are, for both engines, the median of --repeats runs (each run's figure kept under
``..._runs``). web-rwkv-py runs V4-V6 only (on a converted .st copy).
With --profile, one decode step and one prompt chunk are timed per kernel (timestamp queries).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def sample_top_p(logits: np.ndarray, rng: np.random.Generator, top_p: float = 0.9) -> int:
    z = logits.astype(np.float64)
    z -= z.max()
    p = np.exp(z)
    p /= p.sum()
    order = np.argsort(-p)
    cum = np.cumsum(p[order])
    keep = order[: int(np.searchsorted(cum, top_p)) + 1]
    q = p[keep] / p[keep].sum()
    return int(keep[rng.choice(len(keep), p=q)])


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def gpu_sampling_loop(model, prompt: list[int], tokens: int, rng: np.random.Generator, ahead: bool = True) -> float:
    """Batch-1 decode tok/s with top-p 0.9 chosen on the GPU (only token ids read back). With
    ``ahead`` (what rwkv_webgpu.generate runs on GPUs) through a DecodeChain, each step submitted
    before the previous step's id is read; else a plain loop of forward_sample."""
    import rwkv_webgpu as rw

    cfg = rw.SamplingConfig(temperature=1.0, top_p=0.9)
    st = model.new_state()
    tok = model.forward_sample(prompt[:15], st, cfg, rng)
    if not ahead:
        for _ in range(32):  # warm up
            tok = model.forward_sample([tok], st, cfg, rng)
        t0 = time.perf_counter()
        for _ in range(tokens):
            tok = model.forward_sample([tok], st, cfg, rng)
        return tokens / (time.perf_counter() - t0)
    chain = model.decode_chain(st, cfg, rng)
    chain.feed([tok])
    for _ in range(32):  # warm up (a machine's first steps can run at lower clocks)
        chain.next(ahead=True)
    t0 = time.perf_counter()
    for _ in range(tokens):
        chain.next(ahead=True)
    rate = tokens / (time.perf_counter() - t0)
    chain.close()
    return rate


def put_runs(out: dict, key: str, runs: list[float]) -> None:
    """``out[key]``: the median of ``runs`` (tok/s); ``out[key_runs]``: each of them."""
    out[key] = float(np.median(runs))
    out[f"{key}_runs"] = [round(v, 1) for v in runs]


def prompt_runs(out: dict, key: str, run, tokens: int, args: argparse.Namespace):
    """``args.repeats`` timed calls of ``run`` (one whole prompt of ``tokens`` each, from a fresh
    state): ``key`` is the median tok/s, ``key_runs`` every call's; returns the last result."""
    runs, result = [], None
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        result = run()
        runs.append(tokens / (time.perf_counter() - t0))
    put_runs(out, key, runs)
    return result


def host_loops(out: dict, key: str, step, args: argparse.Namespace) -> None:
    """``args.repeats`` loops of ``args.decode`` calls of ``step`` (one token each): ``key`` is
    the median tok/s, ``key_runs`` every loop's."""
    runs = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        for _ in range(args.decode):
            step()
        runs.append(args.decode / (time.perf_counter() - t0))
    put_runs(out, key, runs)


def record_loops(out: dict, key: str, model, prompt: list[int], args: argparse.Namespace, rng: np.random.Generator) -> None:
    """The batch-1 GPU-sampling loops (one step ahead, and without), ``args.repeats`` times in
    turn: ``key_gpu_sampling`` is the median, ``..._runs`` every run (a host that stalls during
    one run moves that run alone)."""
    runs: dict[str, list[float]] = {"gpu_sampling": [], "gpu_sampling_no_ahead": []}
    for _ in range(args.repeats):
        runs["gpu_sampling"].append(gpu_sampling_loop(model, prompt, args.decode, rng))
        runs["gpu_sampling_no_ahead"].append(gpu_sampling_loop(model, prompt, args.decode, rng, ahead=False))
    for name, values in runs.items():
        put_runs(out, f"{key}_{name}", values)


def bench_ours(path: str, args: argparse.Namespace) -> dict:
    import rwkv_webgpu as rw
    from rwkv_webgpu.ops import matmul as matmul_op

    if args.tiled_from:
        matmul_op.TILED_MIN_TILES = args.tiled_from  # experiment: how many tiles make the tiled kernel worth it

    out: dict = {"engine": "rwkv-webgpu"}
    t0 = time.perf_counter()
    model = rw.load_model(path, token_chunk_size=max(args.chunks), adapter=args.adapter)
    out["load_s"] = time.perf_counter() - t0
    dev = model.device
    out["adapter"] = dev.info.describe()
    out["weights_gpu_mb"] = dev.allocated_bytes / 2**20
    rng = np.random.default_rng(0)
    prompt = rng.integers(1, model.info.num_vocab, args.prompt).tolist()
    for chunk in args.chunks:
        model.token_chunk_size = chunk
        st = model.new_state()
        model.forward(prompt[:chunk], st)  # records the graph, compiles pipelines
        st = model.new_state()
        model.forward(prompt[:chunk], st)

        def ours_prompt(st=st):
            st.reset()
            return model.forward(prompt, st)

        logits = prompt_runs(out, f"prefill_tok_s_chunk{chunk}", ours_prompt, len(prompt), args)
    model.token_chunk_size = max(args.chunks)
    # batch-1 decode: a real sampling loop
    st = model.new_state()
    logits = model.forward(prompt[:16], st)
    for _ in range(8):  # warm up
        logits = model.forward([sample_top_p(logits, rng)], st)
    last = [logits]

    def ours_step() -> None:
        last[0] = model.forward([sample_top_p(last[0], rng)], st)

    host_loops(out, "decode_tok_s_b1", ours_step, args)
    # the same loop sampling on the GPU (only token ids read back)
    record_loops(out, "decode_tok_s_b1", model, prompt, args, rng)
    # batched decode throughput
    for b in args.batches:
        st = model.new_state(b)
        toks = [[int(t)] for t in rng.integers(1, model.info.num_vocab, b)]
        for _ in range(3):
            res = model.run([list(t) for t in toks], st)
        steps = max(4, args.decode // 8)
        t0 = time.perf_counter()
        for _ in range(steps):
            res = model.run([list(t) for t in toks], st)
            toks = [[int(np.argmax(r))] for r in res]
        out[f"decode_tok_s_b{b}"] = b * steps / (time.perf_counter() - t0)
        # the same with every slot's token chosen on the GPU (top-p 0.9; only ids read back)
        cfg = rw.SamplingConfig(temperature=1.0, top_p=0.9)
        st = model.new_state(b)
        for _ in range(3):
            toks = [[t] for t in model.forward_sample_batch(toks, st, cfg, rng)]
        t0 = time.perf_counter()
        for _ in range(steps):
            toks = [[t] for t in model.forward_sample_batch(toks, st, cfg, rng)]
        out[f"decode_tok_s_b{b}_gpu_sampling_no_ahead"] = b * steps / (time.perf_counter() - t0)
        # ... and one step ahead (models/chain.py): each step submitted before the last one's ids are read
        chain = model.decode_chain(st, cfg, rng, slots=range(b))
        chain.feed([t[0] for t in toks])
        for _ in range(3):
            chain.next(ahead=True)
        t0 = time.perf_counter()
        for _ in range(steps):
            chain.next(ahead=True)
        out[f"decode_tok_s_b{b}_gpu_sampling"] = b * steps / (time.perf_counter() - t0)
        chain.close()
    out["gpu_mb_total"] = dev.allocated_bytes / 2**20
    if args.profile and dev.info.timestamp_query:
        from rwkv_webgpu.models.step import Plan

        st = model.new_state()
        out["profile_decode_us"] = _group(model.runner.profile(st, Plan.pack([[1]], [0], False)))
        chunk = max(args.chunks)
        out["profile_prefill_us"] = _group(model.runner.profile(st, Plan.pack([prompt[:chunk]], [0], False)))
    for quant in args.quant:
        t0 = time.perf_counter()
        qm = rw.load_model(path, token_chunk_size=max(args.chunks), adapter=args.adapter, quant=quant)
        out[f"{quant}_load_s"] = time.perf_counter() - t0
        st = qm.new_state()
        qm.forward(prompt[: max(args.chunks)], st)  # warm-up, as for f16: kernels compiled, this state's graph recorded

        def quant_prompt(qm=qm, st=st):
            st.reset()
            return qm.forward(prompt, st)

        logits = prompt_runs(out, f"{quant}_prefill_tok_s_chunk{max(args.chunks)}", quant_prompt, len(prompt), args)
        for _ in range(4):
            logits = qm.forward([sample_top_p(logits, rng)], st)
        qlast = [logits]

        def quant_step(qm=qm, st=st, qlast=qlast) -> None:
            qlast[0] = qm.forward([sample_top_p(qlast[0], rng)], st)

        host_loops(out, f"{quant}_decode_tok_s_b1", quant_step, args)
        record_loops(out, f"{quant}_decode_tok_s_b1", qm, prompt, args, rng)
        del qm
    out["peak_host_mb"] = peak_rss_mb()
    return out


def _group(timings: list[tuple[str, float]]) -> dict:
    """Sum per-kernel GPU time over layers: '12.att.r' -> 'att.r'."""
    total: dict[str, float] = {}
    for label, us in timings:
        key = label.split(".", 1)[1] if label.split(".", 1)[0].isdigit() else label
        total[key] = total.get(key, 0.0) + us
    total["TOTAL"] = sum(us for _, us in timings)
    total["DISPATCHES"] = len(timings)
    return {k: round(v, 1) for k, v in sorted(total.items(), key=lambda kv: -kv[1])}


def bench_peer(path: str, args: argparse.Namespace) -> dict:
    import web_rwkv_py as wr

    from rwkv_webgpu.weights import convert

    st_path = path + ".st"
    if not os.path.exists(st_path):
        convert(path, st_path)
    out: dict = {"engine": "web-rwkv-py 0.2.3"}
    t0 = time.perf_counter()
    model = wr.Model(st_path)
    out["load_s"] = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    vocab = 65536
    prompt = rng.integers(1, vocab, args.prompt).tolist()
    for chunk in args.chunks:
        model.clear_state()
        model.run(prompt[:chunk], token_chunk_size=chunk)

        def peer_prompt(chunk=chunk):
            model.clear_state()
            return model.run(prompt, token_chunk_size=chunk)

        logits = prompt_runs(out, f"prefill_tok_s_chunk{chunk}", peer_prompt, len(prompt), args)
    model.clear_state()
    logits = np.asarray(model.run(prompt[:16]), np.float32)
    for _ in range(8):
        logits = np.asarray(model.run([sample_top_p(logits, rng)]), np.float32)
    last = [logits]

    def peer_step() -> None:
        last[0] = np.asarray(model.run([sample_top_p(last[0], rng)]), np.float32)

    host_loops(out, "decode_tok_s_b1", peer_step, args)  # as many loops as ours
    layers = 24
    for quant in args.quant:
        kw = {"quant": layers} if quant == "int8" else {"quant_nf4": layers} if quant == "nf4" else None
        if kw is None:
            continue
        qm = wr.Model(st_path, **kw)
        qm.run(prompt[: max(args.chunks)], token_chunk_size=max(args.chunks))  # warm-up, as for f16

        def peer_quant_prompt(qm=qm):
            qm.clear_state()
            return np.asarray(qm.run(prompt, token_chunk_size=max(args.chunks)), np.float32)

        logits = prompt_runs(out, f"{quant}_prefill_tok_s_chunk{max(args.chunks)}", peer_quant_prompt, len(prompt), args)
        qlast = [logits]

        def peer_quant_step(qm=qm, qlast=qlast) -> None:
            qlast[0] = np.asarray(qm.run([sample_top_p(qlast[0], rng)]), np.float32)

        host_loops(out, f"{quant}_decode_tok_s_b1", peer_quant_step, args)
        del qm
    out["peak_host_mb"] = peak_rss_mb()
    return out


def worker(args: argparse.Namespace) -> None:
    fn = bench_ours if args.engine == "ours" else bench_peer
    try:
        res = fn(args.model, args)
    except Exception as exc:  # reported in the JSON, the driver goes on
        res = {"engine": args.engine, "error": f"{type(exc).__name__}: {exc}"}
    print("RESULT " + json.dumps(res))


def driver(args: argparse.Namespace) -> None:
    from random_model import write_random_model

    results = {"date": datetime.date.today().isoformat(), "runs": []}
    for shape in args.shapes:
        path = os.path.join(args.workdir, f"{shape}.safetensors")
        if not os.path.exists(path):
            t0 = time.perf_counter()
            write_random_model(shape, path)
            print(f"made {path} in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        engines = ["ours"] + (["peer"] if args.peer and shape.startswith(("v4", "v5", "v6")) else [])
        for engine in engines:
            cmd = [sys.executable, __file__, "--worker", "--engine", engine, "--model", path,
                   "--prompt", str(args.prompt), "--decode", str(args.decode),
                   "--chunks", *map(str, args.chunks), "--batches", *map(str, args.batches),
                   "--repeats", str(args.repeats)]  # fmt: skip
            if args.quant:
                cmd += ["--quant", *args.quant]
            if args.tiled_from:
                cmd += ["--tiled-from", str(args.tiled_from)]
            if args.profile:
                cmd.append("--profile")
            if args.adapter:
                cmd += ["--adapter", args.adapter]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
            line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            res = json.loads(line[-1][7:]) if line else {"engine": engine, "error": proc.stderr[-2000:]}
            res["shape"] = shape
            results["runs"].append(res)
            print(json.dumps(res), file=sys.stderr)
    text = json.dumps(results, indent=2)
    if args.out:
        Path(args.out).write_text(text)
    print(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", nargs="+", default=["v6-small", "v7-small"])
    ap.add_argument("--prompt", type=int, default=1024)
    ap.add_argument("--decode", type=int, default=128)
    ap.add_argument("--chunks", type=int, nargs="+", default=[128, 512, 1024])
    ap.add_argument("--batches", type=int, nargs="+", default=[8, 32, 64])
    ap.add_argument("--repeats", type=int, default=3, help="prompt runs and batch-1 loops per figure (the median is reported)")
    ap.add_argument("--peer", action="store_true", help="also run web-rwkv-py 0.2.3 (V4-V6)")
    ap.add_argument("--quant", nargs="*", default=[], help="also measure these quantizations (int8 nf4 sf4)")
    ap.add_argument("--tiled-from", type=int, default=0, help="experiment: the tiled matmul needs at least this many 64x64 tiles")
    ap.add_argument("--profile", action="store_true", help="per-kernel GPU time (timestamp queries)")
    ap.add_argument("--adapter", default=None)
    ap.add_argument("--workdir", default="/tmp")
    ap.add_argument("--timeout", type=int, default=900)
    ap.add_argument("--out", default=None)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--engine", default="ours", help=argparse.SUPPRESS)
    ap.add_argument("--model", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    worker(args) if args.worker else driver(args)


if __name__ == "__main__":
    main()

