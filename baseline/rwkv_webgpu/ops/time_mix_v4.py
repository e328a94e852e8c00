"""RWKV-4 time mix: the (aa, bb, pp) WKV recurrence, output already multiplied by sigmoid(r)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..gpu import Counter, Graph, ceil_div, pack_params

PARAMS = np.dtype([(n, "<u4") for n in ("c", "plane", "slots", "w_off", "u_off", "_pad0", "_pad1", "_pad2")])
WG = 64


def time_mix_v4(
    graph: Graph, counter: Counter, cursors: Any, tm: Any, vec: Any, state: Any, y: Any,
    *, c: int, plane: int, slots: int, w_off: int, u_off: int, label: str = "v4.wkv",
) -> None:  # fmt: skip
    """Record ``y = r * wkv(k, v)`` over tm planes (r, k, v) [3, plane]; state [B, 3, C]. Grid (C/WG, B)."""
    params = pack_params(PARAMS, c=c, plane=plane, slots=slots, w_off=w_off, u_off=u_off, _pad0=0, _pad1=0, _pad2=0)
    graph.dispatch(
        "time_mix_v4", counter, params, [cursors, tm, vec, state, y],
        lambda n: (ceil_div(c, WG), slots if n else 0, 1), label=label, WG=WG,
    )  # fmt: skip
