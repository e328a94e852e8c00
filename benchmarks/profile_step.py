"""Where one decode step of B slots spends its time: GPU per kernel (timestamp queries), the
GPU time of the whole step as it really runs (one timestamp before its first dispatch, one after
its last: gaps between dispatches included, no per-kernel passes), and the host side (packing,
encoding, readback). At batch 1 also the GPU-sampling loop's tokens/s. ``--prefill N ..``: the
same for one prompt chunk of N tokens (and its tokens/s over a few chunks).

    python benchmarks/profile_step.py MODEL --batch 1 8 64
    python benchmarks/profile_step.py MODEL --batch --prefill 512 1024
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
    from bench_models import _group

    import rwkv_webgpu as rw
    from rwkv_webgpu.models.step import Plan

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--batch", type=int, nargs="*", default=[64])
    ap.add_argument("--adapter", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--prefill", type=int, nargs="*", default=[], help="prompt chunk sizes to profile")
    ap.add_argument("--quant", default=None, help="int8, nf4 or sf4")
    ap.add_argument("--no-big-split", action="store_true", help="experiment: prompt products never cut K in parts")
    ap.add_argument("--no-quant-big", action="store_true", help="experiment: quantized prompts on 64 x 64 tiles only")
    ap.add_argument("--no-decode-split", action="store_true", help="experiment: one token over long rows on the 64-lane GEMV")
    ap.add_argument("--row-major-blocks", action="store_true", help="experiment: tile_big.wgsl WARP_BLOCKS off")
    ap.add_argument("--no-vec-x", action="store_true", help="experiment: quantized one-token kernels read x one value at a time")
    ap.add_argument("--no-decode-parts", action="store_true", help="experiment: K parts of long one-token rows added by `reduce`")
    ap.add_argument("--no-narrow-lanes", action="store_true", help="experiment: 16 lanes a row on narrow one-token products too")
    ap.add_argument("--no-fused-decode", action="store_true", help="experiment: decoding keeps the time mix's separate kernels")
    ap.add_argument("--checked", nargs="*", default=[], help="experiment: kernels compiled with all of wgpu's runtime checks")
    ap.add_argument("--no-widen", action="store_true", help="experiment: prompt rows widened to f32 on the host")
    ap.add_argument("--unroll", type=int, default=None, help="experiment: words in flight per lane in the one-token matmul kernels")
    ap.add_argument("--quant-rows", type=int, default=None, help="experiment: rows per lane of the 4-bit one-token kernels, on every matrix (0: one, the int8 entry)")
    ap.add_argument("--no-quant-tile16-cpu", action="store_true", help="experiment: CPU adapters' quantized prompts on the 64 x 64 tiles / GEMV")
    ap.add_argument("--no-quant-decode-cpu", action="store_true", help="experiment: CPU adapters keep the GEMV for one-token quantized products")
    ap.add_argument("--no-quant8-narrow", action="store_true", help="experiment: int8 one-token products on 16 lanes a row however narrow")
    ap.add_argument("--no-book2", action="store_true", help="experiment: their codes looked up one at a time")
    ap.add_argument("--decode-max-k", type=int, default=None, help="experiment: longest rows for those kernels")
    ap.add_argument("--quant-decode-max-k", type=int, default=None, help="experiment: the same for quantized weights")
    args = ap.parse_args()
    import importlib

    mm = importlib.import_module("rwkv_webgpu.ops.matmul")
    if args.unroll:
        mm.DECODE_UNROLL = args.unroll
    if args.decode_max_k:
        mm.DECODE_MAX_K = args.decode_max_k
    if args.quant_decode_max_k:
        mm.QUANT_DECODE_MAX_K = args.quant_decode_max_k
    if args.no_big_split:
        mm.BIG_SPLIT_FROM = 1 << 30
    if args.quant_rows is not None:
        mm.QUANT4_RPL = mm.QUANT4_WIDE_RPL = args.quant_rows
    # --no-X switches: each turns one of ops/matmul.py's choices off
    for flag, name in (("no_quant_big", "QUANT_BIG"), ("no_vec_x", "VEC_X"), ("no_quant_decode_cpu", "QUANT_DECODE_CPU"),
                       ("no_quant_tile16_cpu", "QUANT_TILE16_CPU"),
                       ("no_quant8_narrow", "QUANT8_NARROW"), ("no_book2", "QUANT4_BOOK2"), ("no_decode_parts", "DECODE_PARTS"),
                       ("no_narrow_lanes", "NARROW_LANES"), ("no_decode_split", "DECODE_SPLIT")):  # fmt: skip
        if getattr(args, flag):
            setattr(mm, name, False)
    if args.row_major_blocks:
        sh = importlib.import_module("rwkv_webgpu.gpu.shaders")
        before = sh.read_shader
        flag = "override WARP_BLOCKS: bool = true;"
        sh.read_shader = lambda name: before(name).replace(flag, flag.replace("true", "false"))
    if args.no_fused_decode:
        for name, cls in (("v5", "V5Model"), ("v7", "V7Model")):
            getattr(importlib.import_module(f"rwkv_webgpu.models.{name}"), cls).fuse_decode = False
    chunk = max(args.prefill, default=None)
    model = rw.load_model(args.model, adapter=args.adapter, tokenizer="world", quant=args.quant, token_chunk_size=chunk)
    if args.checked:
        importlib.import_module("rwkv_webgpu.gpu.trusted").CHECKED = frozenset(args.checked)
    if args.no_widen:
        model.runner.widen_from = None
    result: dict = {"adapter": model.device.info.describe(), "quant": args.quant, "steps": {},
                    "decode_kernels": {"unroll": getattr(mm, "DECODE_UNROLL", 1), "max_k": mm.DECODE_MAX_K,
                                       "quant_max_k": getattr(mm, "QUANT_DECODE_MAX_K", mm.DECODE_MAX_K),
                                       "quant4_rows": getattr(mm, "QUANT4_RPL", 0), "quant4_wide_rows": getattr(mm, "QUANT4_WIDE_RPL", 0), "book2": getattr(mm, "QUANT4_BOOK2", False)}}  # fmt: skip
    for batch in args.batch:
        result["steps"][f"b{batch}"] = one_batch(model, batch, Plan, _group)
        print(json.dumps(result["steps"][f"b{batch}"], indent=1), flush=True)
    for n in args.prefill:
        result["steps"][f"prefill{n}"] = one_chunk(model, n, Plan, _group)
        print(json.dumps(result["steps"][f"prefill{n}"], indent=1), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


def step_span_us(model, state, plan) -> float:
    """GPU microseconds from the step's first dispatch to its last, as the step normally runs."""
    from rwkv_webgpu.gpu.recorder import Profiler

    prof = Profiler(model.device, 2)
    g, _ = model.runner.graph(state)
    enc = model.device.device.create_command_encoder()
    writes = prof.writes("step")
    enc.begin_compute_pass(timestamp_writes={"query_set": writes["query_set"],
                                             "beginning_of_pass_write_index": 0}).end()  # fmt: skip
    g.encode(enc, plan, key=plan.shape)
    enc.begin_compute_pass(timestamp_writes={"query_set": writes["query_set"], "end_of_pass_write_index": 1}).end()
    prof.finish(enc)
    model.runner.submit(state, plan, enc.finish())
    model.runner.collect(state, plan)
    return prof.read()[0][1]


