"""Independent float64 numpy references for the op tests (no code shared with the kernels).

The RWKV-7 math follows the official ``rwkv`` package, ``RWKV_x070_TMix_seq`` (non-CUDA branch).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def f64(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def layer_norm(
    x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float, group: int | None = None
) -> np.ndarray:
    """Norm over each group of ``group`` columns (default: the whole row), biased variance."""
    x = f64(x)
    t, c = x.shape
    g = group or c
    xs = x.reshape(t, c // g, g)
    mean = xs.mean(-1, keepdims=True)
    var = ((xs - mean) ** 2).mean(-1, keepdims=True)
    return ((xs - mean) / np.sqrt(var + eps)).reshape(t, c) * f64(w) + f64(b)


def slot_spans(lens: Sequence[int]) -> list[tuple[int, int]]:
    """(start, len) of each slot when the slots' tokens are packed one after another."""
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(int)
    return [(int(s), int(n)) for s, n in zip(starts, lens)]


def cursors(lens: Sequence[int]) -> np.ndarray:
    """u32 [2B + T]: (start, len) per slot, then the slot id of each token."""
    spans = slot_spans(lens)
    head = [v for span in spans for v in span]
    ids = [b for b, n in enumerate(lens) for _ in range(n)]
    return np.array(head + ids, dtype=np.uint32)


def token_shift(
    x: np.ndarray, shift: np.ndarray, mu: np.ndarray, lens: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """out[m, t] = x[t] + (prev[t] - x[t]) * mu[m]; new shift rows = each non-empty slot's last token."""
    x, shift, mu = f64(x), f64(shift), f64(mu)
    prev = np.empty_like(x)
    new_shift = shift.copy()
    for b, (s, n) in enumerate(slot_spans(lens)):
        if n == 0:
            continue
        prev[s] = shift[b]
        prev[s + 1 : s + n] = x[s : s + n - 1]
        new_shift[b] = x[s + n - 1]
    out = x[None] + (prev - x)[None] * mu[:, None, :]
    return out, new_shift


def v7_prepare(
    raw: dict[str, np.ndarray],
    vec: dict[str, np.ndarray],
    vgate: np.ndarray,
    v_first: np.ndarray,
    heads: int,
    layer0: bool,
) -> dict[str, np.ndarray]:
    """From raw projections r, w, k, v, a, g ([T, C]) to the recurrence inputs (same names + kk, v_first)."""
    t, c = raw["k"].shape
    n = c // heads
    k = f64(raw["k"])
    kk = (k * f64(vec["k_k"])).reshape(t, heads, n)
    kk = (kk / np.maximum(np.linalg.norm(kk, axis=-1, keepdims=True), 1e-12)).reshape(t, c)
    a = sigmoid(f64(vec["a0"]) + f64(raw["a"]))
    k = k * (1 + (a - 1) * f64(vec["k_a"]))
    v = f64(raw["v"])
    if layer0:
        v_first = v.copy()
    else:
        v_first = f64(v_first)
        v = v + (v_first - v) * sigmoid(f64(vec["v0"]) + f64(vgate))
    w = np.exp(-0.606531 * sigmoid(f64(vec["w0"]) + f64(raw["w"])))
    return {
        "r": f64(raw["r"]),
        "w": w,
        "k": k,
        "v": v,
        "kk": kk,
        "a": a,
        "g": f64(raw["g"]),
        "v_first": v_first,
    }


def v7_wkv(
    p: dict[str, np.ndarray],
    vec: dict[str, np.ndarray],
    state: np.ndarray,
    lens: Sequence[int],
    heads: int,
    eps: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The recurrence per slot and head, then group norm, bonus and gate. state [B, H, N, N] (value, key)."""
    r, w, k, v, kk, a, g = (f64(p[name]) for name in ("r", "w", "k", "v", "kk", "a", "g"))
    t, c = r.shape
    n = c // heads
    state = f64(state).copy()
    out = np.zeros((t, c))
    for b, (s0, cnt) in enumerate(slot_spans(lens)):
        for tt in range(s0, s0 + cnt):
            for h in range(heads):
                sl = slice(h * n, (h + 1) * n)
                S = state[b, h]
                ab = np.outer(-kk[tt, sl], kk[tt, sl] * a[tt, sl])
                S = S * w[tt, sl][None, :] + S @ ab + np.outer(v[tt, sl], k[tt, sl])
                state[b, h] = S
                out[tt, sl] = S @ r[tt, sl]
    y = layer_norm(out, vec["lnw"], vec["lnb"], eps, group=n)
    bonus = (r * k * f64(vec["r_k"])).reshape(t, heads, n).sum(-1, keepdims=True)
    y = y + (bonus * v.reshape(t, heads, n)).reshape(t, c)
    return y * g, state
