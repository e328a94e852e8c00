"""Matmul kernel variants on the matrix shapes of real models: time per dispatch, weight GB/s and
TFLOP/s. Each variant is dispatched REP times in one compute pass (as a step chains kernels),
timed by GPU timestamps around the pass (median of 5, after 0.2 s of warm-up so clocks are
up; wall time of the best submission on adapters without timestamps). For choosing kernels and thresholds in ops/matmul.py.

    python benchmarks/bench_kernels.py --json out.json [--adapter NAME] [--only gemv]
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rwkv_webgpu.gpu import (
    Counter,
    Graph,
    act_buffer,
    ceil_div,
    get_device,
    pack_params,
    upload_matrix,
)
from rwkv_webgpu.gpu.recorder import Profiler
from rwkv_webgpu.ops.matmul import PARAMS, matmul

# (name, shader, entry, constants, grid(rows, tokens))
Variant = tuple[str, str, str, dict, Callable[[int, int], tuple[int, int, int]]]


def _gemv(wg: int, rows: int) -> Variant:
    return (f"gemv{wg}x{rows}", "matmul", "main", {"WG": wg, "ROWS": rows, "RTOK": 16},
            lambda r, t: (ceil_div(r, rows), ceil_div(t, 4), 1))  # fmt: skip


def _subgroup(lanes: int, wgs: int, tok: int) -> Variant:
    return (f"sg{lanes}w{wgs}t{tok}", "matmul_subgroup", "main", {"LANES": lanes, "WGS": wgs, "TOK": tok},
            lambda r, t: (ceil_div(r, wgs // lanes), ceil_div(t, tok), 1))  # fmt: skip


def _op(kernel: str) -> Variant:
    """A kernel as ops.matmul records it (kernels made of several dispatches, e.g. split)."""
    return (kernel, "op", kernel, {}, lambda r, t: (0, 0, 0))


TILED: Variant = ("tiled64", "matmul_tiled", "main", {}, lambda r, t: (ceil_div(r, 64), ceil_div(t, 64), 1))
BIG: Variant = ("big128", "matmul_tiled", "big", {}, lambda r, t: (ceil_div(r, 128), ceil_div(t, 128), 1))
# experiment: the invocations' blocks laid out row-major (tile_big.wgsl WARP_BLOCKS off)
TILED_RM: Variant = ("tiled64rm", "matmul_tiled", "main", {"WARP_BLOCKS": 0}, TILED[4])
BIG_RM: Variant = ("big128rm", "matmul_tiled", "big", {"WARP_BLOCKS": 0}, BIG[4])
SHAPES = [(2048, 2048), (8192, 2048), (2048, 8192), (65536, 2048)]  # [R, K] of V6/V7 1.5B matrices


def groups(subgroup: bool) -> dict[str, tuple[list[int], list[Variant]]]:
    decode = [_gemv(64, 4), _gemv(32, 8), _gemv(128, 2), _gemv(64, 1), _gemv(128, 1), _gemv(256, 1), _op("rowwise"), _op("rows4"), _op("rows32")]
    if subgroup:
        decode += [_subgroup(8, 64, 4), _subgroup(8, 64, 1), _subgroup(16, 128, 1), _subgroup(32, 256, 1),
                   _subgroup(32, 256, 4), _subgroup(16, 256, 4), _subgroup(32, 32, 1), _subgroup(32, 64, 1),
                   _subgroup(16, 64, 1)]  # fmt: skip
    batch = [_gemv(64, 4), TILED, _op("split"), _op("tall"), _op("rowwise"), _op("tile8")]
    batch += [_subgroup(8, 64, 4), _subgroup(16, 128, 1)] if subgroup else []
    return {
        "gemv": ([1, 4], decode),
        "batch": ([8, 16, 32, 64, 128], batch),
        "prefill": ([512, 1024], [TILED, BIG, _op("big_split"), _op("tile8"), TILED_RM, BIG_RM]),
    }


def time_variant(dev, variant: Variant, r: int, k: int, t: int, rep: int) -> float:
    """Seconds per dispatch of ``variant`` for W [r, k] and T = t tokens."""
    name, shader, entry, consts, grid = variant
    rng = np.random.default_rng(0)
    w = upload_matrix(dev, (rng.standard_normal((r, k), np.float32) / np.sqrt(k)), "w")
    if len(w.parts) != 1:
        raise SystemExit(f"{r}x{k} needs {len(w.parts)} bindings on this adapter; pick a smaller shape")
    xa = act_buffer(dev, t, k, "x")
    ya = act_buffer(dev, t, r, "y")
    dev.write(xa.buffer, rng.standard_normal((t, k), np.float32))
    cnt = Counter(dev, "n")
    cnt.set(t)
    g = Graph(dev)
    params = pack_params(PARAMS, k=k, kv=w.kp // 8, rows=r, row0=0, x_off=0, x_stride=xa.stride, y_off=0,
                         y_stride=ya.stride, act=0, accumulate=0, gate=0)  # fmt: skip
    for _ in range(rep):
        if shader == "op":
            matmul(g, cnt, xa, w, ya, kernel=entry, label=name)
        else:
            g.dispatch(shader, cnt, params, [w.parts[0].buffer, xa.buffer, ya.buffer], lambda n: grid(r, n),
                       entry=entry, label=name, **consts)  # fmt: skip
    return pass_seconds(dev, g, t, ya.buffer) / rep


# one-token kernels as a decode step runs them: (name, weights, LANES, WGS, UNROLL, RPL, BOOK2); rows
# per workgroup = RPL WGS / LANES
DECODE_VARIANTS = [
    (f"{wk}.l{lanes}w{wgs}u{un}", wk, lanes, wgs, un, 0, True)
    for wk, settings in (
        ("f16", [(16, 128, 1), (16, 128, 2), (16, 128, 4), (32, 128, 1), (32, 128, 2), (32, 256, 4), (8, 64, 1)]),
        ("int8", [(16, 128, 1), (16, 128, 2), (32, 128, 1), (32, 128, 2), (8, 64, 1), (8, 64, 2), (8, 128, 2), (4, 128, 2)]),
        ("nf4", [(16, 128, 1), (16, 128, 2), (32, 128, 1), (8, 64, 1), (8, 64, 2)]),
    )
    for lanes, wgs, un in settings
] + [(f"{wk}.gemv{wg}x{rows}", wk, 0, wg, rows, 0, True) for wk in ("f16", "int8", "nf4") for wg, rows in ((64, 4), (128, 2), (256, 1))] + [
    # `decode_rows` of the 4-bit kernels: RPL rows a lane (the byte table, or "b1" the 16-entry one)
    (f"nf4.rows{rpl}l{lanes}w{wgs}u{un}{'' if book2 else 'b1'}", "nf4", lanes, wgs, un, rpl, book2)
    for lanes, wgs, un, rpl, book2 in ((16, 128, 1, 1, True), (16, 128, 1, 2, True), (16, 128, 1, 4, True), (8, 128, 1, 2, True),
                                       (32, 128, 1, 1, True), (32, 128, 1, 2, True), (32, 128, 1, 4, True), (16, 128, 1, 2, False),
                                       (32, 128, 1, 2, False), (32, 256, 1, 2, True))
]  # fmt: skip
# (lanes 0: the GEMV-style kernel, matmul.wgsl / matmul_quant.wgsl: WG lanes per row, ROWS rows per
# workgroup, given in the WGS and UNROLL places)
COLD_BYTES = 256 << 20  # distinct copies of the weights per pass: several times the H100's 50 MB L2


def cold_weights(dev, wk: str, r: int, k: int) -> tuple[list, int]:
    """Distinct copies of one random W [r, k] (f16, int8 or nf4), COLD_BYTES in all, and the
    bytes of one copy: a pass giving each dispatch its own copy reads weights from memory."""
    from rwkv_webgpu.gpu import upload_qmatrix
    from rwkv_webgpu.weights.quant import Quant, quantize

    w = np.random.default_rng(0).standard_normal((r, k), np.float32) / np.sqrt(k)
    if wk == "f16":
        nbytes = r * ((k + 7) // 8 * 8) * 2
        return [upload_matrix(dev, w, "w") for _ in range(max(2, COLD_BYTES // nbytes))], nbytes
    qm = quantize(w, Quant(wk))
    nbytes = qm.codes.nbytes + qm.scales.nbytes
    return [upload_qmatrix(dev, qm, "w") for _ in range(max(2, COLD_BYTES // nbytes))], nbytes


def time_decode_cold(dev, variant: tuple, mats: list, k: int) -> float:
    """Seconds per one-token product through ``variant`` with weights read cold (``mats``)."""
    _, wk, lanes, wgs, un, rpl, book2 = variant
    xa, ya = act_buffer(dev, 1, k, "x"), act_buffer(dev, 1, mats[0].rows, "y")
    dev.write(xa.buffer, np.random.default_rng(1).standard_normal((1, k), np.float32))
    cnt = Counter(dev, "n")
    cnt.set(1)
    consts = {"LANES": lanes, "WGS": wgs, "UNROLL": un} if lanes else {"WG": wgs, "ROWS": un}
    if rpl:
        consts.update(RPL=rpl, BOOK2=float(book2))
    per = (wgs // lanes if lanes else un) * max(1, rpl)
    shader = ("matmul_subgroup" if wk == "f16" else "matmul_quant_subgroup") if lanes else \
        ("matmul" if wk == "f16" else "matmul_quant")  # fmt: skip
    g = Graph(dev)
    for m in mats:
        for part in m.parts:
            params = pack_params(PARAMS, k=k, kv=m.kp // 8, rows=part.rows, row0=part.row0, x_off=0,
                                 x_stride=xa.stride, y_off=0, y_stride=ya.stride, act=0, accumulate=0, gate=0)  # fmt: skip
            grid = functools.partial(lambda rows, n: (ceil_div(rows, per), n, 1), part.rows)
            if wk == "f16":
                g.dispatch(shader, cnt, params, [part.buffer, xa.buffer, ya.buffer], grid,
                           entry="decode" if lanes else "main", label=variant[0], **consts)  # fmt: skip
            else:
                buffers = {2: part.codes, 3: xa.buffer, 4: ya.buffer, 5: part.scales}
                if lanes:
                    buffers[6] = xa.buffer  # the vec4 view of x (matmul_io.wgsl xv)
                g.dispatch(shader, cnt, params, buffers, grid, entry="decode_rows" if rpl else "main", label=variant[0],
                           QUANT={"int8": 0, "nf4": 1}[wk], **consts)  # fmt: skip
    return pass_seconds(dev, g, 1, ya.buffer) / len(mats)


def pass_seconds(dev, g: Graph, n: int, sync: object) -> float:
    """Seconds of GPU time for one pass over every dispatch of ``g`` sized for ``n`` rows (median
    of 5 after ~0.2 s of the same work, so clocks are up; without timestamp queries, the best
    wall time of 5 submissions read back through ``sync``)."""
    if not dev.info.timestamp_query:
        best = float("inf")
        for i in range(6):
            t0 = time.perf_counter()
            g.run()
            dev.read(sync, np.float32, 0, 16)
            if i:
                best = min(best, time.perf_counter() - t0)
        return best
    end = time.perf_counter() + 0.2
    while time.perf_counter() < end:
        g.run()
        dev.read(sync, np.float32, 0, 16)
    prof = Profiler(dev, 8)
    times = []
    for _ in range(5):
        enc = dev.device.create_command_encoder()
        cp = enc.begin_compute_pass(timestamp_writes=prof.writes("pass"))
        for item in g.items:
            cp.set_pipeline(item.pipeline)
            cp.set_bind_group(0, item.bind_group)
            x, y, z = item.grid(n)
            if x and y and z:
                cp.dispatch_workgroups(x, y, z)
        cp.end()
        prof.finish(enc)
        dev.queue.submit([enc.finish()])
        times.append(prof.read()[0][1] * 1e-6)
    return float(np.median(times))


# (temperature, top_p, top_k) and the spread of the random logits: 2.5 is about as flat as a
# random-weight model's (a third of the ids hold p >= 1e-6), 8 closer to a trained model's
SAMPLE_SETTINGS = {"greedy": (0.0, 1.0, 0, 2.5), "plain": (1.0, 1.0, 0, 2.5), "top_p": (1.0, 0.9, 0, 2.5),
                   "top_k_p": (1.0, 0.9, 40, 2.5), "top_p_peaked": (1.0, 0.9, 0, 8.0)}  # fmt: skip


def time_sample(dev, vocab: int, setting: str, rep: int = 20) -> float:
    """Seconds per dispatch of the sampling kernel on one row of ``vocab`` random logits."""
    from rwkv_webgpu.ops.sample import mask_bits, sample_rows

    rng = np.random.default_rng(0)
    *rule, spread = SAMPLE_SETTINGS[setting]
    logits = (rng.standard_normal(vocab) * spread).astype(np.float32)
    la = act_buffer(dev, 1, vocab, "logits")
    dev.write(la.buffer, logits)
    params = dev.upload(np.array([[*rule, 0.5]], np.float32))
    ids, allowed = dev.storage(16), dev.upload(mask_bits(None, vocab))
    g, cnt = Graph(dev), Counter(dev, "n")
    for _ in range(rep):
        sample_rows(g, cnt, la, params, ids, allowed)
    cnt.set(1)
    return pass_seconds(dev, g, 1, ids) / rep

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--adapter", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--only", nargs="*", default=None, help="groups to run: gemv batch prefill sample decode (decode: only when named; weights read cold)")
    ap.add_argument("--shapes", nargs="*", default=None, help="RxK, e.g. 2048x2048")
    ap.add_argument("--tokens", type=int, nargs="*", default=None, help="step sizes (default: per group)")
    ap.add_argument("--kernels", nargs="*", default=None, help="only these variants (names as printed)")
    args = ap.parse_args()
    dev = get_device(args.adapter)
    shapes = [tuple(map(int, s.split("x"))) for s in args.shapes] if args.shapes else SHAPES
    out: dict = {"adapter": dev.info.describe(), "date": time.strftime("%Y-%m-%d"), "results": []}
    if not args.only or "sample" in args.only:
        for setting in SAMPLE_SETTINGS:
            row = {"group": "sample", "kernel": setting, "V": 65536, "us": round(time_sample(dev, 65536, setting) * 1e6, 2)}
            out["results"].append(row)
            print(json.dumps(row), flush=True)
    if (args.only and "decode" in args.only) and dev.info.subgroup:
        for r, k in shapes:
            for wk in ("f16", "int8", "nf4"):
                chosen = [v for v in DECODE_VARIANTS if v[1] == wk and (not args.kernels or v[0] in args.kernels)]
                if not chosen:
                    continue
                mats, nbytes = cold_weights(dev, wk, r, k)
                for v in chosen:
                    if v[2] == 0 and ceil_div(max(part.rows for part in mats[0].parts), v[4]) > 65535:
                        continue  # more workgroups than a dispatch takes
                    s = time_decode_cold(dev, v, mats, k)
                    row = {"group": "decode", "kernel": v[0], "R": r, "K": k, "T": 1, "us": round(s * 1e6, 2),
                           "weight_gb_s": round(nbytes / s / 1e9, 1)}  # fmt: skip
                    out["results"].append(row)
                    print(json.dumps(row), flush=True)
                del mats
    for group, (tokens, variants) in groups(dev.info.subgroup).items():
        if args.only and group not in args.only:
            continue
        for r, k in shapes:
            for t in args.tokens or tokens:
                for v in variants:
                    if args.kernels and v[0] not in args.kernels:
                        continue
                    rep = 50 if t < 64 else 10
                    try:
                        s = time_variant(dev, v, r, k, t, rep)
                    except ValueError as exc:  # a kernel that does not take this shape
                        print(f"{v[0]} {r}x{k} T={t}: {exc}", flush=True)
                        continue
                    row = {"group": group, "kernel": v[0], "R": r, "K": k, "T": t, "us": round(s * 1e6, 2),
                           "weight_gb_s": round(r * k * 2 / s / 1e9, 1), "tflop_s": round(2 * r * k * t / s / 1e12, 2)}  # fmt: skip
                    out["results"].append(row)
                    print(json.dumps(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