def one_chunk(model, n: int, Plan, _group) -> dict:
    """One slot, a prompt chunk of ``n`` tokens: tokens/s over 4 chunks, then GPU time."""
    state = model.new_state()
    toks = [int(t) for t in np.random.default_rng(1).integers(1, model.info.num_vocab, n)]
    for _ in range(2):
        model.run([list(toks)], state, token_chunk_size=n)
    t0 = time.perf_counter()
    for _ in range(4):
        model.run([list(toks)], state, token_chunk_size=n)
    out: dict = {"tokens": n, "tok_s": 4 * n / (time.perf_counter() - t0)}
    plan = Plan.pack([toks], [0], False)
    if model.device.info.timestamp_query:
        out["gpu_step_us"] = float(np.median([step_span_us(model, state, plan) for _ in range(4)]))
        out["gpu_us"] = _group(model.runner.profile(state, plan))
    return out


def one_batch(model, batch: int, Plan, _group) -> dict:
    state = model.new_state(batch)
    toks = [[int(t)] for t in np.random.default_rng(0).integers(1, model.info.num_vocab, batch)]
    end = time.perf_counter() + 1.0  # clocks up
    while time.perf_counter() < end:
        model.run([list(t) for t in toks], state)
    out: dict = {"batch": batch}
    t0 = time.perf_counter()
    for _ in range(32):
        model.run([list(t) for t in toks], state)
    out["step_ms"] = (time.perf_counter() - t0) / 32 * 1000
    plan = Plan.pack(toks, list(range(batch)), False)
    t0 = time.perf_counter()
    cmd = model.runner.encode(state, plan)
    out["encode_ms"] = (time.perf_counter() - t0) * 1000
    t0 = time.perf_counter()
    model.runner.submit(state, plan, cmd)
    out["submit_ms"] = (time.perf_counter() - t0) * 1000
    t0 = time.perf_counter()
    model.runner.collect(state, plan)
    out["wait_and_read_ms"] = (time.perf_counter() - t0) * 1000
    if model.device.info.timestamp_query:
        out["gpu_step_us"] = float(np.median([step_span_us(model, state, plan) for _ in range(16)]))
        out["gpu_us"] = _group(model.runner.profile(state, plan))
    if batch == 1:
        from bench_models import gpu_sampling_loop

        import rwkv_webgpu as rw

        rng = np.random.default_rng(0)
        out["gpu_sampling_tok_s"] = gpu_sampling_loop(model, [1, 2, 3], 64, rng)
        out["gpu_sampling_no_ahead_tok_s"] = gpu_sampling_loop(model, [1, 2, 3], 64, rng, ahead=False)
        out["chain_host_ms"] = chain_host_times(model, 64)
        if model.device.info.timestamp_query:
            out["chain_gpu_gaps"] = chain_gpu_gaps(model, 64)
        sample_plan = Plan.pack([[1]], [0], False)
        sample_plan.sample = np.array([[1.0, 0.9, 0, 0.5]], np.float32)
        if model.device.info.timestamp_query:
            st = model.new_state()
            model.forward_sample([1], st, rw.SamplingConfig(temperature=1.0, top_p=0.9), rng)  # sets the counters
            out["gpu_step_sampling_us"] = float(np.median([step_span_us(model, st, sample_plan) for _ in range(16)]))
    return out


