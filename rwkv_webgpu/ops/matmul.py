"""y = act(x @ W^T), optionally added into y: every linear layer of every version."""

from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from ..gpu import Act, Counter, Graph, Matrix, QMatrix, ceil_div, pack_params
from ..gpu.recorder import Grid

PARAMS = np.dtype(
    [(n, "<u4") for n in ("k", "kv", "rows", "row0", "x_off", "x_stride", "y_off", "y_stride", "act", "accumulate")]
)
ACTIVATIONS = {"none": 0, "tanh": 1, "sigmoid": 2, "relu_sq": 3, "silu": 4}
ROWS = 4  # rows per workgroup (matmul.wgsl)
TOK = 4  # tokens per workgroup (fixed in matmul.wgsl)
TILE = 64  # rows and tokens per workgroup (matmul_tiled.wgsl)
RTOK = 16  # tokens per invocation (matmul.wgsl rowwise; its accumulator array holds 16)
SUBGROUP_FROM = 16  # steps with at least this many tokens use the subgroup kernel (if any)
TILED_FROM = 48  # steps with at least this many tokens use the tiled kernel ...
TILED_MIN_TILES = 128  # ... when that makes at least this many workgroups (H100: 132 SMs)


def matmul(
    graph: Graph,
    counter: Counter,
    x: Act,
    w: Matrix | QMatrix,
    y: Act,
    *,
    act: str = "none",
    accumulate: bool = False,
    kernel: str | None = None,
    label: str = "matmul",
) -> None:
    """Record ``y[t, :R] (+)= act(W @ x[t, :K])`` for the counter's T rows.

    Shapes: x [T, K], W [R, K] (f16, split in row blocks), y [T, >= R]. Both kernels are
    recorded; each step runs the one that suits its token count (the other gets an empty grid):
    a GEMV-style kernel for decoding, a tiled one for prompts. On CPU adapters a barrier-free
    row-per-invocation kernel serves every step. ``kernel`` ("gemv", "tiled", "rowwise") forces
    one kernel for every token count (tests use it to check each on any adapter).
    """
    if x.cols != w.k:
        raise ShapeError(f"{label}: input has {x.cols} columns, weight expects [R={w.rows}, K={w.k}]")
    if y.cols < w.rows:
        raise ShapeError(f"{label}: output has {y.cols} columns, weight gives R={w.rows}")
    if act not in ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}")
    if isinstance(w, QMatrix):
        _matmul_quant(graph, counter, x, w, y, act, accumulate, label)
        return
    for part in w.parts:
        params = pack_params(
            PARAMS,
            k=w.k,
            kv=w.kp // 8,
            rows=part.rows,
            row0=part.row0,
            x_off=x.offset,
            x_stride=x.stride,
            y_off=y.offset,
            y_stride=y.stride,
            act=ACTIVATIONS[act],
            accumulate=int(accumulate),
        )

        for name, grid in _choose(graph, part.rows, kernel):
            entry = "rowwise" if name == "rowwise" else "main"
            shader = {"gemv": "matmul", "rowwise": "matmul"}.get(name, f"matmul_{name}")
            consts = {"WG": 64, "ROWS": ROWS, "RTOK": RTOK} if shader == "matmul" else {}
            suffix = "" if name in ("gemv", "subgroup", "rowwise") else f".{name}"
            graph.dispatch(shader, counter, params, [part.buffer, x.buffer, y.buffer], grid, entry=entry,
                           label=label + suffix, **consts)  # fmt: skip


KERNELS = ("gemv", "subgroup", "rowwise", "tiled")


def _choose(graph: Graph, rows: int, kernel: str | None) -> list[tuple[str, Grid]]:
    """The kernels to record for a matrix part and the grid of each (an empty grid skips it).

    Real GPUs: the GEMV-style kernel below SUBGROUP_FROM tokens, the subgroup-shuffle one (where
    the adapter has subgroups) up to TILED_FROM, the tiled kernel above. CPU adapters: the
    barrier-free row-per-invocation kernel for every step (barriers cost most there).
    """
    grids: dict[str, Grid] = {
        "gemv": lambda n: (ceil_div(rows, ROWS), ceil_div(n, TOK), 1),
        "subgroup": lambda n: (ceil_div(rows, 8), ceil_div(n, TOK), 1),
        "rowwise": lambda n: (ceil_div(rows, 64), ceil_div(n, RTOK), 1),
        "tiled": lambda n: (ceil_div(rows, TILE), ceil_div(n, TILE), 1),
    }
    if kernel is not None:
        if kernel not in grids:
            raise ValueError(f"unknown matmul kernel {kernel!r}; choose from {KERNELS}")
        if kernel == "subgroup" and not graph.device.info.subgroup:
            raise ValueError("the subgroup matmul needs an adapter with the 'subgroup' feature")
        return [(kernel, grids[kernel])]
    info = graph.device.info
    if info.adapter_type.lower() == "cpu":
        return [("rowwise", grids["rowwise"])]
    # Thresholds from the H100 (docs/performance.md): the 64-lane GEMV is fastest for decoding,
    # the 8-lane subgroup one for a few dozen tokens (batched decoding), tiles above that.
    mid = "subgroup" if info.subgroup else "gemv"
    few, some, many = grids["gemv"], grids[mid], grids["tiled"]

    def tiles(n: int) -> bool:
        # the tiled kernel only pays off with enough 64 x 64 tiles to fill the GPU
        return n >= TILED_FROM and ceil_div(rows, TILE) * ceil_div(n, TILE) >= TILED_MIN_TILES

    return [
        ("gemv", lambda n: few(n) if n < SUBGROUP_FROM else (0, 0, 0)),
        (mid, lambda n: some(n) if n >= SUBGROUP_FROM and not tiles(n) else (0, 0, 0)),
        ("tiled", lambda n: many(n) if tiles(n) else (0, 0, 0)),
    ]


QUANT_CODE = {"int8": 0, "nf4": 1, "sf4": 2}


def _matmul_quant(graph: Graph, counter: Counter, x: Act, w: QMatrix, y: Act, act: str, accumulate: bool,
                  label: str) -> None:  # fmt: skip
    """Quantized weights: one GEMV-style kernel (matmul_quant.wgsl) for every step size."""
    for part in w.parts:
        params = pack_params(
            PARAMS, k=w.k, kv=w.kp // 8, rows=part.rows, row0=part.row0, x_off=x.offset, x_stride=x.stride,
            y_off=y.offset, y_stride=y.stride, act=ACTIVATIONS[act], accumulate=int(accumulate),
        )  # fmt: skip
        def grid(n: int, rows: int = part.rows) -> tuple[int, int, int]:
            return (ceil_div(rows, ROWS), ceil_div(n, TOK), 1)

        graph.dispatch(
            "matmul_quant", counter, params, [part.codes, x.buffer, y.buffer, part.scales], grid,
            label=f"{label}.{w.quant.value}", WG=64, ROWS=ROWS, QUANT=QUANT_CODE[w.quant.value],
        )  # fmt: skip
