"""RWKV-6 ("Finch"): V5's block with data-dependent token mix and decay.

Per layer::

    xx = ln1(x);  xxx = token_mix(xx, time_maa_x)
    m_w, m_k, m_v, m_r, m_g = time_maa_w2[j] tanh(time_maa_w1 xxx)          (five LoRAs)
    xw, xk, xv, xr, xg = token_mix(xx, time_maa_{w,k,v,r,g} + m_*)
    r, k, v = W_r xr, W_k xk, W_v xv;  g = silu(W_g xg)
    w = exp(-exp(time_decay + time_decay_w2 tanh(time_decay_w1 xw)))        (per token)
    y = group_norm(wkv(r, w, k, v; u = time_faaaa)) * g;  x += W_o y;  x += channel_mix(ln2(x))
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..gpu import Act, Graph, act_buffer, upload_matrix
from ..ops import layer_norm, matmul, token_mix
from ..state import State
from .base import LN_EPS, Buffers, VectorPack
from .v5 import G, K, R, V, V5Model, W

MAA = "wkvrg"  # order of the five mix LoRA outputs in the checkpoint
TO_PLANE = {"w": W, "k": K, "v": V, "r": R, "g": G}


class V6Model(V5Model):
    dynamic_decay = True

    def load_att(self, ckpt: Any, i: int, pack: VectorPack) -> dict[str, Any]:
        att = f"blocks.{i}.att."
        pack.add("att.maa_x", ckpt.load(att + "time_maa_x"))
        pack.add("att.mu", np.stack([ckpt.load(att + f"time_maa_{m}").reshape(-1) for m in MAA]))
        pack.add("decay", ckpt.load(att + "time_decay").reshape(-1))
        pack.add("u", self.per_channel(ckpt.load(att + "time_faaaa")))
        w2 = ckpt.load(att + "time_maa_w2", np.float16)  # (5, Dm, C)
        extra = {
            "maa_w1": self.matrix(ckpt, att + "time_maa_w1", transpose=True),  # (5 Dm, C)
            "decay_w1": self.matrix(ckpt, att + "time_decay_w1", transpose=True),
            "decay_w2": self.matrix(ckpt, att + "time_decay_w2", transpose=True),
        }
        for j, m in enumerate(MAA):
            extra[f"maa_w2_{m}"] = upload_matrix(self.device, w2[j].T, f"{att}time_maa_w2[{j}]")
        return {"gate": self.matrix(ckpt, att + "gate.weight"), "extra": extra}

    def alloc_layer_buffers(self, buf: Buffers) -> None:
        super().alloc_layer_buffers(buf)
        dev, c, t = self.device, self.info.num_emb, buf.tmax
        extra = self.layers[0].extra or {}
        hid = max(extra["maa_w1"].rows, extra["decay_w1"].rows)
        buf.xxx = act_buffer(dev, t, c, "att.maa_x")  # type: ignore[attr-defined]
        buf.hid = act_buffer(dev, t, hid, "att.lora")  # type: ignore[attr-defined]
        buf.delta = act_buffer(dev, t, c, "att.maa_delta", planes=5)  # type: ignore[attr-defined]

    def record_projections(self, g: Graph, i: int, state: State, buf: Buffers) -> None:
        lw, n = self.layers[i], buf.tokens
        bb: Any = buf
        ex = lw.extra or {}
        plane = buf.tmax * self.info.num_emb
        shift = state.layers[i]["att_shift"]
        dm5 = ex["maa_w1"].rows
        dm = dm5 // 5
        o = lw.off
        layer_norm(g, n, buf.x, buf.xn, lw.vec, o["ln1.weight"], o["ln1.bias"], eps=LN_EPS, label=f"{i}.att.ln1")
        self.hook_point(g, buf, state, f"{i}.att.norm", buf.xn, layer=i)
        token_mix(g, n, buf.cursors, buf.xn, shift, lw.vec, o["att.maa_x"], bb.xxx,
                  mixes=1, slots=buf.slots, plane=plane, label=f"{i}.att.maa_x")  # fmt: skip
        hid = Act(bb.hid.buffer, dm5, dm5, 0, buf.tmax)
        matmul(g, n, bb.xxx, ex["maa_w1"], hid, act="tanh", label=f"{i}.att.maa_w1")
        for j, m in enumerate(MAA):
            part = Act(bb.hid.buffer, dm, dm5, j * dm, buf.tmax)
            matmul(g, n, part, ex[f"maa_w2_{m}"], bb.delta.at(j * plane), label=f"{i}.att.maa_w2.{m}")
        token_mix(g, n, buf.cursors, buf.xn, shift, lw.vec, o["att.mu"], bb.mix, mixes=5, slots=buf.slots,
                  plane=plane, delta=bb.delta.buffer, store=True, label=f"{i}.att.mix")  # fmt: skip
        mix = lambda m: bb.mix.at(MAA.index(m) * plane)
        tm = lambda m: bb.tm.at(TO_PLANE[m] * plane)
        matmul(g, n, mix("r"), lw.receptance, tm("r"), label=f"{i}.att.r")
        matmul(g, n, mix("k"), lw.key, tm("k"), label=f"{i}.att.k")
        matmul(g, n, mix("v"), lw.value, tm("v"), label=f"{i}.att.v")
        assert lw.gate is not None
        matmul(g, n, mix("g"), lw.gate, tm("g"), act="silu", label=f"{i}.att.g")
        dd = ex["decay_w1"].rows
        dhid = Act(bb.hid.buffer, dd, dd, 0, buf.tmax)
        matmul(g, n, mix("w"), ex["decay_w1"], dhid, act="tanh", label=f"{i}.att.decay_w1")
        matmul(g, n, dhid, ex["decay_w2"], tm("w"), label=f"{i}.att.decay_w2")
