"""RWKV-7 time mix: `prepare` shapes the projections, `wkv` runs the state recurrence per head
(rows split over workgroups), `norm` applies the group norm, bonus and gate. For decoding steps
`decode` does all three, and the LoRA second halves before them, in one dispatch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ShapeError
from ..gpu import Act, BufferRange, Counter, Graph, Matrix, ceil_div, pack_params

_FIELDS = (
    "c", "h", "n", "plane", "slots", "layer0", "w0_off", "a0_off", "v0_off",
    "k_k_off", "k_a_off", "r_k_off", "lnw_off", "lnb_off",
)  # fmt: skip
PARAMS = np.dtype([(n, "<u4") for n in _FIELDS] + [("eps", "<f4"), ("_pad", "<u4")]
                  + [(n, "<u4", (4,)) for n in ("lora_at", "hid_at")]
                  + [(n, "<u4") for n in ("hid_stride", "_pad1", "_pad2", "_pad3")])  # fmt: skip
LORAS = ("w", "a", "v", "g")  # the LoRA second halves `decode` computes, in its order
MAX_HID = 1024  # ... and how many inputs they may have together (the shader's MAX_HID)
MAX_HEAD = 64
WG = 64
ROWS = 16  # state rows per wkv workgroup (the shader's ROWS)


@dataclass(frozen=True)
class DecodeLora:
    """Where `decode` finds the LoRA second halves (w, a, v, g order): ``buffer`` holds their f16
    rows starting at vec4 ``at``, ``d`` inputs each (0: none), which start at ``hid_at`` in rows
    of ``hid_stride`` elements of the first halves' output."""

    buffer: Any
    at: tuple[int, int, int, int]
    d: tuple[int, int, int, int]
    hid_at: tuple[int, int, int, int]
    hid_stride: int


def decode_lora(seconds: dict[str, Matrix | Any], inputs: dict[str, Act], c: int) -> DecodeLora | None:
    """The DecodeLora of a layer's LoRA second halves ``seconds`` (name -> [C, D] matrix) reading
    ``inputs`` (name -> columns of one hid buffer), or None where `decode` cannot read them: a
    quantized or split matrix, matrices in different buffers, or more than MAX_HID inputs."""
    buffers, at, d, hid_at = set(), [0] * 4, [0] * 4, [0] * 4
    strides = {x.stride for x in inputs.values()}
    for name, w in seconds.items():
        part = w.parts[0] if isinstance(w, Matrix) and len(w.parts) == 1 else None
        if part is None or not isinstance(part.buffer, BufferRange) or w.rows != c:
            return None
        buffers.add(id(part.buffer.buffer))
        j = LORAS.index(name)
        at[j], d[j], hid_at[j] = part.buffer.offset // 16, w.k, inputs[name].offset
    if len(buffers) != 1 or len(strides) != 1 or sum((x + 7) // 8 * 8 for x in d) > MAX_HID:
        return None
    first = next(iter(seconds.values())).parts[0].buffer.buffer
    return DecodeLora(first, tuple(at), tuple(d), tuple(hid_at), strides.pop())  # type: ignore[arg-type]


def v7_params(*, c: int, h: int, plane: int, slots: int, layer0: bool, offsets: dict[str, int], eps: float,
              lora: DecodeLora | None = None) -> np.ndarray:  # fmt: skip
    """The shared Params of the entry points; ``offsets`` gives w0, a0, v0, k_k, k_a, r_k, lnw, lnb;
    ``lora`` (for `decode`) where the LoRA second halves and their inputs are."""
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
        lora_at=lora.at if lora else (0,) * 4,
        hid_at=lora.hid_at if lora else (0,) * 4,
        hid_stride=lora.hid_stride if lora else 0,
        _pad1=0,
        _pad2=0,
        _pad3=0,
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


def time_mix_v7_decode(
    graph: Graph, counter: Counter, params: np.ndarray, cursors: Any, tm: Any, v_first: Any, vec: Any, state: Any, y: Any,
    hid: Any, lora: DecodeLora, *, heads: int, slots: int,
) -> None:  # fmt: skip
    """Record `decode` for steps where every slot has at most one token (the caller gates it with
    Graph.only_when): the LoRA second halves of ``lora`` on the rows of ``hid``, then prepare, wkv
    and norm, y [T, C]; tm is read only. Grid (H, B)."""
    n = int(params["n"][0])
    graph.dispatch(
        "time_mix_v7",
        counter,
        params,
        {2: cursors, 3: tm, 5: v_first, 6: vec, 7: state, 8: y, 9: hid, 10: lora.buffer},
        lambda k: (heads, slots if k else 0, 1),
        entry="decode",
        label="v7.decode",
        N_HEAD=n,
        **{f"D_{name.upper()}": width for name, width in zip(LORAS, lora.d)},
    )
