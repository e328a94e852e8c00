"""y = act(x @ W^T), optionally added into y: every linear layer of every version."""

from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from ..gpu import Act, Counter, Graph, Matrix, ceil_div, pack_params

PARAMS = np.dtype(
    [(n, "<u4") for n in ("k", "kv", "rows", "row0", "x_off", "x_stride", "y_off", "y_stride", "act", "accumulate")]
)
ACTIVATIONS = {"none": 0, "tanh": 1, "sigmoid": 2, "relu_sq": 3, "silu": 4}
ROWS = 4  # rows per workgroup (matmul.wgsl)
TOK = 4  # tokens per workgroup (fixed in matmul.wgsl)
TILE = 64  # rows and tokens per workgroup (matmul_tiled.wgsl)
TILED_FROM = 48  # steps with at least this many tokens use the tiled kernel


def matmul(
    graph: Graph,
    counter: Counter,
    x: Act,
    w: Matrix,
    y: Act,
    *,
    act: str = "none",
    accumulate: bool = False,
    label: str = "matmul",
) -> None:
    """Record ``y[t, :R] (+)= act(W @ x[t, :K])`` for the counter's T rows.

    Shapes: x [T, K], W [R, K] (f16, split in row blocks), y [T, >= R]. Both kernels are
    recorded; each step runs the one that suits its token count (the other gets an empty grid):
    a GEMV-style kernel for decoding, a tiled one for prompts.
    """
    if x.cols != w.k:
        raise ShapeError(f"{label}: input has {x.cols} columns, weight expects [R={w.rows}, K={w.k}]")
    if y.cols < w.rows:
        raise ShapeError(f"{label}: output has {y.cols} columns, weight gives R={w.rows}")
    if act not in ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}")
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

        def gemv(n: int, rows: int = part.rows) -> tuple[int, int, int]:
            return (ceil_div(rows, ROWS), ceil_div(n, TOK), 1) if n < TILED_FROM else (0, 0, 0)

        def tiled(n: int, rows: int = part.rows) -> tuple[int, int, int]:
            return (ceil_div(rows, TILE), ceil_div(n, TILE), 1) if n >= TILED_FROM else (0, 0, 0)

        buffers = [part.buffer, x.buffer, y.buffer]
        graph.dispatch("matmul", counter, params, buffers, gemv, label=label, WG=64, ROWS=ROWS)
        graph.dispatch("matmul_tiled", counter, params, buffers, tiled, label=label + ".tiled")
