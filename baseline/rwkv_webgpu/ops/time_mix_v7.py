"""RWKV-7 time mix: `prepare` shapes the projections, `wkv` runs the state recurrence per head
(rows split over workgroups), `norm` applies the group norm, bonus and gate."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ShapeError
from ..gpu import Counter, Graph, ceil_div, pack_params

_FIELDS = (
    "c", "h", "n", "plane", "slots", "layer0", "w0_off", "a0_off", "v0_off",
    "k_k_off", "k_a_off", "r_k_off", "lnw_off", "lnb_off",
)  # fmt: skip
PARAMS = np.dtype([(n, "<u4") for n in _FIELDS] + [("eps", "<f4"), ("_pad", "<u4")])
MAX_HEAD = 64
WG = 64
ROWS = 16  # state rows per wkv workgroup (the shader's ROWS)


def v7_params(*, c: int, h: int, plane: int, slots: int, layer0: bool, offsets: dict[str, int], eps: float) -> np.ndarray:
    """The shared Params of both entry points; ``offsets`` gives w0, a0, v0, k_k, k_a, r_k, lnw, lnb."""
    n = c // h if h > 0 else 0
    if h <= 0 or n * h != c:
        raise ShapeError(f"time_mix_v7: C={c} is not a whole number of heads (H={h})")
    if n > MAX_HEAD:
        raise ValueError(f"head size {n} is larger than the kernel's {MAX_HEAD}")
    return pack_params(
        PARAMS,
        c=c,
        h=h,
        n=n,
        plane=plane,
        slots=slots,
        layer0=int(layer0),
        eps=eps,
        _pad=0,
        **{f"{k}_off": offsets[k] for k in ("w0", "a0", "v0", "k_k", "k_a", "r_k", "lnw", "lnb")},
    )


def time_mix_v7_prepare(
    graph: Graph, counter: Counter, params: np.ndarray, tm: Any, vgate: Any, v_first: Any, vec: Any, *, heads: int
) -> None:
    """Record the in-place transform of tm planes (w, k, v, kk, a) for T tokens. Grid (H, T)."""
    graph.dispatch(
        "time_mix_v7",
        counter,
        params,
        {3: tm, 4: vgate, 5: v_first, 6: vec},
        lambda n: (heads, n, 1),
        entry="prepare",
        label="v7.prepare",
        WG=WG,
    )


def time_mix_v7_wkv(
    graph: Graph, counter: Counter, params: np.ndarray, cursors: Any, tm: Any, vec: Any, state: Any, y: Any,
    *, heads: int, slots: int,
) -> None:  # fmt: skip
    """Record the recurrence (raw o into y; grid (H * ceil(N / ROWS), B)), then group norm + bonus +
    gate in place (grid (H, T)); y [T, C]."""
    n = int(params["n"][0])
    graph.dispatch(
        "time_mix_v7",
        counter,
        params,
        {2: cursors, 3: tm, 7: state, 8: y},
        lambda k: (heads * ceil_div(n, ROWS), slots if k else 0, 1),
        entry="wkv",
        label="v7.wkv",
        N_HEAD=n,
    )
    graph.dispatch(
        "time_mix_v7",
        counter,
        params,
        {3: tm, 6: vec, 8: y},
        lambda k: (heads, k, 1),
        entry="norm",
        label="v7.norm",
        WG=WG,
    )
