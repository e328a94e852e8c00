"""y = act(x @ W^T), optionally added into y: every linear layer of every version."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ShapeError
from ..gpu import Act, BufferRange, Counter, Graph, Matrix, QMatrix, ceil_div, pack_params
from ..gpu.recorder import Grid
from ..gpu.tensor import MatrixPart, QMatrixPart

_FIELDS = ("k", "kv", "rows", "row0", "x_off", "x_stride", "y_off", "y_stride", "act", "accumulate", "gate")
PARAMS = np.dtype([(n, "<u4") for n in _FIELDS])
ACTIVATIONS = {"none": 0, "tanh": 1, "sigmoid": 2, "relu_sq": 3, "silu": 4}
ROWS = 4  # rows per workgroup (matmul.wgsl)
TOK = 4  # tokens per workgroup (fixed in matmul.wgsl)
TILE = 64  # rows and tokens per workgroup (matmul_tiled.wgsl)
NO_GRID = (0, 0, 0)
SPLIT_MAX = 16  # K parts of the split kernel at most ...
SPLIT_MIN_PART = 128  # ... each at least this long ...
SPLIT_MIN_K = 512  # ... for K from this ...
SPLIT_MIN_ROWS = 64  # ... and matrices of at least this many rows
BIG = 128  # rows and tokens per workgroup (matmul_tiled.wgsl `big`)
RTOK = 16  # tokens per invocation (matmul.wgsl rowwise; its accumulator array holds 16)
ROWS4_MIN_ROWS = 512  # CPU adapters, one token: four rows per invocation from this many rows
ROWS32_MIN_ROWS = 8192  # ... and 32 rows from this many (the LM head: 65536 x 256 53 -> 37 ms on lavapipe)
# (lavapipe: the 65536 x 256 head 104 -> 56 ms; fewer rows would leave cores idle)
DECODE_UNTIL = 16  # steps below this many tokens use the one-token subgroup kernel (if any) ...
DECODE_MAX_K = 4096  # ... for K up to this (longer rows: the 64-lane GEMV is faster)
QUANT_DECODE_MAX_K = 8192  # the same bound for quantized weights (H100: faster than the GEMV up to 7168)
DECODE_WGS = 128  # invocations per workgroup of that kernel: 8 rows of 16 lanes (16 x 8 lanes on
# adapters with subgroups under 32 invocations, where the compiler may pick smaller ones) ...
DECODE_UNROLL = 2  # ... each lane loading this many 16-byte words of its row at once (1, 2, 4)
NARROW_LANES, NARROW_ROWS = True, 2048  # ... a subgroup of 32 per row on f16 matrices of this many rows or fewer
DECODE_SPLIT = True  # one token over rows longer than DECODE_MAX_K: that kernel with K in parts ...
DECODE_SPLIT_K = 2048  # ... of at most this many weights each, then `reduce` (else the 64-lane GEMV) ...
VEC_X = True  # quantized one-token kernels read x as vec4s where aligned (x_reads.wgsl x8_fast), bound again at:
XV, XV_GROUP = 6, 8  # binding of that view in matmul_io.wgsl / matmul_group_io.wgsl
HALF_GROUP = 9  # matmul_quant_group.wgsl: binding of its f16 segments' weights (its eighth storage buffer)
JOIN_F16 = True  # f16 products ready with quantized ones join their one-token group (_join_half)
DECODE_PARTS = True  # ... or the parts added up in the workgroup ("decode_parts"; no `reduce` dispatch)
QUANT4_RPL = 2  # 4-bit one-token kernels: rows per lane sharing x (`decode_rows`, LANES 32; 0: `main`) ...
QUANT4_WIDE_ROWS, QUANT4_WIDE_RPL = 4096, 4  # ... and this many on matrices (or groups) of at least so many rows
QUANT4_BOOK2 = True  # ... codes looked up a byte (two weights) at a time there
QUANT_DECODE_CPU = True  # CPU adapters with subgroups: one-token quantized products on those kernels too
QUANT_TILE16_CPU = True  # CPU adapters: quantized steps of 2+ tokens on the 16 x 16 register tiles (lavapipe:
# 2.5x the workgroup-reduction GEMV at 2 and 8 tokens, 2.5x the 64 x 64 tiles at 128)
QUANT8_NARROW = True  # int8 one-token products of at most NARROW_ROWS rows on 32 lanes a row (H100 V6 step -8%)
SUBGROUP_FROM = 16  # steps with at least this many tokens use the subgroup kernel (if any)
WIDE_FROM, WIDE_ROWS = 8, 4096  # ... and from 8 tokens for matrices of at least 4096 rows
SPLIT_FROM = 32  # steps from this many tokens use the split tiles where those apply
TALL_MAX = 128  # GPUs: 128 x 64 tiles (K in parts) for steps of SPLIT_FROM up to this many tokens ...
TALL_MIN_ROWS = 512  # ... on matrices of this many rows (narrower ones: the split 64 x 64 tiles)
TILED_FROM = 48  # CPU adapters: quantized steps with at least this many tokens use the tiled kernel (QUANT_TILE16_CPU off)
TILE16_FROM = 16  # CPU adapters: f16 steps with at least this many tokens use 16 x 16 register tiles
GPU_TILED_FROM = 32  # GPUs: steps with at least this many tokens use tiles ...
TILED_MIN_TILES = 128  # ... when that makes at least this many workgroups (H100: 132 SMs)
# A group's large products share one dispatch of 128 x 128 tiles when that costs fewer "waves"
# (measured on the H100 at K = 2048, 2048-row products: a wave of two 128 x 128 workgroups per SM
# ~700 us, 128 workgroups alone, one per SM, ~408 us; the 64 x 64 tiles of 2048 x 2048 x 512 ~292 us):
TILE_SLOTS = 264  # 128 x 128 workgroups resident at once (two per SM on 132 SMs)
SOLO_WAVE = 0.6  # a wave of at most TILE_SLOTS / 2 of them, against a full one
TILED_WAVE = 0.42  # 256 workgroups of 64 x 64 tiles, against a full 128 x 128 wave
# A prompt product whose 128 x 128 tiles would leave SMs with one workgroup (at most TILE_SLOTS / 2
# tiles) cuts K in 2, 4 or 8 parts instead ("big_split", then `reduce`), from this many tokens:
BIG_SPLIT_FROM = 384
BIG_SPLIT_PARTS = (2, 4, 8)
BIG_SPLIT_MIN_PART = 256  # K per part at least
SPLIT_REDUCE_WAVE = 0.05  # adding up the parts (2048 x 1024 f32 x 2 parts: ~20 us), against a wave


def matmul(
    graph: Graph,
    counter: Counter,
    x: Act,
    w: Matrix | QMatrix,
    y: Act,
    *,
    act: str = "none",
    accumulate: bool = False,
    gate: Act | None = None,
    kernel: str | None = None,
    label: str = "matmul",
) -> None:
    """Record ``y[t, :R] (+)= act(W @ x[t, :K])`` for the counter's T rows.

    With ``gate`` (a view into y's buffer with y's stride, e.g. another plane of it):
    ``y[t, r] += gate[t, r] * act(...)`` (RWKV-4..6's gated channel-mix output in one dispatch).

    Shapes: x [T, K], W [R, K] (f16, split in row blocks), y [T, >= R]. Every kernel that may
    suit this matrix is recorded; each step runs the one :func:`_choose` picks for its token
    count (the others get an empty grid): GEMV-style kernels for decoding and small batches,
    tiles (K in parts where the tiles are few) for batches and prompts. ``kernel`` (one of
    KERNELS) forces one kernel for every token count (tests use it to check each on any adapter).
    """
    _check(x, w, y, act, label)
    if gate is not None and (gate.buffer is not y.buffer or gate.stride != y.stride):
        raise ShapeError(f"{label}: the gate must be a view of the output's buffer with its row stride")
    if isinstance(w, QMatrix):
        _matmul_quant(graph, counter, x, w, y, act, accumulate, gate, label, kernel)
        return
    for part in w.parts:
        params = _params(w.k, w.kp, part.rows, part.row0, x, y, act, accumulate, gate)

        for name, grid in _choose(graph, part.rows, kernel, w.k):
            if name in ("split", "tall", "big_split", "decode_split", "decode_parts"):
                _matmul_parts(graph, counter, params, part, x, y, grid, label, name, kernel is not None)
                continue
            consts: dict[str, float]
            if name == "decode":
                shader, entry, consts = "matmul_subgroup", "decode", decode_constants(graph, part.rows <= NARROW_ROWS)
            else:
                shader, entry, consts = _KERNEL_SOURCES[name]
            suffix = "" if name in ("gemv", "subgroup", "decode", "rowwise", "rows4", "rows32", "tile8", "tile16") else f".{name}"
            graph.dispatch(shader, counter, params, [part.buffer, x.buffer, y.buffer], grid, entry=entry,
                           label=label + suffix, **consts)  # fmt: skip


def _params(k: int, kp: int, rows: int, row0: int, x: Act, y: Act, act: str, accumulate: bool,
            gate: Act | None) -> np.ndarray:  # fmt: skip
    """matmul_io.wgsl's Params for one matrix part."""
    return pack_params(
        PARAMS, k=k, kv=kp // 8, rows=rows, row0=row0, x_off=x.offset, x_stride=x.stride, y_off=y.offset,
        y_stride=y.stride, act=ACTIVATIONS[act], accumulate=2 if gate is not None else int(accumulate),
        gate=0 if gate is None else (gate.offset - y.offset) % 2**32,
    )  # fmt: skip


# kernel name -> (shader, entry point, override constants)
_KERNEL_SOURCES: dict[str, tuple[str, str, dict[str, float]]] = {
    "gemv": ("matmul", "main", {"WG": 64, "ROWS": ROWS, "RTOK": RTOK}),
    "rowwise": ("matmul", "rowwise", {"WG": 64, "ROWS": ROWS, "RTOK": RTOK}),
    "rows4": ("matmul", "rows4", {"WG": 64, "ROWS": ROWS, "RTOK": RTOK}),
    "rows32": ("matmul", "rows32", {"WG": 64, "ROWS": ROWS, "RTOK": RTOK}),
    "tile8": ("matmul", "tile8", {"WG": 64, "ROWS": ROWS, "RTOK": RTOK}),
    "tile16": ("matmul", "tile16", {"WG": 64, "ROWS": ROWS, "RTOK": RTOK}),
    "subgroup": ("matmul_subgroup", "main", {"LANES": 8, "WGS": 64, "TOK": TOK}),
    "tiled": ("matmul_tiled", "main", {}),
    "big": ("matmul_tiled", "big", {}),
}
KERNELS = ("gemv", "subgroup", "decode", "decode_split", "decode_parts", "rowwise", "rows4", "rows32", "tile8", "tile16", "tiled", "big",
           "split", "tall", "big_split")  # fmt: skip


def decode_split_parts(k: int) -> int:
    """K parts of `decode_split` for rows of ``k`` weights: at most DECODE_SPLIT_K each, at least 2."""
    return max(2, ceil_div(k, DECODE_SPLIT_K))


DECODE_PARTS_WGS = 256  # invocations of a `decode_parts` workgroup at most (WebGPU's default limit)


def decode_parts_rows(graph: Graph, k: int) -> int:
    """Rows per workgroup of `decode_parts` (SPLIT x rows x LANES invocations, at most
    DECODE_PARTS_WGS); 0 where even one row's parts do not fit (`decode_split` then)."""
    return DECODE_PARTS_WGS // (decode_split_parts(k) * decode_lanes(graph))


def split_parts(rows: int, k: int) -> int:
    """How many K parts the split kernel cuts a matrix of ``rows`` x ``k`` into: enough 64 x 64
    tiles per token tile to reach TILED_MIN_TILES workgroups, at most SPLIT_MAX parts of at
    least SPLIT_MIN_PART (two for shorter K, when a test forces the kernel)."""
    return max(1, min(SPLIT_MAX, max(2, k // SPLIT_MIN_PART), ceil_div(TILED_MIN_TILES, ceil_div(rows, TILE))))


def tall_parts(rows: int, k: int) -> int:
    """K parts of the `tall` kernel (128-row x 64-token tiles) for a matrix of ``rows`` x ``k``:
    TILED_MIN_TILES workgroups for one token tile, at most SPLIT_MAX parts of SPLIT_MIN_PART."""
    return max(1, min(SPLIT_MAX, k // SPLIT_MIN_PART, ceil_div(TILED_MIN_TILES, ceil_div(rows, BIG))))


def big_split_parts(rows: int, k: int, n: int) -> int:
    """K parts of `big_split` for ``rows`` x ``k`` at ``n`` tokens: the most of BIG_SPLIT_PARTS
    whose tiles fit TILE_SLOTS, with parts of at least BIG_SPLIT_MIN_PART (else 2)."""
    tiles = ceil_div(rows, BIG) * ceil_div(n, BIG)
    fit = [q for q in BIG_SPLIT_PARTS if tiles * q <= TILE_SLOTS and k // q >= BIG_SPLIT_MIN_PART]
    return max(fit, default=BIG_SPLIT_PARTS[0])


def _big_split(rows: int, k: int, n: int) -> bool:
    """Whether a prompt step of ``n`` tokens runs ``rows`` x ``k`` as `big_split` rather than whole
    128 x 128 or 64 x 64 tiles (GPUs; the caller checked that tiles are the choice)."""
    return n >= BIG_SPLIT_FROM and k >= SPLIT_MIN_K and ceil_div(rows, BIG) * ceil_div(n, BIG) <= TILE_SLOTS // 2


def _matmul_big_split(graph: Graph, counter: Counter, params: np.ndarray, rows: int, x: Act, y: Act, grid: Grid,
                      label: str, forced: bool, shader: str, weights: dict[int, Any],
                      **consts: float) -> None:  # fmt: skip
    """Record `big_split` (128 x 128 tiles with K in parts, f16 or quantized ``weights`` bindings)
    once per part count, each on the steps that use it, with the `reduce` that adds its partials
    into y."""
    k = int(params["k"][0])
    # the most tokens a step sends here: all the input holds, or where the tiles stay few
    tokens = x.max_rows or 4096
    if not forced:
        tokens = min(tokens, BIG * (TILE_SLOTS // 2 // ceil_div(rows, BIG)))
    for parts in BIG_SPLIT_PARTS:
        def split_grid(n: int, parts: int = parts) -> tuple[int, int, int]:
            g = grid(n)
            return g if g != NO_GRID and big_split_parts(rows, k, n) == parts else NO_GRID

        scratch = graph.device.scratch(parts * max(tokens, 1) * rows * 4)
        graph.dispatch(shader, counter, params, {**weights, 3: x.buffer, 4: scratch}, split_grid,
                       entry="big_split", label=f"{label}.big_split", SPLIT=parts, **consts)  # fmt: skip
        _record_reduce(graph, counter, params, rows, scratch, y, split_grid, label, parts)


def _matmul_parts(graph: Graph, counter: Counter, params: np.ndarray, part: MatrixPart, x: Act, y: Act,
                  grid: Grid, label: str, entry: str, forced: bool) -> None:  # fmt: skip
    """Record a kernel that sums K in parts (`split`, `tall`, `big_split`): partial sums per part
    into the device's scratch buffer, then `reduce` adds them into y (`tall` in one part writes y
    itself)."""
    k = int(params["k"][0])
    if entry == "big_split":
        _matmul_big_split(graph, counter, params, part.rows, x, y, grid, label, forced, "matmul_tiled",
                          {2: part.buffer})  # fmt: skip
        return
    if entry == "decode_split":
        _matmul_decode_split(graph, counter, params, part, x, y, grid, label, forced)
        return
    if entry == "decode_parts":
        rpw, parts = decode_parts_rows(graph, k), decode_split_parts(k)
        graph.dispatch("matmul_subgroup", counter, params, [part.buffer, x.buffer, y.buffer], grid, entry="decode_parts",
                       label=f"{label}.decode_parts", SPLIT=parts,
                       **{**decode_constants(graph), "WGS": rpw * parts * decode_lanes(graph)})  # fmt: skip
        return
    parts = split_parts(part.rows, k) if entry == "split" else tall_parts(part.rows, k)
    if entry == "tall" and parts == 1:
        graph.dispatch("matmul_tiled", counter, params, [part.buffer, x.buffer, y.buffer], grid, entry="tall",
                       label=label + ".tall", SPLIT=1)  # fmt: skip
        return
    # the most tokens a step can send here (forced: any the input holds)
    if forced:
        tokens = x.max_rows or 4096
    elif entry == "tall":
        tokens = TALL_MAX
    else:  # below the count at which 64 x 64 tiles take over
        tokens = TILE * (ceil_div(TILED_MIN_TILES, ceil_div(part.rows, TILE)) - 1)
    if x.max_rows:
        tokens = min(tokens, x.max_rows)
    scratch = graph.device.scratch(parts * max(tokens, 1) * part.rows * 4)
    graph.dispatch("matmul_tiled", counter, params, [part.buffer, x.buffer, scratch], grid, entry=entry,
                   label=f"{label}.{entry}", SPLIT=parts)  # fmt: skip
    _record_reduce(graph, counter, params, part.rows, scratch, y, grid, label, parts)


def _record_reduce(graph: Graph, counter: Counter, params: np.ndarray, rows: int, scratch: Any, y: Act, grid: Grid,
                   label: str, parts: int) -> None:  # fmt: skip
    """Record matmul_tiled.wgsl `reduce`: y (+)= act(sum of the ``parts`` partials in ``scratch``),
    on the steps where the kernel that wrote them (``grid``) runs."""
    graph.dispatch("matmul_tiled", counter, params, {3: scratch, 4: y.buffer},
                   lambda n: (ceil_div(rows, 64), n, 1) if grid(n) != NO_GRID else NO_GRID,
                   entry="reduce", label=label + ".reduce", SPLIT=parts)  # fmt: skip


def decode_lanes(graph: Graph, narrow: bool = False) -> int:
    """Invocations per row in the one-token subgroup kernels: 16 where subgroups have 32 or more
    invocations (NVIDIA, AMD, Apple), else 8 (what the other subgroup kernel assumes too). With
    ``narrow`` (an f16 matrix of at most NARROW_ROWS rows) a whole subgroup of 32 per row: with
    few rows, fewer words per lane keeps more of each row in flight."""
    size = graph.device.info.subgroup_size
    if narrow and NARROW_LANES and size >= 32:
        return 32
    return 16 if size >= 32 else 8


def decode_constants(graph: Graph, narrow: bool = False) -> dict[str, float]:
    """Override constants of the one-token subgroup kernels (f16, group and quantized)."""
    return {"LANES": decode_lanes(graph, narrow), "WGS": DECODE_WGS, "UNROLL": DECODE_UNROLL}


def decode_grid(graph: Graph, rows: int, narrow: bool = False) -> Grid:
    """Grid of those kernels for ``rows`` rows: one workgroup row per token."""
    per = DECODE_WGS // decode_lanes(graph, narrow)
    return lambda n: (ceil_div(rows, per), n, 1)


def quant_decode(graph: Graph, quant: int, rows: int) -> tuple[str, dict[str, float], Grid]:
    """Entry, override constants and grid of the quantized one-token kernels for ``rows`` rows of
    QUANT code ``quant``: 4-bit codes on `decode_rows` (QUANT4_RPL rows a lane group of 32 where
    subgroups have 32 invocations, else 16 or 8; QUANT4_WIDE_RPL from QUANT4_WIDE_ROWS rows), int8
    on `main` (a row per lane group of 16, or of 32 on at most NARROW_ROWS rows with QUANT8_NARROW)."""
    consts = decode_constants(graph, QUANT8_NARROW and rows <= NARROW_ROWS)
    rpl = 0 if quant == QUANT_CODE["int8"] else QUANT4_WIDE_RPL if QUANT4_RPL and rows >= QUANT4_WIDE_ROWS else QUANT4_RPL
    if rpl:
        consts.update(LANES=decode_lanes(graph, narrow=True), UNROLL=1, RPL=rpl, BOOK2=float(QUANT4_BOOK2))
    per = DECODE_WGS // int(consts["LANES"]) * max(1, rpl)
    return "decode_rows" if rpl else "main", consts, lambda n: (ceil_div(rows, per), n, 1)


def _check(x: Act, w: Matrix | QMatrix, y: Act, act: str, label: str) -> None:
    if x.cols != w.k:
        raise ShapeError(f"{label}: input [T, {x.cols}] and weight [R={w.rows}, K={w.k}] do not fit (K differs)")
    if y.cols < w.rows:
        raise ShapeError(f"{label}: output [T, {y.cols}] and weight [R={w.rows}, K={w.k}] do not fit (fewer than R columns)")
    if act not in ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}")


def _choose(graph: Graph, rows: int, kernel: str | None, k: int = 0) -> list[tuple[str, Grid]]:
    """The kernels to record for a matrix part of ``rows`` x ``k`` and the grid of each: the grid
    is empty on the steps where :func:`_rule` picks another kernel. ``kernel`` forces one."""
    grids: dict[str, Grid] = {
        "gemv": lambda n: (ceil_div(rows, ROWS), ceil_div(n, TOK), 1),
        "subgroup": lambda n: (ceil_div(rows, 8), ceil_div(n, TOK), 1),
        "decode": decode_grid(graph, rows, rows <= NARROW_ROWS),
        "decode_split": lambda n: (*decode_grid(graph, rows)(n)[:2], decode_split_parts(k)),
        "decode_parts": lambda n: (ceil_div(rows, max(1, decode_parts_rows(graph, k))), n, 1),
        "rowwise": lambda n: (ceil_div(rows, 64), ceil_div(n, RTOK), 1),
        "rows4": lambda n: (ceil_div(rows, 4 * 64), n, 1),
        "rows32": lambda n: (ceil_div(rows, 32 * 64), n, 1),
        "tile8": lambda n: (ceil_div(rows, 8 * 64), ceil_div(n, 4), 1),
        "tile16": lambda n: (ceil_div(rows, 16 * 64), ceil_div(n, 16), 1),
        "tiled": lambda n: (ceil_div(rows, TILE), ceil_div(n, TILE), 1),
        "big": lambda n: (ceil_div(rows, BIG), ceil_div(n, BIG), 1),
        "split": lambda n: (ceil_div(rows, TILE), ceil_div(n, TILE), split_parts(rows, k)),
        "tall": lambda n: (ceil_div(rows, BIG), ceil_div(n, TILE), tall_parts(rows, k)),
        "big_split": lambda n: (ceil_div(rows, BIG), ceil_div(n, BIG), big_split_parts(rows, k, n)),
    }
    if kernel is not None:
        if kernel not in grids:
            raise ValueError(f"unknown matmul kernel {kernel!r}; choose from {KERNELS}")
        if kernel == "split" and split_parts(rows, k) < 2:
            raise ValueError(f"the split matmul needs fewer than {TILED_MIN_TILES // 2 * TILE} rows, got {rows}")
        if kernel in ("subgroup", "decode", "decode_split", "decode_parts") and not graph.device.info.subgroup:
            raise ValueError(f"the {kernel} matmul needs an adapter with the 'subgroup' feature")
        if kernel == "decode_parts" and decode_parts_rows(graph, k) == 0:
            raise ValueError(f"rows of {k} weights have too many parts for one decode_parts workgroup; use decode_split")
        return [(kernel, grids[kernel])]
    names, pick = _rule(graph, rows, k)
    return [(name, _when(pick, name, grids[name])) for name in names]


def _enough(rows: int, n: int, tile: int) -> bool:
    """Whether a GPU step of ``n`` tokens makes enough ``tile`` x ``tile`` tiles to fill the GPU."""
    return n >= GPU_TILED_FROM and ceil_div(rows, tile) * ceil_div(n, tile) >= TILED_MIN_TILES


def _rule(graph: Graph, rows: int, k: int) -> tuple[list[str], Callable[[int], str]]:
    """The kernels a matrix of ``rows`` x ``k`` may need and ``pick(n)``, the one for a step of
    ``n`` tokens (cached: it runs for every recorded kernel of every step).

    Real GPUs with subgroups (thresholds measured on the H100 with benchmarks/bench_kernels.py):
    under DECODE_UNTIL tokens the one-token subgroup kernel ("decode"; a single token with rows
    longer than DECODE_MAX_K takes it with K in parts summed in the workgroup, "decode_parts",
    or by a `reduce` dispatch, "decode_split" (DECODE_PARTS off, or more parts than one workgroup
    holds), or with DECODE_SPLIT off the 64-lane GEMV; matrices of WIDE_ROWS rows or more take
    the 4-token subgroup kernel from WIDE_FROM tokens); then the 4-token subgroup kernel; from
    SPLIT_FROM to TALL_MAX tokens 128-row x 64-token tiles with K in parts ("tall", matrices of
    TALL_MIN_ROWS rows or more) or 64 x 64 tiles with K in parts ("split", narrower ones, and
    beyond TALL_MAX where the rows are too few to fill the GPU with tiles); then, from
    GPU_TILED_FROM tokens, tiles once there are TILED_MIN_TILES of them: 128 x 128 where there
    are enough of those, else 64 x 64. GPUs without subgroups: the GEMV, "tall" and the tiles.
    CPU adapters (barriers and gathered loads cost most there): no workgroup memory at all; a
    single token runs a row per invocation ("rowwise"; four rows, "rows4", on ROWS4_MIN_ROWS rows
    or more, 32, "rows32", on ROWS32_MIN_ROWS or more), steps of 2 to 15 tokens 8 rows x 4 tokens per invocation ("tile8"; on lavapipe
    faster than the 128 x 128 tiles at every step size measured, 4 to 256 tokens), from
    TILE16_FROM tokens 16 rows x 16 tokens ("tile16": each weight and x load serves 16 sums
    instead of 4 and 8; about 2x tile8 on a 128-token chunk).
    """
    info = graph.device.info
    if info.cpu:
        # lavapipe: the row-wise kernel costs the same per token at any step size (each token
        # re-reads the rows), tiles win from a few dozen tokens (2x on a 128-token chunk)
        def pick_cpu(n: int) -> str:
            if n == 1:
                return "rows32" if rows >= ROWS32_MIN_ROWS else "rows4" if rows >= ROWS4_MIN_ROWS else "rowwise"
            return "tile16" if n >= TILE16_FROM else "tile8"

        singles = ["rows32"] if rows >= ROWS32_MIN_ROWS else ["rows4"] if rows >= ROWS4_MIN_ROWS else []
        return singles + ["rowwise", "tile8", "tile16"], pick_cpu

    sub = info.subgroup
    # one token over long rows: K in parts added up in the workgroup where they fit in one
    long_one = ("decode_parts" if DECODE_PARTS and sub and decode_parts_rows(graph, k) else "decode_split") if DECODE_SPLIT else "gemv"
    split = sub and k >= SPLIT_MIN_K and rows >= SPLIT_MIN_ROWS and split_parts(rows, k) >= 2
    tall = k >= SPLIT_MIN_K and rows >= TALL_MIN_ROWS

    @functools.cache
    def pick(n: int) -> str:
        if _enough(rows, n, BIG):
            return "big_split" if _big_split(rows, k, n) else "big"
        if tall and SPLIT_FROM <= n <= TALL_MAX:
            return "tall"  # batched steps: 128 x 64 tiles with K in parts
        if _enough(rows, n, TILE):
            return "big_split" if _big_split(rows, k, n) else "tiled"
        if not sub:
            return "gemv"
        if n < DECODE_UNTIL:
            if n == 1 and k > DECODE_MAX_K:  # long rows, one token: K in parts, or the 64-lane GEMV
                return long_one
            # wide matrices from a few tokens: 4 tokens per weight read beat one
            return "subgroup" if n >= WIDE_FROM and rows >= WIDE_ROWS else "decode"
        return "split" if split and n >= SPLIT_FROM else "subgroup"

    names = ["decode", "gemv", "subgroup", "split", "tiled", "big"] if sub else ["gemv", "tiled", "big"]
    if tall:
        names.append("tall")
    if k >= SPLIT_MIN_K:
        names.append("big_split")
    if sub and k <= DECODE_MAX_K:
        names.remove("gemv")
    if sub and k > DECODE_MAX_K and long_one != "gemv":
        names.append(long_one)
    if not split and "split" in names:
        names.remove("split")
    return names, pick


def _matmul_decode_split(graph: Graph, counter: Counter, params: np.ndarray, part: MatrixPart, x: Act, y: Act,
                         grid: Grid, label: str, forced: bool) -> None:  # fmt: skip
    """Record `decode_split` (one-token rows with K in parts; partials in the scratch buffer) and
    the `reduce` that adds them into y."""
    parts = decode_split_parts(int(params["k"][0]))
    tokens = (x.max_rows or 4096) if forced else 1
    scratch = graph.device.scratch(parts * tokens * part.rows * 4)
    graph.dispatch("matmul_subgroup", counter, params, [part.buffer, x.buffer, scratch], grid, entry="decode_split",
                   label=f"{label}.decode_split", SPLIT=parts, **decode_constants(graph))  # fmt: skip
    _record_reduce(graph, counter, params, part.rows, scratch, y, grid, label, parts)


def _when(pick: Callable[[int], str], name: str, grid: Grid) -> Grid:
    """``grid`` on the steps where ``pick`` chooses ``name``, no grid on the others."""
    return lambda n: grid(n) if pick(n) == name else NO_GRID


QUANT_CODE = {"int8": 0, "nf4": 1, "sf4": 2}
QUANT_KERNELS = ("gemv", "decode", "tiled", "big", "big_split", "tile16")
QUANT_BIG = True  # GPUs: quantized prompt steps take the 128 x 128 tiles (and K parts) as f16 ones do


def _matmul_quant(graph: Graph, counter: Counter, x: Act, w: QMatrix, y: Act, act: str, accumulate: bool,
                  gate: Act | None, label: str, kernel: str | None = None) -> None:  # fmt: skip
    """Quantized weights: the GEMV-style kernels (matmul_quant.wgsl; matmul_quant_subgroup.wgsl
    for one token at a time) for decoding, the tiles (matmul_tiled.wgsl on weights_quant.wgsl,
    kernel "matmul_quant_tiled": 64 x 64, and on GPUs 128 x 128 whole or with K in parts) for
    prompts."""
    quant = QUANT_CODE[w.quant.value]
    for part in w.parts:
        params = _params(w.k, w.kp, part.rows, part.row0, x, y, act, accumulate, gate)
        buffers = [part.codes, x.buffer, y.buffer, part.scales]  # bindings 2 to 5
        for name, grid in _choose_quant(graph, part.rows, kernel, w.k, quant):
            if name == "gemv":
                graph.dispatch("matmul_quant", counter, params, buffers, grid, label=f"{label}.{w.quant.value}",
                               WG=64, ROWS=ROWS, QUANT=quant)  # fmt: skip
            elif name == "decode":
                entry, consts, _ = quant_decode(graph, quant, part.rows)
                graph.dispatch("matmul_quant_subgroup", counter, params, {**dict(enumerate(buffers, start=2)), XV: x.buffer},
                               grid, entry=entry, label=f"{label}.{w.quant.value}.decode", QUANT=quant, VEC_X=float(VEC_X),
                               **consts)  # fmt: skip
            elif name == "tile16":
                graph.dispatch("matmul_quant", counter, params, buffers, grid, entry="tile16", label=f"{label}.{w.quant.value}.tile16",
                               WG=64, ROWS=ROWS, QUANT=quant)  # fmt: skip
            elif name == "big_split":
                _matmul_big_split(graph, counter, params, part.rows, x, y, grid, f"{label}.{w.quant.value}",
                                  kernel is not None, "matmul_quant_tiled", {2: part.codes, 5: part.scales},
                                  QUANT=quant)  # fmt: skip
            else:
                graph.dispatch("matmul_quant_tiled", counter, params, buffers, grid, entry="main" if name == "tiled" else name,
                               label=f"{label}.{w.quant.value}.{name}", QUANT=quant)  # fmt: skip


def _choose_quant(graph: Graph, rows: int, kernel: str | None, k: int = 0, quant: int = 0) -> list[tuple[str, Grid]]:
    """As :func:`_choose`, for quantized weights, following the f16 rule: the one-token subgroup
    kernel where f16 weights take it, on GPUs the 128 x 128 tiles (whole or with K in parts)
    where f16 weights take them (QUANT_BIG), 64 x 64 tiles where f16 weights take other tiles
    (128 x 64 tiles count when 64 x 64 ones would fill the GPU too), the GEMV-style kernel on the
    other steps. ``kernel`` (one of QUANT_KERNELS) forces one for every step."""
    if kernel is not None:
        if kernel not in QUANT_KERNELS:
            raise ValueError(f"unknown matmul kernel {kernel!r} for quantized weights; "
                             f"choose from {QUANT_KERNELS}")  # fmt: skip
        return [(name, quant_decode(graph, quant, rows)[2] if name == "decode" else grid)
                for name, grid in _choose(graph, rows, kernel, k)]  # fmt: skip
    names, f16 = _rule(graph, rows, k)
    info = graph.device.info
    cpu_decode = info.cpu and info.subgroup and QUANT_DECODE_CPU  # (the CPU rule has no subgroup kernel for f16)
    if cpu_decode:
        names = ["decode", *names]

    cpu_tiles = info.cpu and QUANT_TILE16_CPU

    @functools.cache
    def pick(n: int) -> str:
        if cpu_decode and n == 1:
            return "decode"
        f = f16(n)
        if cpu_tiles and n >= 2:
            return "tile16"
        if f in ("big", "big_split") and QUANT_BIG:
            return f
        if f in ("tiled", "big", "big_split") or (f == "tall" and _enough(rows, n, TILE)) or (f in ("tile8", "tile16") and n >= TILED_FROM):
            return "tiled"  # (CPU adapters: from TILED_FROM tokens)
        long_rows = f in ("gemv", "decode_split", "decode_parts") and n == 1 and "decode" in names and k <= QUANT_DECODE_MAX_K
        return "decode" if f == "decode" or long_rows else "gemv"

    if cpu_tiles:  # one token on the subgroup kernel (or the GEMV), more on the register tiles
        kernels = ["decode" if cpu_decode else "gemv", "tile16"]
    else:
        kernels = ["decode", "gemv", "tiled"] if "decode" in names else ["gemv", "tiled"]
        kernels += [name for name in ("big", "big_split") if name in names and not info.cpu]
    grids = {name: quant_decode(graph, quant, rows)[2] if name == "decode" else _choose(graph, rows, name, k)[0][1]
             for name in kernels}  # fmt: skip
    return [(name, _when(pick, name, grids[name])) for name in kernels]


SEGMENT = np.dtype(
    [(n, "<u4") for n in ("row0", "rows", "k", "kv", "w_off", "x_off", "x_stride", "y_sel", "y_off", "y_stride",
                          "act", "accumulate", "s_off", "half")]
)
GROUP_PARAMS = np.dtype([(n, "<u4") for n in ("segments", "rows", "_pad0", "_pad1")])


@dataclass(frozen=True)
class Product:
    """One ``y (+)= act(W x)`` of a :func:`matmul_group`."""

    x: Act
    w: Matrix | QMatrix
    y: Act
    act: str = "none"
    accumulate: bool = False
    label: str = "matmul"


def matmul_group(
    graph: Graph, counter: Counter, products: list[Product], *, kernel: str | None = None, label: str = "group"
) -> None:
    """Record several independent products that can run at once, as one dispatch for decoding.

    Products whose f16 weights share one buffer (``upload_matrices``), read the same input
    buffer and write at most two output buffers are computed together by matmul_group.wgsl
    for steps below the subgroup sizes (CPU adapters: below the tiled sizes); larger steps and
    the other products run through :func:`matmul` as usual. Quantized products of one kind
    whose codes and scales share buffers (``upload_qmatrices``) are grouped the same way for
    one-token steps on GPUs with subgroups (matmul_quant_group.wgsl), with the f16 products
    that would otherwise run alone, and an f16 group whose one-token entry covers the same steps
    (:func:`_join_half`; its larger steps stay its own). On GPUs, prompt steps
    where every large f16 product of the group (TALL_MIN_ROWS rows or more) would take tiles run
    them as one dispatch of 128 x 128 tiles (matmul_group_tiled.wgsl) where that costs fewer
    waves (:func:`_tile_group_pays`). The result is the same as calling :func:`matmul` for each
    product (the same sums in the same order), except where a product alone would cut K in
    parts (`big_split`): there the group's whole-K sums agree to f32 rounding. ``kernel``
    ("gemv", "rowwise", "decode" or "big") forces one group kernel for every step (tests).
    """
    if kernel not in (None, "gemv", "rowwise", "decode", "big"):
        raise ValueError(f"unknown group kernel {kernel!r}; choose 'gemv', 'rowwise', 'decode' or 'big'")
    info = graph.device.info
    if kernel == "decode" and not info.subgroup:
        raise ValueError("the decode group kernel needs an adapter with the 'subgroup' feature")
    grouped, rest = _groupable(products, quantized=False)
    # quantized products group only for the one-token kernel (GPUs with subgroups, or forced)
    one_token = kernel == "decode" or (kernel is None and info.subgroup and not info.cpu)
    qgrouped, rest = _groupable(rest, quantized=True) if one_token else ([], rest)
    solo = qgrouped  # the products the quantized group's larger steps run one by one
    merged = False
    if qgrouped and kernel != "big" and JOIN_F16:
        qgrouped, rest = _join_half(qgrouped, rest)
        solo = qgrouped
        # an f16 group covering the same steps joins too (RWKV-7's LoRA first halves next to its
        # quantized r/k/v): its one-token entry is then left out, its other steps stay its own
        if grouped and _group_ranges(graph, grouped, kernel) == _group_ranges(graph, qgrouped, kernel):
            both, left = _join_half(qgrouped, grouped)
            if not left and _group_ranges(graph, both, kernel) == _group_ranges(graph, qgrouped, kernel):
                qgrouped, merged = both, True
    for pr in rest:
        matmul(graph, counter, pr.x, pr.w, pr.y, act=pr.act, accumulate=pr.accumulate, label=pr.label)
    if kernel == "big":
        if grouped:
            _record_tiled_group(graph, counter, grouped, lambda: True, label)
        for pr in qgrouped:
            matmul(graph, counter, pr.x, pr.w, pr.y, act=pr.act, accumulate=pr.accumulate, label=pr.label)
        return
    if grouped:
        _record_group(graph, counter, grouped, kernel, label, one_token=not merged)
    if qgrouped:
        _record_group(graph, counter, qgrouped, kernel, label, solo=solo)


def _group_ranges(graph: Graph, grouped: list[Product], kernel: str | None) -> tuple[int, int]:
    """(first, limit) of a group: steps under `first` tokens run the one-token subgroup entry,
    steps in [first, limit) the 4-token (or CPU: row-wise) entry, larger steps the products one
    by one, so that each step uses the kernel matmul would pick for every product (see _rule).
    Quantized groups have only the one-token entry."""
    info = graph.device.info
    qw = next((pr.w for pr in grouped if isinstance(pr.w, QMatrix)), None)
    if kernel is not None:
        first = limit = 1 << 30
        if kernel != "decode":
            first = 0
    elif info.cpu:
        first, limit = 0, 2  # one token: the row-wise entry; more: the products through tile8 / tile16
    elif info.subgroup:
        # matrices of WIDE_ROWS rows take the 4-token subgroup kernel from WIDE_FROM tokens; rows
        # longer than DECODE_MAX_K take the 64-lane GEMV for one token: then no group at all
        wide = any(pr.w.rows >= WIDE_ROWS for pr in grouped)
        short = all(pr.w.k <= (DECODE_MAX_K if qw is None else max(DECODE_MAX_K, QUANT_DECODE_MAX_K)) for pr in grouped)
        first = limit = (WIDE_FROM if wide else DECODE_UNTIL) if short else 0
    else:
        first, limit = 0, SUBGROUP_FROM
    if qw is not None:
        limit = first  # quantized weights: the one-token entry, then the products one by one
    return first, limit


def _record_group(graph: Graph, counter: Counter, grouped: list[Product], kernel: str | None, label: str, *,
                  one_token: bool = True, solo: list[Product] | None = None) -> None:  # fmt: skip
    """One group dispatch per step-size range (see :func:`matmul_group`, :func:`_group_ranges`);
    ``grouped`` are all f16, or quantized of one kind with f16 `half` segments (then only the
    one-token entry exists). ``one_token=False`` leaves that entry out (the products joined a
    quantized group); ``solo``: the products whose larger steps this call records one by one
    (default all; an f16 group that joined records its own)."""
    info = graph.device.info
    qw = next((pr.w for pr in grouped if isinstance(pr.w, QMatrix)), None)
    first, limit = _group_ranges(graph, grouped, kernel)
    own = {id(pr) for pr in (grouped if solo is None else solo)}
    # GPU prompt steps: the large f16 products as one dispatch of 128 x 128 tiles, on the steps
    # where matmul would give each of them tiles and the wave count says the group pays
    large = qw is None and kernel is None and not info.cpu
    tiled = [pr for pr in grouped if pr.w.rows >= TALL_MIN_ROWS and pr.w.k >= SPLIT_MIN_K] if large else []
    picks = [_rule(graph, pr.w.rows, pr.w.k)[1] for pr in tiled]

    @functools.cache
    def tiled_step(n: int) -> bool:
        return len(tiled) >= 2 and all(pick(n) in ("tiled", "big", "big_split") for pick in picks) and _tile_group_pays(
            [(pr.w.rows, pr.w.k) for pr in tiled], [pick(n) for pick in picks], n)

    if len(tiled) >= 2:
        _record_tiled_group(graph, counter, tiled, lambda: tiled_step(counter.value), label)
    for pr in grouped:
        _check(pr.x, pr.w, pr.y, pr.act, pr.label)
        if kernel is None and id(pr) in own:
            in_tiles = any(pr is t for t in tiled)
            with graph.only_when(lambda in_tiles=in_tiles: counter.value >= limit and not (in_tiles and tiled_step(counter.value))):
                matmul(graph, counter, pr.x, pr.w, pr.y, act=pr.act, accumulate=pr.accumulate, label=pr.label)
    segs, outputs = _segment_table(grouped, ROWS)
    rows = int(segs[-1]["row0"] + segs[-1]["rows"])
    params = pack_params(GROUP_PARAMS, segments=len(grouped), rows=rows, _pad0=0, _pad1=0)
    table = graph.device.upload(segs, f"{label}.segments")
    y1 = outputs[1] if len(outputs) > 1 else graph.device.storage(4, f"{label}.unused")
    if qw is not None:
        part0 = qw.parts[0]
        assert isinstance(part0, QMatrixPart) and isinstance(part0.codes, BufferRange)
        assert isinstance(part0.scales, BufferRange)
        halves = [_half_buffer(pr.w) for pr in grouped if isinstance(pr.w, Matrix)]
        buffers = {2: part0.codes.buffer, 3: grouped[0].x.buffer, 4: outputs[0], 5: y1, 6: table, 7: part0.scales.buffer,
                   XV_GROUP: grouped[0].x.buffer, HALF_GROUP: halves[0] if halves else part0.codes.buffer}  # fmt: skip
        if first:
            with graph.only_when(lambda: counter.value < first):
                entry, consts, grid = quant_decode(graph, QUANT_CODE[qw.quant.value], rows)
                graph.dispatch("matmul_quant_group", counter, params, buffers, grid, entry=entry, label=f"{label}.{qw.quant.value}",
                               QUANT=QUANT_CODE[qw.quant.value], VEC_X=float(VEC_X), HALF=float(bool(halves)), **consts)  # fmt: skip
        return
    weights = grouped[0].w.parts[0].buffer.buffer  # type: ignore[union-attr]
    buffers = [weights, grouped[0].x.buffer, outputs[0], y1, table]
    if first and one_token:
        with graph.only_when(lambda: counter.value < first):
            graph.dispatch("matmul_group_subgroup", counter, params, buffers, decode_grid(graph, rows),
                           label=label, **decode_constants(graph))  # fmt: skip
    if first >= limit:
        return
    with graph.only_when(lambda: first <= counter.value < limit):
        if kernel == "rowwise" or (kernel is None and info.cpu):
            graph.dispatch("matmul_group", counter, params, buffers, lambda n: (ceil_div(rows, 64), ceil_div(n, RTOK), 1),
                           entry="rowwise", label=label, WG=64, RTOK=RTOK)  # fmt: skip
        else:
            graph.dispatch("matmul_group", counter, params, buffers, lambda n: (ceil_div(rows, ROWS), ceil_div(n, TOK), 1),
                           label=label, WG=64, ROWS=ROWS)  # fmt: skip


def _join_half(qgrouped: list[Product], rest: list[Product]) -> tuple[list[Product], list[Product]]:
    """Let f16 products join a quantized group's one-token dispatch (as `half` segments of
    matmul_quant_group.wgsl): those of ``rest`` that fit, in front of the group's. RWKV-6's decay
    LoRA first half is ready with the quantized r/k/v/g products, RWKV-7's LoRA first halves (an
    f16 group of their own) with its r/k/v. They need one f16 weight buffer (the one halves
    already in the group use), the group's input buffer and no third output buffer; returns
    the group and the products left."""
    outputs = {pr.y.buffer for pr in qgrouped}
    weights = next((_half_buffer(pr.w) for pr in qgrouped if isinstance(pr.w, Matrix)), None)
    joined: list[Product] = []
    left: list[Product] = []
    for pr in rest:
        buffer = _half_buffer(pr.w)
        same = buffer is not None and (weights is None or buffer is weights)
        fits = same and _shares_io(pr, qgrouped[0].x.buffer, outputs)
        if fits:
            weights = buffer
            outputs.add(pr.y.buffer)
            joined.append(pr)
        else:
            left.append(pr)
    return joined + qgrouped, left  # f16 rows first: their workgroups start first (a slower lane sum)


def _shares_io(pr: Product, x_buffer: Any, outputs: set) -> bool:
    """Whether ``pr`` can be a segment of a group reading ``x_buffer`` and writing ``outputs``
    so far: the same input buffer, its output another buffer, at most two outputs in all."""
    y = pr.y.buffer
    return pr.x.buffer is x_buffer and y is not pr.x.buffer and (y in outputs or len(outputs) < 2)


def _half_buffer(w: Matrix | QMatrix) -> Any:
    """The buffer holding an f16 matrix stored in one part (alone or among others), else None."""
    if not isinstance(w, Matrix) or len(w.parts) != 1 or not isinstance(w.parts[0], MatrixPart):
        return None
    buffer = w.parts[0].buffer
    return buffer.buffer if isinstance(buffer, BufferRange) else buffer


def _tile_group_pays(shapes: list[tuple[int, int]], picks: list[str], n: int) -> bool:
    """Whether products of ``shapes`` (rows, K; picking ``picks`` alone) at ``n`` tokens cost
    fewer waves as one dispatch of 128 x 128 tiles than one by one (TILE_SLOTS, SOLO_WAVE,
    TILED_WAVE; a K cut in P parts costs 1 / P of a wave plus SPLIT_REDUCE_WAVE for its sum):
    four 2048-row products at 1024 tokens (512 tiles: 2 waves against 4 x 0.6) do, three do
    not; the FFN key (7168 rows) with the receptance does not."""

    def waves(tiles: int) -> float:
        return SOLO_WAVE if tiles <= TILE_SLOTS // 2 else float(ceil_div(tiles, TILE_SLOTS))

    alone = 0.0
    for (r, k), pick in zip(shapes, picks):
        if pick == "big":
            alone += waves(ceil_div(r, BIG) * ceil_div(n, BIG))
        elif pick == "big_split":
            alone += 1 / big_split_parts(r, k, n) + SPLIT_REDUCE_WAVE
        else:
            alone += TILED_WAVE * ceil_div(r, TILE) * ceil_div(n, TILE) / 256
    return waves(sum(ceil_div(r, BIG) for r, _ in shapes) * ceil_div(n, BIG)) < alone


def _segment_table(grouped: list[Product], align: int) -> tuple[np.ndarray, list]:
    """The segment table of a group (each segment starting at a multiple of ``align`` group rows)
    and its output buffers (y_sel indexes them)."""
    outputs: list = []
    segs = np.zeros(len(grouped), SEGMENT)
    row = 0
    quantized = any(isinstance(pr.w, QMatrix) for pr in grouped)  # its f16 segments are `half`
    for i, pr in enumerate(grouped):
        if pr.y.buffer not in outputs:
            outputs.append(pr.y.buffer)
        part = pr.w.parts[0]
        w_range = part.codes if isinstance(part, QMatrixPart) else part.buffer
        s_off = part.scales.offset // 4 if isinstance(part, QMatrixPart) else 0
        half = quantized and isinstance(part, MatrixPart)
        assert isinstance(w_range, BufferRange) or half  # _groupable checked (a joined f16 matrix may fill its buffer)
        w_off = w_range.offset // 16 if isinstance(w_range, BufferRange) else 0
        segs[i] = (row, pr.w.rows, pr.w.k, pr.w.kp // 8, w_off, pr.x.offset, pr.x.stride,
                   outputs.index(pr.y.buffer), pr.y.offset, pr.y.stride, ACTIVATIONS[pr.act], int(pr.accumulate),
                   s_off, int(half))  # fmt: skip
        row += ceil_div(pr.w.rows, align) * align
    return segs, outputs


def _record_tiled_group(graph: Graph, counter: Counter, grouped: list[Product], when: Callable[[], bool],
                        label: str) -> None:  # fmt: skip
    """f16 products of one weight buffer and input buffer (at most two outputs) as one dispatch of
    128 x 128 tiles (matmul_group_tiled.wgsl) on the steps where ``when()`` holds."""
    for pr in grouped:
        _check(pr.x, pr.w, pr.y, pr.act, pr.label)
    segs, outputs = _segment_table(grouped, BIG)
    tile_rows = int(segs[-1]["row0"]) // BIG + ceil_div(int(segs[-1]["rows"]), BIG)
    params = pack_params(GROUP_PARAMS, segments=len(grouped), rows=tile_rows * BIG, _pad0=0, _pad1=0)
    table = graph.device.upload(segs, f"{label}.tile_segments")
    y1 = outputs[1] if len(outputs) > 1 else graph.device.storage(4, f"{label}.unused")
    weights = grouped[0].w.parts[0].buffer.buffer  # type: ignore[union-attr]
    with graph.only_when(when):
        graph.dispatch("matmul_group_tiled", counter, params, [weights, grouped[0].x.buffer, outputs[0], y1, table],
                       lambda n: (tile_rows, ceil_div(n, BIG), 1), label=f"{label}.tiles")  # fmt: skip


def _groupable(products: list[Product], quantized: bool) -> tuple[list[Product], list[Product]]:
    """Split ``products`` into those one group dispatch can compute and the others: f16 weights
    in one buffer, or (``quantized``) weights of one quantization with their codes in one buffer
    and their scales in another (``upload_qmatrices``)."""
    grouped: list[Product] = []
    rest: list[Product] = []
    outputs: set = set()

    def ranges(w: Matrix | QMatrix) -> tuple[Any, ...] | None:
        """The buffers a group shares, or None when ``w`` cannot join one."""
        if len(w.parts) != 1:
            return None
        part = w.parts[0]
        if quantized and isinstance(part, QMatrixPart) and isinstance(part.codes, BufferRange):
            return (w.quant, part.codes.buffer, part.scales.buffer)
        if not quantized and isinstance(part, MatrixPart) and isinstance(part.buffer, BufferRange):
            return (part.buffer.buffer,)
        return None

    for pr in products:
        key = ranges(pr.w)
        fits = (
            key is not None
            and (not grouped or key == ranges(grouped[0].w))
            and _shares_io(pr, grouped[0].x.buffer if grouped else pr.x.buffer, outputs)
        )
        if fits:
            grouped.append(pr)
            outputs.add(pr.y.buffer)
        else:
            rest.append(pr)
    if len(grouped) < 2:
        return [], products
    return grouped, rest
