"""Float64 numpy references for the RWKV-4 / RWKV-5/6 time mix and token_shift's `mix_delta`
(no code shared with the kernels).

The math follows the official ``rwkv`` package (``rwkv/model.py``): ``att_seq`` for RWKV-4,
``att_seq_v5_2`` / ``att_seq_v6_0`` (and ``att_one_v6_0``) for RWKV-5/6.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from oracles import f64, slot_spans


def v4_wkv(
    r: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    w: np.ndarray,
    u: np.ndarray,
    state: np.ndarray,
    lens: Sequence[int],
) -> tuple[np.ndarray, np.ndarray]:
    """RWKV-4 WKV. r (already sigmoid), k, v [T, C]; w = -exp(time_decay), u = time_first [C];
    state [B, 3, C] = (aa, bb, pp). Returns y = r * wkv [T, C] and the new state.

    Written in the plain (unscaled) form: num = aa e^pp, den = bb e^pp, which float64 holds for
    |k| up to a few hundred, while tracking pp with the official recurrence pp' = max(pp + w, k)
    so that the final state comes out in the same (aa, bb, pp) scaling as the official code.
    """
    r, k, v, w, u = (f64(a) for a in (r, k, v, w, u))
    st = f64(state).copy()
    y = np.zeros_like(k)
    for b, (s0, n) in enumerate(slot_spans(lens)):
        aa, bb, pp = st[b]
        num = aa * np.exp(pp)  # exp(-1e30) == 0: the empty state
        den = bb * np.exp(pp)
        for t in range(s0, s0 + n):
            eu = np.exp(u + k[t])
            y[t] = r[t] * (num + eu * v[t]) / (den + eu)
            ek = np.exp(k[t])
            num = np.exp(w) * num + ek * v[t]
            den = np.exp(w) * den + ek
            pp = np.maximum(pp + w, k[t])
        if n:
            st[b] = (num * np.exp(-pp), den * np.exp(-pp), pp)
    return y, st


def v5_wkv(
    r: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    g: np.ndarray | None,
    w: np.ndarray,
    u: np.ndarray,
    lnw: np.ndarray,
    lnb: np.ndarray,
    state: np.ndarray,
    lens: Sequence[int],
    heads: int,
    eps: float = 64e-5,
) -> tuple[np.ndarray, np.ndarray]:
    """RWKV-5/6 WKV + group norm (+ gate). r, k, v, g [T, C]; w is the decay actually applied,
    either [C] (static, already exp(-exp(time_decay))) or [T, C] (per token); u [C].

    ``state`` is [B, H, N, N] in the kernel's layout (row = value i, column = key j); inside,
    the official layout s[h, key j, value i] is used: out = r @ (u * kv + s); s = kv + w * s.
    Returns y [T, C] and the new state in the kernel's layout.
    """
    r, k, v, u = (f64(a) for a in (r, k, v, u))
    w = f64(w)
    t_all, c = r.shape
    n = c // heads
    s = np.swapaxes(f64(state), -1, -2).copy()  # -> [B, H, key, value]
    out = np.zeros((t_all, c))
    for b, (s0, cnt) in enumerate(slot_spans(lens)):
        for t in range(s0, s0 + cnt):
            wt = w[t] if w.ndim == 2 else w
            for h in range(heads):
                sl = slice(h * n, (h + 1) * n)
                kv = np.outer(k[t, sl], v[t, sl])  # [key, value]
                out[t, sl] = r[t, sl] @ (u[sl][:, None] * kv + s[b, h])
                s[b, h] = kv + wt[sl][:, None] * s[b, h]
    # group norm: one group per head, biased variance
    xs = out.reshape(t_all, heads, n)
    mean = xs.mean(-1, keepdims=True)
    var = ((xs - mean) ** 2).mean(-1, keepdims=True)
    y = ((xs - mean) / np.sqrt(var + eps)).reshape(t_all, c) * f64(lnw) + f64(lnb)
    if g is not None:
        y = y * f64(g)
    return y, np.swapaxes(s, -1, -2)


def v6_decay(time_decay: np.ndarray, w_plane: np.ndarray) -> np.ndarray:
    """RWKV-6 per-token decay: exp(-exp(time_decay + lora(x)))."""
    return np.exp(-np.exp(f64(time_decay)[None, :] + f64(w_plane)))


def token_shift_delta(
    x: np.ndarray, shift: np.ndarray, mu: np.ndarray, delta: np.ndarray, lens: Sequence[int]
) -> np.ndarray:
    """out[m, t] = x[t] + (prev[t] - x[t]) * (mu[m] + delta[m, t]) (RWKV-6's data-dependent mix).

    x [T, C]; shift [B, C] (each slot's row before its first token); mu [M, C]; delta [M, T, C].
    """
    x, shift, mu, delta = f64(x), f64(shift), f64(mu), f64(delta)
    prev = np.empty_like(x)
    for b, (s, n) in enumerate(slot_spans(lens)):
        if n:
            prev[s] = shift[b]
            prev[s + 1 : s + n] = x[s : s + n - 1]
    return x[None] + (prev - x)[None] * (mu[:, None, :] + delta)


_OFFICIAL: dict = {}


def official_rwkv(monkeypatch, v7: bool = False):
    """The official ``rwkv/model.py`` (RWKV-4..6 code paths, or RWKV-7 with ``v7``; no JIT, no
    CUDA), loaded privately: its flags are import-time environment variables. Skips when torch
    or rwkv is missing."""
    import importlib.util
    import warnings

    import pytest

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch's own torch.jit.script notices
        torch = pytest.importorskip("torch")
        if v7 not in _OFFICIAL:
            spec = importlib.util.find_spec("rwkv")
            origin = (
                spec
                and spec.submodule_search_locations
                and next(iter(spec.submodule_search_locations))
            )
            if not origin:
                pytest.skip("the official rwkv package is not installed")
            for key, val in (("RWKV_V7_ON", str(int(v7))), ("RWKV_JIT_ON", "0"), ("RWKV_CUDA_ON", "0")):
                monkeypatch.setenv(key, val)
            loc = importlib.util.spec_from_file_location(
                f"_official_rwkv_model_{'v7' if v7 else 'v4v6'}", f"{origin}/model.py"
            )
            mod = importlib.util.module_from_spec(loc)
            loc.loader.exec_module(mod)
            _OFFICIAL[v7] = mod
    return torch, _OFFICIAL[v7]
