"""Layer norm over C, or group norm over heads of N, with weight and bias from a vector buffer."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ShapeError
from ..gpu import Act, Counter, Graph, pack_params

PARAMS = np.dtype(
    [(n, "<u4") for n in ("size", "x_off", "x_stride", "y_off", "y_stride", "w_off", "b_off")] + [("eps", "<f4")]
)


def norm_workgroup(size: int) -> int:
    """Invocations that share one row's sums: one workgroup per (group, token), a wide one so a
    single long row is not latency-bound. Kernels that repeat these sums use the same size."""
    return 256 if size >= 1024 else 64


def layer_norm(
    graph: Graph,
    counter: Counter,
    x: Act,
    y: Act,
    vec: Any,
    w_off: int,
    b_off: int,
    *,
    eps: float = 1e-5,
    group_size: int | None = None,
    label: str = "layer_norm",
) -> None:
    """Record ``y[t] = norm(x[t]) * w + b`` per group of ``group_size`` (default: the whole row).

    Shapes: x, y [T, C]; w and b are C floats at ``w_off``/``b_off`` of ``vec``.
    """
    size = group_size or x.cols
    groups = x.cols // size
    if size <= 0 or groups * size != x.cols:
        raise ShapeError(f"{label}: {x.cols} columns do not split into groups of {size}")
    if y.cols != x.cols:
        raise ShapeError(f"{label}: output has {y.cols} columns, input {x.cols}")
    wg = norm_workgroup(size)
    params = pack_params(
        PARAMS,
        size=size,
        x_off=x.offset,
        x_stride=x.stride,
        y_off=y.offset,
        y_stride=y.stride,
        w_off=w_off,
        b_off=b_off,
        eps=eps,
    )
    graph.dispatch(
        "layer_norm", counter, params, [x.buffer, y.buffer, vec], lambda n: (groups, n, 1), label=label, WG=wg
    )
