"""Elementwise in-place affine map of a [T, C] view (the hooks' steering vectors and scaling)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..gpu import Act, Counter, Graph, ceil_div, pack_params

AFFINE = np.dtype([(n, "<u4") for n in ("c", "x_off", "x_stride", "_pad")])
WG = 64


def affine(graph: Graph, counter: Counter, x: Act, vec: Any, *, label: str = "affine") -> None:
    """Record ``x[t] = x[t] * mul + add``; ``vec`` holds mul (C values) then add (C values)."""
    params = pack_params(AFFINE, c=x.cols, x_off=x.offset, x_stride=x.stride, _pad=0)
    graph.dispatch(
        "blend", counter, params, {4: x.buffer, 5: vec}, lambda n: (ceil_div(x.cols, WG), n, 1),
        entry="affine", label=label, WG=WG,
    )  # fmt: skip
