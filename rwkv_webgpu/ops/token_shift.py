"""Token shift: mix each token with the previous one of its slot, and save each slot's last row."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ShapeError
from ..gpu import Act, Counter, Graph, ceil_div, pack_params

PARAMS = np.dtype([(n, "<u4") for n in ("c", "slots", "mixes", "mu_off", "x_off", "out_plane", "store", "with_delta")])
WG = 64


def token_mix(
    graph: Graph,
    counter: Counter,
    cursors: Any,
    x: Act,
    shift: Any,
    vec: Any,
    mu_off: int,
    out: Act,
    *,
    mixes: int,
    slots: int,
    plane: int,
    delta: Any = None,
    store: bool = False,
    label: str = "token_mix",
) -> None:
    """Record ``out[m, t] = x[t] + (prev[t] - x[t]) * (mu[m] (+ delta[m, t]))`` for m < mixes.

    Shapes: x [T, C]; shift [B, C]; mu [mixes, C] at ``mu_off`` of vec; out and the optional
    delta buffer [mixes, plane/C, C]. With ``store`` each slot's last row of x then becomes its
    saved row (read before written: one invocation walks one channel of one slot).
    """
    params = pack_params(
        PARAMS, c=x.cols, slots=slots, mixes=mixes, mu_off=mu_off, x_off=x.offset, out_plane=plane, store=int(store), with_delta=int(delta is not None)
    )
    if out.offset:
        raise ValueError("token_mix writes from the start of its output buffer")
    if x.stride != x.cols or out.stride != x.cols:
        raise ShapeError(f"{label}: rows must be packed ([T, C] with stride C={x.cols})")
    # without delta the kernel never reads binding 7; vec stands in (both are read-only)
    buffers = [cursors, x.buffer, shift, vec, out.buffer, vec if delta is None else delta]
    graph.dispatch(
        "token_shift",
        counter,
        params,
        buffers,
        lambda n: (ceil_div(x.cols, WG), slots if n else 0, 1),
        entry="mix",
        label=label,
        WG=WG,
    )

