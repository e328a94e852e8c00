"""Token shift: mix each token with the previous one of its slot, and save each slot's last row."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ShapeError
from ..gpu import Act, Counter, Graph, ceil_div, pack_params
from .norm import norm_workgroup

PARAMS = np.dtype(
    [(n, "<u4") for n in ("c", "slots", "mixes", "mu_off", "x_off", "out_plane", "store", "with_delta", "ln_w_off", "ln_b_off")]
    + [("eps", "<f4"), ("_pad", "<u4")]
)
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
    saved row (the invocation of the slot's first token reads the old row and writes the new one).
    """
    params = _params(x, slots, mixes, mu_off, plane, store, delta)
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
        lambda n: (ceil_div(x.cols, WG), n, 1),
        entry="mix",
        label=label,
        WG=WG,
    )


def _params(x: Act, slots: int, mixes: int, mu_off: int, plane: int, store: bool, delta: Any,
            ln_w_off: int = 0, ln_b_off: int = 0, eps: float = 0.0) -> np.ndarray:  # fmt: skip
    return pack_params(
        PARAMS, c=x.cols, slots=slots, mixes=mixes, mu_off=mu_off, x_off=x.offset, out_plane=plane, store=int(store),
        with_delta=int(delta is not None), ln_w_off=ln_w_off, ln_b_off=ln_b_off, eps=eps, _pad=0,
    )  # fmt: skip


def norm_mix(
    graph: Graph,
    counter: Counter,
    cursors: Any,
    x: Act,
    xn: Act,
    shift: Any,
    vec: Any,
    ln_w_off: int,
    ln_b_off: int,
    mu_off: int,
    out: Act,
    *,
    mixes: int,
    slots: int,
    plane: int,
    eps: float,
    delta: Any = None,
    store: bool = False,
    label: str = "norm_mix",
) -> None:
    """``xn = layer_norm(x)`` then :func:`token_mix` of ``xn``, in one dispatch, for steps where
    every slot has at most one token (the caller records it under ``Graph.only_when``).

    Shapes: x, xn [T, C] packed; the rest as :func:`token_mix`. The results equal layer_norm
    followed by token_mix (the same sums in the same order; a GPU compiler may fuse the
    multiply-adds differently, so equal within f32 rounding).
    """
    c = x.cols
    if x.stride != c or xn.stride != c or xn.offset or out.offset or out.stride != c:
        raise ShapeError(f"{label}: rows must be packed ([T, C] with stride C={c}) and outputs start at 0")
    params = _params(x, slots, mixes, mu_off, plane, store, delta, ln_w_off, ln_b_off, eps)
    buffers = {2: cursors, 3: x.buffer, 4: shift, 5: vec, 6: out.buffer, 7: vec if delta is None else delta, 8: xn.buffer}
    wg = norm_workgroup(c)  # as layer_norm, so the sums match
    graph.dispatch("token_shift", counter, params, buffers, lambda n: (ceil_div(c, wg), n, 1), entry="norm_mix", label=label,
                   WG=wg)  # fmt: skip
