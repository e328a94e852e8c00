"""RWKV-5/6 time mix: multi-head WKV with bonus u, then group norm (ln_x) and the optional gate."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import ShapeError
from ..gpu import Counter, Graph, ceil_div, pack_params

_FIELDS = ("c", "h", "n", "plane", "slots", "dynamic_decay", "gated", "decay_off", "u_off", "lnw_off", "lnb_off")
PARAMS = np.dtype([(f, "<u4") for f in _FIELDS] + [("eps", "<f4")])
MAX_HEAD = 64
WG = 64
ROWS = 16  # state rows per wkv workgroup (the shader's ROWS) ...
LANES = 8  # ... and invocations per state row (the shader's LANES)


def time_mix_v5(
    graph: Graph, counter: Counter, cursors: Any, tm: Any, vec: Any, state: Any, y: Any,
    *, c: int, heads: int, plane: int, slots: int, dynamic_decay: bool, gated: bool,
    offsets: dict[str, int], eps: float, label: str = "v5.wkv", decode: Callable[[], bool] | None = None,
) -> None:  # fmt: skip
    """Record the WKV over tm planes (r, w, k, v, g) [5, plane]; state [B, H, N, N]; y [T, C].

    ``offsets`` gives decay, u, lnw, lnb in ``vec``. With ``dynamic_decay`` the w plane holds
    the per-token decay LoRA output added to vec's time_decay (RWKV-6). Two dispatches: the
    recurrence writes the raw o into y (grid (H * ceil(N / ROWS), B)), then the group norm and
    gate rewrite y in place (grid (H, T)). On steps where ``decode()`` holds (every slot has at
    most one token) one dispatch `decode` does both instead (grid (H, B)).
    """
    n = c // heads if heads > 0 else 0
    if heads <= 0 or n * heads != c:
        raise ShapeError(f"{label}: C={c} is not a whole number of heads (H={heads})")
    if n > MAX_HEAD:
        raise ShapeError(f"{label}: head size {n} is larger than the kernel's {MAX_HEAD}")
    params = pack_params(
        PARAMS, c=c, h=heads, n=n, plane=plane, slots=slots, dynamic_decay=int(dynamic_decay), gated=int(gated),
        decay_off=offsets["decay"], u_off=offsets["u"], lnw_off=offsets["lnw"], lnb_off=offsets["lnb"], eps=eps,
    )  # fmt: skip
    info = graph.device.info
    if decode:  # steps where every slot has at most one token: both in one dispatch
        with graph.only_when(decode):
            graph.dispatch(
                "time_mix_v5", counter, params, {2: cursors, 3: tm, 4: vec, 5: state, 6: y},
                lambda k: (heads, slots if k else 0, 1), entry="decode", label=f"{label}.decode", N_HEAD=n,
            )  # fmt: skip
    # CPU adapters with subgroups: the recurrence without workgroup memory or barriers
    lanes = info.cpu and info.subgroup and info.subgroup_size >= LANES
    with graph.only_when(lambda: decode is None or not decode()):
        graph.dispatch(
            "time_mix_v5_lanes" if lanes else "time_mix_v5", counter, params, {2: cursors, 3: tm, 4: vec, 5: state, 6: y},
            lambda k: (heads * ceil_div(n, ROWS), slots if k else 0, 1),
            entry="wkv_lanes" if lanes else "wkv", label=label, N_HEAD=n,
        )  # fmt: skip
        graph.dispatch(
            "time_mix_v5", counter, params, {3: tm, 4: vec, 6: y},
            lambda k: (heads, k, 1), entry="norm", label=f"{label}.norm", WG=WG,
        )  # fmt: skip