def warm_chain(model, warm: int = 16):
    """A batch-1 DecodeChain (top-p 0.9) after a 3-token prompt and ``warm`` chained steps."""
    import rwkv_webgpu as rw

    state = model.new_state()
    rng = np.random.default_rng(1)
    cfg = rw.SamplingConfig(temperature=1.0, top_p=0.9)
    chain = model.decode_chain(state, cfg, rng)
    chain.feed([model.forward_sample([1, 2, 3], state, cfg, rng)])
    for _ in range(warm):
        chain.next(ahead=True)
    return chain


def chain_host_times(model, tokens: int) -> dict:
    """Host milliseconds of a decode chain's steps (10th / 50th / 90th / 99th percentile): each
    next(ahead=True) call, and inside it the encoding, submission and the wait for the read. The
    step ahead keeps the GPU busy only while encode + submit stay under the GPU's step."""
    runner, dev = model.runner, model.device
    times: dict[str, list[float]] = {"encode": [], "submit": [], "read": []}
    originals = {"encode": runner.encode, "submit": runner.submit, "read": dev.read_staging}

    def timed(name):
        fn = originals[name]

        def call(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                times[name].append((time.perf_counter() - t0) * 1000)

        return call

    runner.encode, runner.submit, dev.read_staging = timed("encode"), timed("submit"), timed("read")
    try:
        chain = warm_chain(model)
        for v in times.values():
            v.clear()
        steps = []
        for _ in range(tokens):
            t0 = time.perf_counter()
            chain.next(ahead=True)
            steps.append((time.perf_counter() - t0) * 1000)
        chain.close()
    finally:
        runner.encode, runner.submit, dev.read_staging = originals["encode"], originals["submit"], originals["read"]
    pct = (10, 50, 90, 99)
    return {name: [round(float(np.percentile(v, q)), 3) for q in pct] for name, v in {"next": steps, **times}.items() if v}


def chain_gpu_gaps(model, tokens: int) -> dict:
    """Where a decode chain's time goes on the GPU: each step's command buffer is bracketed by
    timestamps (StepRunner.stamp), giving per step its busy span (first to last command) and
    the idle gap before the next step starts, in microseconds (10th / 50th / 90th / 99th
    percentile), and the mean microseconds a token from the first step's start to the last's end."""
    import wgpu

    dev, runner = model.device, model.runner
    cap = tokens + 64
    query = dev.device.create_query_set(type=wgpu.QueryType.timestamp, count=2 * cap)
    count = [0]

    def stamp(enc, first: bool) -> None:
        i = count[0] if first else count[0] - 1
        if i >= cap:
            return
        key = "beginning_of_pass_write_index" if first else "end_of_pass_write_index"
        enc.begin_compute_pass(timestamp_writes={"query_set": query, key: 2 * i + (0 if first else 1)}).end()
        if first:
            count[0] += 1

    # which recorded buffers were sent (one recorded ahead may be dropped unsent: its queries
    # were never written)
    index_of: dict[int, int] = {}
    sent: list[int] = []
    encode, submit = runner.encode, runner.submit

    def encode_stamped(state, plan):
        cmd = encode(state, plan)
        index_of[id(cmd)] = count[0] - 1
        return cmd

    def submit_stamped(state, plan, cmd):
        if id(cmd) in index_of:
            sent.append(index_of.pop(id(cmd)))
        return submit(state, plan, cmd)

    warm_chain(model).close()  # the warm-up steps are done; what follows is timed
    runner.stamp, runner.encode, runner.submit = stamp, encode_stamped, submit_stamped
    try:
        chain = warm_chain(model, warm=0)
        for _ in range(tokens):
            chain.next(ahead=True)
        chain.close()
    finally:
        runner.stamp, runner.encode, runner.submit = None, encode, submit
    # Resolve only the pairs of steps that were sent: resolving a query never written waits for
    # it on Vulkan (wgpu asks for the results with the wait flag), which hangs the queue.
    written = [i for i in sent if i < cap]  # in the order they were sent
    if not written:
        return {}
    resolve = dev.create_buffer(256 * len(written), wgpu.BufferUsage.QUERY_RESOLVE | wgpu.BufferUsage.COPY_SRC)
    enc = dev.device.create_command_encoder()
    for j, i in enumerate(written):
        enc.resolve_query_set(query, 2 * i, 2, resolve, 256 * j)  # destination offsets: multiples of 256
    dev.queue.submit([enc.finish()])
    ticks = dev.read(resolve, np.uint64, 0, 256 * len(written)).reshape(-1, 32)[:, :2].astype(np.int64)
    busy = (ticks[:, 1] - ticks[:, 0]) / 1000.0
    gaps = (ticks[1:, 0] - ticks[:-1, 1]) / 1000.0
    pct = (10, 50, 90, 99)
    return {
        "steps": len(ticks),
        "busy_us": [round(float(np.percentile(busy, q)), 1) for q in pct],
        "gap_us": [round(float(np.percentile(gaps, q)), 1) for q in pct] if len(gaps) else [],
        "per_token_us": round(float((ticks[-1, 1] - ticks[0, 0]) / 1000.0 / max(1, len(ticks) - 1)), 1),
    }


if __name__ == "__main__":
    main()
