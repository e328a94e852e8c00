"""Token shift: mix each token with the previous one of its slot, and save each slot's last row."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from ..errors import ShapeError
from ..gpu import Act, BufferRange, Counter, Graph, Matrix, ceil_div, pack_params, vec4_start
from .norm import norm_workgroup

PARAMS = np.dtype(
    [(n, "<u4") for n in ("c", "slots", "mixes", "mu_off", "x_off", "out_plane", "store", "with_delta", "ln_w_off", "ln_b_off")]
    + [("eps", "<f4"), ("_pad", "<u4")]
    + [(n, "<u4") for n in ("lora_kv", "lora_w", "lora_step", "lora_h", "lora_hs", "lora_rows", "_pad2", "_pad3")]
)
WG = 64
MIX_CH = 32  # channels per mix_lora workgroup (x its mix count: one invocation per channel and mix)


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
            ln_w_off: int = 0, ln_b_off: int = 0, eps: float = 0.0, **lora: int) -> np.ndarray:  # fmt: skip
    fields = dict.fromkeys(("lora_kv", "lora_w", "lora_step", "lora_h", "lora_hs", "lora_rows", "_pad2", "_pad3"), 0)
    fields.update(lora)
    return pack_params(
        PARAMS, c=x.cols, slots=slots, mixes=mixes, mu_off=mu_off, x_off=x.offset, out_plane=plane, store=int(store),
        with_delta=int(delta is not None), ln_w_off=ln_w_off, ln_b_off=ln_b_off, eps=eps, _pad=0, **fields,
    )  # fmt: skip


MAX_LORA_H = 1024  # token_shift.wgsl's MAX_LORA_H: the LoRA inputs mix_lora stages (mixes x D)
MAX_MIX_INVOCATIONS = 256  # MIX_CH x mixes: WebGPU's default invocations per workgroup


def lora_fits(w2: list[Matrix], c: int) -> bool:
    """Whether :func:`token_mix_lora` can read ``w2``: [C, D] matrices of one width, stored in one
    buffer at even spacing (``upload_matrices`` does so unless they would not fit one binding),
    MAX_LORA_H inputs at most."""
    ranges = [m.parts[0].buffer if len(m.parts) == 1 else None for m in w2]
    first = ranges[0]
    return (
        all(isinstance(r, BufferRange) and isinstance(first, BufferRange) and r.buffer is first.buffer for r in ranges)
        and all((m.rows, m.k, m.kp) == (c, w2[0].k, w2[0].kp) for m in w2)
        and len({b.offset - a.offset for a, b in itertools.pairwise(ranges)}) <= 1  # type: ignore[union-attr]
        and len(w2) * w2[0].k <= MAX_LORA_H
        and MIX_CH * len(w2) <= MAX_MIX_INVOCATIONS
    )  # fmt: skip


def token_mix_lora(
    graph: Graph, counter: Counter, cursors: Any, x: Act, shift: Any, vec: Any, mu_off: int, out: Act,
    *, w2: list[Matrix], hid: Act, slots: int, plane: int, store: bool = False, label: str = "token_mix_lora",
) -> None:  # fmt: skip
    """:func:`token_mix` with ``delta[m, t] = w2[m] @ hid[t, m D : (m + 1) D]`` computed in the
    same dispatch (RWKV-6's data-dependent mix: the five LoRA second halves and the mix in one
    kernel), for steps of any length. ``w2``: one [C, D] matrix per mix, all in one buffer
    evenly spaced (``upload_matrices``); ``hid`` [T, >= len(w2) D]."""
    c = x.cols
    if x.stride != c or out.offset or out.stride != c:
        raise ShapeError(f"{label}: rows must be packed ([T, C] with stride C={c}) and the output starts at 0")
    if not lora_fits(w2, c) or hid.cols < len(w2) * w2[0].k:
        raise ShapeError(f"{label}: the LoRA matrices must be [C={c}, D] each, evenly spaced in one buffer, "
                         f"at most {MAX_MIX_INVOCATIONS // MIX_CH} of them and {MAX_LORA_H} inputs in all")  # fmt: skip
    ranges = [m.parts[0].buffer for m in w2]
    d = w2[0].k
    step = (ranges[1].offset - ranges[0].offset) // 16 if len(ranges) > 1 else 0
    params = _params(x, slots, len(w2), mu_off, plane, store, None, lora_kv=w2[0].kp // 8,
                     lora_w=ranges[0].offset // 16, lora_step=step, lora_h=hid.offset, lora_hs=hid.stride)  # fmt: skip
    buffers = {2: cursors, 3: x.buffer, 4: shift, 5: vec, 6: out.buffer, 9: ranges[0].buffer, 10: hid.buffer}
    graph.dispatch("token_shift", counter, params, buffers, lambda n: (ceil_div(c, MIX_CH), n, 1), entry="mix_lora",
                   label=label, MIX_CH=MIX_CH, LORA_D=d, LORA_MIXES=len(w2))  # fmt: skip


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
    graph.dispatch("token_shift", counter, params, buffers, lambda n: (ceil_div(c, wg), n, 1),
                   entry="norm_mix", label=label, WG=wg)  # fmt: skip


MAX_NL_C = 3072  # token_shift.wgsl's MAX_NL_C: the longest row norm_lora stages
NL_LANES = 64  # invocations a row in norm_lora (64: 4 rows a workgroup of 256; 32 and 16 were slower on the H100)


def norm_lora_fits(w1: Matrix | Any, c: int) -> bool:
    """Whether :func:`norm_lora` can read ``w1``: one f16 part of [rows, C], C <= MAX_NL_C."""
    return (
        isinstance(w1, Matrix) and len(w1.parts) == 1 and w1.k == c and c <= MAX_NL_C
        and w1.kp == (c + 7) // 8 * 8
    )  # fmt: skip


def norm_lora(
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
    w1: Matrix,
    hid: Act,
    *,
    slots: int,
    eps: float,
    label: str = "norm_lora",
) -> None:
    """``xn = layer_norm(x)``, ``mixed = xn + (prev - xn) * mu`` and ``hid = tanh(W1 @ mixed)`` in
    one dispatch (RWKV-6's mix LoRA first half with the norm and mix before it), for steps where
    every slot has at most one token (the caller records it under ``Graph.only_when``); the saved
    rows are left as they are. Shapes: x, xn [T, C] packed, W1 [R, C], hid [T, >= R]."""
    c = x.cols
    if x.stride != c or xn.stride != c or xn.offset:
        raise ShapeError(f"{label}: rows must be packed ([T, C] with stride C={c}) and xn starts at 0")
    if not norm_lora_fits(w1, c) or hid.cols < w1.rows:
        raise ShapeError(f"{label}: the matrix must be one f16 part of [R, C={c}] (C <= {MAX_NL_C}) and hid at least R wide")
    buffer, at = vec4_start(w1.parts[0].buffer)
    params = _params(x, slots, 1, mu_off, 0, False, None, ln_w_off, ln_b_off, eps, lora_kv=w1.kp // 8, lora_w=at,
                     lora_h=hid.offset, lora_hs=hid.stride, lora_rows=w1.rows)  # fmt: skip
    wg = norm_workgroup(c)  # as layer_norm, so the sums match
    lanes = min(NL_LANES, wg)
    buffers = {2: cursors, 3: x.buffer, 4: shift, 5: vec, 6: hid.buffer, 8: xn.buffer, 9: buffer}
    graph.dispatch("token_shift", counter, params, buffers, lambda n: (ceil_div(w1.rows, wg // lanes), n, 1),
                   entry="norm_lora", label=label, WG=wg, NL_LANES=lanes)  # fmt: skip
