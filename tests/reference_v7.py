"""A plain numpy (float64) RWKV-7 forward written from the official math, for tests that need
hidden states the official package does not expose (hooks). Slow; tiny models only."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MIX = ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g")


def load(path: str) -> dict[str, np.ndarray]:
    from rwkv_webgpu.weights import open_checkpoint

    with open_checkpoint(path) as ck:
        return {n: ck.load(n).astype(np.float64) for n in ck.names()}


def _ln(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def _sig(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def forward(z: dict[str, np.ndarray], tokens: Sequence[int], steer: dict[int, np.ndarray] | None = None) -> dict:
    """Logits ``[T, V]`` and every layer's output ``[T, C]`` (``steer[i]`` is added to layer i's output)."""
    h_, n_ = z["blocks.0.att.r_k"].shape
    layers = 1 + max(int(k.split(".")[1]) for k in z if k.startswith("blocks."))
    x = _ln(z["emb.weight"][list(tokens)], z["blocks.0.ln0.weight"], z["blocks.0.ln0.bias"])
    t_, c_ = x.shape
    outs, v_first = [], None
    for i in range(layers):
        a, f = f"blocks.{i}.att.", f"blocks.{i}.ffn."
        vec = lambda name: z[a + name].reshape(-1)
        xx = _ln(x, z[f"blocks.{i}.ln1.weight"], z[f"blocks.{i}.ln1.bias"])
        d = np.vstack([np.zeros((1, c_)), xx[:-1]]) - xx
        xr, xw, xk, xv, xa, xg = (xx + d * vec(m) for m in MIX)
        r, k, v = xr @ z[a + "receptance.weight"].T, xk @ z[a + "key.weight"].T, xv @ z[a + "value.weight"].T
        w = np.exp(-0.606531 * _sig(vec("w0") + np.tanh(xw @ z[a + "w1"]) @ z[a + "w2"]))
        aa = _sig(vec("a0") + (xa @ z[a + "a1"]) @ z[a + "a2"])
        g = _sig(xg @ z[a + "g1"]) @ z[a + "g2"]
        kk = (k * vec("k_k")).reshape(t_, h_, n_)
        kk = (kk / np.maximum(np.linalg.norm(kk, axis=-1, keepdims=True), 1e-12)).reshape(t_, c_)
        k = k * (1 + (aa - 1) * vec("k_a"))
        if i == 0:
            v_first = v
        else:
            v = v + (v_first - v) * _sig(vec("v0") + (xv @ z[a + "v1"]) @ z[a + "v2"])
        s = np.zeros((h_, n_, n_))
        o = np.zeros((t_, h_, n_))
        rs, ws, ks, vs, kks, abs_ = (m.reshape(t_, h_, n_) for m in (r, w, k, v, kk, kk * aa))
        for t in range(t_):
            for h in range(h_):
                s[h] = s[h] * ws[t, h][None, :] - np.outer(s[h] @ kks[t, h], abs_[t, h]) + np.outer(vs[t, h], ks[t, h])
                o[t, h] = s[h] @ rs[t, h]
        mu = o.mean(-1, keepdims=True)
        var = ((o - mu) ** 2).mean(-1, keepdims=True)
        gn = ((o - mu) / np.sqrt(var + 64e-5)).reshape(t_, c_) * z[a + "ln_x.weight"] + z[a + "ln_x.bias"]
        bonus = (rs * ks * z[a + "r_k"][None]).sum(-1, keepdims=True) * vs
        x = x + ((gn + bonus.reshape(t_, c_)) * g) @ z[a + "output.weight"].T
        xx = _ln(x, z[f"blocks.{i}.ln2.weight"], z[f"blocks.{i}.ln2.bias"])
        kx = xx + (np.vstack([np.zeros((1, c_)), xx[:-1]]) - xx) * z[f + "x_k"].reshape(-1)
        x = x + np.maximum(kx @ z[f + "key.weight"].T, 0) ** 2 @ z[f + "value.weight"].T
        if steer and i in steer:
            x = x + steer[i]
        outs.append(x.copy())
    logits = _ln(x, z["ln_out.weight"], z["ln_out.bias"]) @ z["head.weight"].T
    return {"logits": logits, "layers": outs}
