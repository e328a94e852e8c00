"""Elementwise gated residual add: y += a * b."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ShapeError
from ..gpu import Act, Counter, Graph, ceil_div, pack_params

PARAMS = np.dtype([(n, "<u4") for n in ("c", "a_off", "b_off", "y_off")])
WG = 64


def add_mul(graph: Graph, counter: Counter, a: Act, b: Act, y: Act, *, label: str = "add_mul") -> None:
    """Record ``y[t] += a[t] * b[t]``; all three are packed ``[T, C]`` views."""
    c = y.cols
    for v in (a, b, y):
        if v.cols != c or v.stride != c:
            raise ShapeError(f"{label}: every operand must be a packed [T, {c}] view")
    params = pack_params(PARAMS, c=c, a_off=a.offset, b_off=b.offset, y_off=y.offset)
    graph.dispatch(
        "blend", counter, params, [a.buffer, b.buffer, y.buffer], lambda n: (ceil_div(c, WG), n, 1),
        entry="add_mul", label=label, WG=WG,
    )  # fmt: skip


AFFINE = np.dtype([(n, "<u4") for n in ("c", "x_off", "x_stride", "_pad")])


def affine(graph: Graph, counter: Counter, x: Act, vec: Any, *, label: str = "affine") -> None:
    """Record ``x[t] = x[t] * mul + add``; ``vec`` holds mul (C values) then add (C values)."""
    params = pack_params(AFFINE, c=x.cols, x_off=x.offset, x_stride=x.stride, _pad=0)
    graph.dispatch(
        "blend", counter, params, {4: x.buffer, 5: vec}, lambda n: (ceil_div(x.cols, WG), n, 1),
        entry="affine", label=label, WG=WG,
    )  # fmt: skip
