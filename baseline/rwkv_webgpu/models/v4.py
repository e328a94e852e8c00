"""RWKV-4: weights and the block as a list of op calls.

Per layer (checkpoint names ``blocks.{i}.att.*`` / ``blocks.{i}.ffn.*``)::

    xx = ln1(x);  xk, xv, xr = token_mix(xx, 1 - time_mix_{k,v,r})
    x += W_o (sigmoid(W_r xr) * wkv(W_k xk, W_v xv; w = -exp(time_decay), u = time_first))
    x += channel_mix(ln2(x))            (the gated channel mix shared with V5 and V6)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..gpu import Graph, Weight, act_buffer
from ..ops import matmul, time_mix_v4
from ..state import State, StateSpec
from .base import Buffers, Model, Progress, VectorPack

R, K, V = range(3)  # planes of the time-mix buffer (and of the mix buffer)


@dataclass
class V4Layer:
    vec: Any
    off: dict[str, int]
    receptance: Weight
    key: Weight
    value: Weight
    output: Weight
    ffn_key: Weight
    ffn_value: Weight
    ffn_receptance: Weight


def load_ffn(model: Model, ckpt: Any, i: int, pack: VectorPack, maa: bool) -> dict[str, Weight]:
    """Channel-mix vectors (into ``pack``) and matrices, shared by V4, V5 and V6."""
    ffn = f"blocks.{i}.ffn."
    for name in ("ln2.weight", "ln2.bias"):
        pack.add(name, ckpt.load(f"blocks.{i}.{name}"))
    # our token_mix computes x + (prev - x) * mu; V4/V5 store mix = 1 - mu, V6 stores mu
    mixes = [ckpt.load(ffn + (f"time_maa_{m}" if maa else f"time_mix_{m}")).reshape(-1) for m in "kr"]
    pack.add("ffn.mu", np.stack(mixes if maa else [1.0 - m for m in mixes]))
    # key and receptance read the two planes of the same token mix: one buffer, one dispatch
    key, receptance = model.matrices(ckpt, [(ffn + "key.weight", False), (ffn + "receptance.weight", False)])
    return {"ffn_key": key, "ffn_value": model.matrix(ckpt, ffn + "value.weight"), "ffn_receptance": receptance}


class V4Model(Model):
    layers: list[V4Layer]

    def state_spec(self) -> StateSpec:
        c = self.info.num_emb
        return {"att_shift": (c,), "wkv": (3, c), "ffn_shift": (c,)}

    def initial_state(self) -> dict[str, np.ndarray]:
        if self._initial is None:
            init = super().initial_state()
            init["wkv"][:, 2, :] = -1e30  # pp: log-scale running maximum starts at "minus infinity"
        return super().initial_state()

    def load_layers(self, ckpt: Any, progress: Progress | None) -> None:
        self.layers = []
        for i in range(self.info.num_layer):
            att = f"blocks.{i}.att."
            pack = VectorPack()
            for name in ("ln1.weight", "ln1.bias"):
                pack.add(name, ckpt.load(f"blocks.{i}.{name}"))
            pack.add("att.mu", np.stack([1.0 - ckpt.load(att + f"time_mix_{m}").reshape(-1) for m in "rkv"]))
            pack.add("w", -np.exp(ckpt.load(att + "time_decay").astype(np.float64)))
            pack.add("u", ckpt.load(att + "time_first"))
            mats = {n: self.matrix(ckpt, f"{att}{n}.weight") for n in ("receptance", "key", "value", "output")}
            mats.update(load_ffn(self, ckpt, i, pack, maa=False))
            self.layers.append(V4Layer(vec=pack.upload(self.device, f"vec.{i}"), off=pack.off, **mats))
            if progress:
                progress(i + 1, self.info.num_layer, f"layer {i}")

    def alloc_layer_buffers(self, buf: Buffers) -> None:
        dev, c, t = self.device, self.info.num_emb, buf.tmax
        buf.mix = act_buffer(dev, t, c, "att.mix", planes=3)  # type: ignore[attr-defined]
        buf.tm = act_buffer(dev, t, c, "att.tm", planes=3)  # type: ignore[attr-defined]
        buf.y = act_buffer(dev, t, c, "att.y")  # type: ignore[attr-defined]
        self.alloc_gated_channel_mix(buf)

    def record_layer(self, g: Graph, i: int, state: State, buf: Buffers) -> None:
        lw, n, b, st = self.layers[i], buf.tokens, buf, state.layers[i]
        c = self.info.num_emb
        plane = buf.tmax * c
        bb: Any = b
        self.record_norm_shift(g, buf, state, lw.vec, lw.off, "ln1", st["att_shift"], "att.mu", bb.mix, 3, label=f"{i}.att")
        matmul(g, n, bb.mix.at(R * plane), lw.receptance, bb.tm.at(R * plane), act="sigmoid", label=f"{i}.att.r")
        matmul(g, n, bb.mix.at(K * plane), lw.key, bb.tm.at(K * plane), label=f"{i}.att.k")
        matmul(g, n, bb.mix.at(V * plane), lw.value, bb.tm.at(V * plane), label=f"{i}.att.v")
        time_mix_v4(g, n, buf.cursors, bb.tm.buffer, lw.vec, st["wkv"], bb.y.buffer,
                    c=c, plane=plane, slots=buf.slots, w_off=lw.off["w"], u_off=lw.off["u"], label=f"{i}.att.wkv")  # fmt: skip
        matmul(g, n, bb.y, lw.output, buf.x, accumulate=True, label=f"{i}.att.out")
        self.record_gated_channel_mix(g, buf, state, lw, st["ffn_shift"], f"{i}.ffn")
