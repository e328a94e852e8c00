"""RWKV-5/6 time mix: multi-head WKV with bonus u, then group norm (ln_x) and the optional gate."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ShapeError
from ..gpu import Act, Counter, Graph, Matrix, ceil_div, pack_params, vec4_start

_FIELDS = ("c", "h", "n", "plane", "slots", "dynamic_decay", "gated", "decay_off", "u_off", "lnw_off", "lnb_off")
PARAMS = np.dtype([(f, "<u4") for f in _FIELDS] + [("eps", "<f4")]
                  + [(f, "<u4") for f in ("lora_at", "hid_at", "hid_stride", "_pad")])  # fmt: skip
MAX_HEAD = 64
MAX_DW = 256  # the widest decay LoRA `decode` computes itself (decay_lora.wgsl's MAX_DW)
WG = 64
ROWS = 16  # state rows per wkv workgroup (the shader's ROWS) ...
LANES = 8  # ... and invocations per state row (the shader's LANES)


@dataclass(frozen=True)
class DecayLora:
    """Where `decode` finds RWKV-6's decay LoRA second half: its f16 rows in ``buffer`` from vec4
    ``at``, ``d`` inputs each, which start at ``hid_at`` of ``hid``'s rows of ``hid_stride``."""

    buffer: Any
    at: int
    d: int
    hid: Any
    hid_at: int
    hid_stride: int


def decay_lora(w2: Matrix | Any, inputs: Act, c: int) -> DecayLora | None:
    """The DecayLora of the decay LoRA second half ``w2`` ([C, D]) reading ``inputs``, or None
    where `decode` cannot compute it (a quantized or split matrix, D above MAX_DW)."""
    part = w2.parts[0] if isinstance(w2, Matrix) and len(w2.parts) == 1 else None
    if part is None or w2.rows != c or w2.k > MAX_DW or w2.kp != (w2.k + 7) // 8 * 8:
        return None
    buffer, at = vec4_start(part.buffer)
    return DecayLora(buffer, at, w2.k, inputs.buffer, inputs.offset, inputs.stride)


def time_mix_v5(
    graph: Graph, counter: Counter, cursors: Any, tm: Any, vec: Any, state: Any, y: Any,
    *, c: int, heads: int, plane: int, slots: int, dynamic_decay: bool, gated: bool,
    offsets: dict[str, int], eps: float, label: str = "v5.wkv", decode: Callable[[], bool] | None = None,
    lora: DecayLora | None = None, lora_when: Callable[[], bool] | None = None,
) -> None:  # fmt: skip
    """Record the WKV over tm planes (r, w, k, v, g) [5, plane]; state [B, H, N, N]; y [T, C].

    ``offsets`` gives decay, u, lnw, lnb in ``vec``. With ``dynamic_decay`` the w plane holds
    the per-token decay LoRA output added to vec's time_decay (RWKV-6). Two dispatches: the
    recurrence writes the raw o into y (grid (H * ceil(N / ROWS), B)), then the group norm and
    gate rewrite y in place (grid (H, T)). On steps where ``decode()`` holds (every slot has at
    most one token) one dispatch `decode` does both instead (grid (H, B)); with ``lora`` (RWKV-6)
    it also computes the decay LoRA second half, so the caller skips that product on those steps
    (on the decoding steps where ``lora_when()`` holds, if given; the others read the w plane).
    """
    n = c // heads if heads > 0 else 0
    if heads <= 0 or n * heads != c:
        raise ShapeError(f"{label}: C={c} is not a whole number of heads (H={heads})")
    if n > MAX_HEAD:
        raise ShapeError(f"{label}: head size {n} is larger than the kernel's {MAX_HEAD}")
    params = pack_params(
        PARAMS, c=c, h=heads, n=n, plane=plane, slots=slots, dynamic_decay=int(dynamic_decay), gated=int(gated),
        decay_off=offsets["decay"], u_off=offsets["u"], lnw_off=offsets["lnw"], lnb_off=offsets["lnb"], eps=eps,
        lora_at=lora.at if lora else 0, hid_at=lora.hid_at if lora else 0, hid_stride=lora.hid_stride if lora else 0,
        _pad=0,
    )  # fmt: skip
    info = graph.device.info
    if decode:  # steps where every slot has at most one token: both in one dispatch
        if lora is not None and not dynamic_decay:
            raise ValueError(f"{label}: a decay LoRA needs dynamic_decay")
        bindings = {2: cursors, 3: tm, 4: vec, 5: state, 6: y}
        grid = lambda k: (heads, slots if k else 0, 1)
        inside = lora_when or (lambda: True)
        with graph.only_when(decode):
            if lora is not None:
                with graph.only_when(inside):
                    graph.dispatch("time_mix_v6", counter, params, {**bindings, 7: lora.hid, 8: lora.buffer}, grid,
                                   entry="decode", label=f"{label}.decode", N_HEAD=n, D_W=lora.d)  # fmt: skip
            with graph.only_when(lambda: lora is None or not inside()):
                graph.dispatch("time_mix_v5", counter, params, bindings, grid, entry="decode", label=f"{label}.decode",
                               N_HEAD=n)  # fmt: skip
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
