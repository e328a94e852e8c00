"""RWKV-7 ("Goose"): weights and the block as a list of op calls.

Per layer (names as in the checkpoint, ``blocks.{i}.att.*`` / ``blocks.{i}.ffn.*``)::

    xx = ln1(x);  xr, xw, xk, xv, xa, xg = token_mix(xx, x_r..x_g)
    r = W_r xr;  w = w2 tanh(w1 xw);  k = W_k xk;  v = W_v xv
    a = a2 (a1 xa);  g = g2 sigmoid(g1 xg);  vgate = v2 (v1 xv)        (no v gate in layer 0)
    prepare(w, k, v, a) -> decay, kk, k, v;  y = wkv(r, decay, k, v, kk, a) -> ln_x, bonus, * g
    x += W_o y
    xx = ln2(x);  x += W_v' relu(W_k' token_mix(xx, x_k))^2
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..gpu import Act, Graph, Weight, act_buffer
from ..ops import (
    Product,
    matmul,
    matmul_group,
    time_mix_v7_decode,
    time_mix_v7_prepare,
    time_mix_v7_wkv,
)
from ..ops.time_mix_v7 import decode_lora, v7_params
from ..state import State, StateSpec
from .base import Buffers, Model, Progress, VectorPack

GN_EPS = 64e-5
MIX = ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g")  # planes of the att mix buffer, in this order
R, W, K, V, KK, A, G = range(7)  # planes of the time-mix buffer


@dataclass
class V7Layer:
    vec: Any
    off: dict[str, int]
    receptance: Weight
    key: Weight
    value: Weight
    output: Weight
    w1: Weight
    w2: Weight
    a1: Weight
    a2: Weight
    v1: Weight | None
    v2: Weight | None
    g1: Weight
    g2: Weight
    ffn_key: Weight
    ffn_value: Weight


class V7Model(Model):
    layers: list[V7Layer]
    fuse_decode = True  # decoding steps run the time mix after the first LoRA halves as one kernel

    def state_spec(self) -> StateSpec:
        c, h, n = self.info.num_emb, self.info.num_head, self.info.head_size
        return {"att_shift": (c,), "wkv": (h, n, n), "ffn_shift": (c,)}

    def load_layers(self, ckpt: Any, progress: Progress | None) -> None:
        self.layers = []
        L = self.info.num_layer
        for i in range(L):
            att, ffn = f"blocks.{i}.att.", f"blocks.{i}.ffn."
            pack = VectorPack()
            for name in ("ln1.weight", "ln1.bias", "ln2.weight", "ln2.bias"):
                pack.add(name, ckpt.load(f"blocks.{i}.{name}"))
            for j, name in enumerate(MIX):
                off = pack.add(name, ckpt.load(att + name))
                if j == 0:
                    pack.off["mix"] = off
            for name in ("w0", "a0", "k_k", "k_a", "r_k", "ln_x.weight", "ln_x.bias"):
                pack.add(name, ckpt.load(att + name))
            has_v = i > 0
            pack.add("v0", ckpt.load(att + "v0") if has_v else np.zeros(self.info.num_emb, np.float32))
            pack.add("ffn.x_k", ckpt.load(ffn + "x_k"))
            m = lambda name, t=False: self.matrix(ckpt, name, transpose=t)
            # the LoRA pairs are stored (in, out) in the checkpoint: transpose to (out, in).
            # Matrices that read the layer's token mix share one buffer, and so do the LoRA
            # second halves, so decoding runs each set as one dispatch.
            lora = ("w", "a", "v", "g") if has_v else ("w", "a", "g")
            first = self.matrices(ckpt, [(att + n, False) for n in ("receptance.weight", "key.weight", "value.weight")]
                                  + [(att + f"{x}1", True) for x in lora])  # fmt: skip
            second = dict(zip(lora, self.matrices(ckpt, [(att + f"{x}2", True) for x in lora])))
            ones = dict(zip(lora, first[3:]))
            self.layers.append(
                V7Layer(
                    vec=pack.upload(self.device, f"vec.{i}"),
                    off=pack.off,
                    receptance=first[0],
                    key=first[1],
                    value=first[2],
                    output=m(att + "output.weight"),
                    w1=ones["w"],
                    w2=second["w"],
                    a1=ones["a"],
                    a2=second["a"],
                    v1=ones.get("v"),
                    v2=second.get("v"),
                    g1=ones["g"],
                    g2=second["g"],
                    ffn_key=m(ffn + "key.weight"),
                    ffn_value=m(ffn + "value.weight"),
                )
            )
            if progress:
                progress(i + 1, L, f"layer {i}")

    def alloc_layer_buffers(self, buf: Buffers) -> None:
        dev, c, t = self.device, self.info.num_emb, buf.tmax
        plane = t * c
        buf.plane = plane  # type: ignore[attr-defined]
        buf.mix = act_buffer(dev, t, c, "att.mix", planes=len(MIX))  # type: ignore[attr-defined]
        buf.tm = act_buffer(dev, t, c, "att.tm", planes=7)  # type: ignore[attr-defined]
        # the LoRA first halves' outputs side by side: [T, Dw + Da + Dv + Dg]
        hid = max(sum(m.rows for m in (l.w1, l.a1, l.v1, l.g1) if m is not None) for l in self.layers)
        buf.hid = act_buffer(dev, t, hid, "att.lora")  # type: ignore[attr-defined]
        buf.vgate = act_buffer(dev, t, c, "att.vgate")  # type: ignore[attr-defined]
        buf.v_first = act_buffer(dev, t, c, "att.v_first")  # type: ignore[attr-defined]
        buf.y = act_buffer(dev, t, c, "att.y")  # type: ignore[attr-defined]
        buf.fmix = act_buffer(dev, t, c, "ffn.mix")  # type: ignore[attr-defined]
        buf.fk = act_buffer(dev, t, self.info.ffn_size, "ffn.key")  # type: ignore[attr-defined]

    def record_layer(self, g: Graph, i: int, state: State, buf: Buffers) -> None:
        lw, n, c = self.layers[i], buf.tokens, self.info.num_emb
        b: Any = buf
        plane = b.plane
        st = state.layers[i]
        o = lw.off
        self.record_norm_shift(g, buf, state, lw.vec, o, "ln1", st["att_shift"], "mix", b.mix, len(MIX), label=f"{i}.att")
        mix = lambda j: b.mix.at(j * plane)
        tm = lambda j: b.tm.at(j * plane)
        hw = b.hid.cols
        cols: dict[str, Act] = {}
        for name in ("w", "a", "v", "g"):
            one = getattr(lw, f"{name}1")
            if one is not None:
                cols[name] = Act(b.hid.buffer, one.rows, hw, sum(c.cols for c in cols.values()), buf.tmax)
        first = [
            Product(mix(0), lw.receptance, tm(R), label=f"{i}.att.r"),
            Product(mix(1), lw.w1, cols["w"], "tanh", label=f"{i}.att.w1"),
            Product(mix(2), lw.key, tm(K), label=f"{i}.att.k"),
            Product(mix(3), lw.value, tm(V), label=f"{i}.att.v"),
            Product(mix(4), lw.a1, cols["a"], label=f"{i}.att.a1"),
            Product(mix(5), lw.g1, cols["g"], "sigmoid", label=f"{i}.att.g1"),
        ]
        second = [
            Product(cols["w"], lw.w2, tm(W), label=f"{i}.att.w2"),
            Product(cols["a"], lw.a2, tm(A), label=f"{i}.att.a2"),
            Product(cols["g"], lw.g2, tm(G), label=f"{i}.att.g2"),
        ]
        if lw.v1 is not None and lw.v2 is not None:
            first.append(Product(mix(3), lw.v1, cols["v"], label=f"{i}.att.v1"))
            second.append(Product(cols["v"], lw.v2, b.vgate, label=f"{i}.att.v2"))
        matmul_group(g, n, first, label=f"{i}.att.mix_products")
        offsets = {k: o[k] for k in ("w0", "a0", "v0", "k_k", "k_a", "r_k")}
        offsets.update(lnw=o["ln_x.weight"], lnb=o["ln_x.bias"])
        h = self.info.num_head
        seconds = {name: getattr(lw, f"{name}2") for name in cols}
        # decoding steps: the LoRA second halves, prepare, wkv and norm as one dispatch
        lora = decode_lora(seconds, cols, c) if self.fuse_decode else None
        params = v7_params(c=c, h=h, plane=plane, slots=buf.slots, layer0=i == 0, offsets=offsets, eps=GN_EPS, lora=lora)
        if lora is not None:
            with g.only_when(lambda: buf.one_per_slot):
                time_mix_v7_decode(g, n, params, buf.cursors, b.tm.buffer, b.v_first.buffer, lw.vec, st["wkv"], b.y.buffer,
                                   b.hid.buffer, lora, heads=h, slots=buf.slots)  # fmt: skip
        with g.only_when(lambda: lora is None or not buf.one_per_slot):
            matmul_group(g, n, second, label=f"{i}.att.lora_out")
            time_mix_v7_prepare(g, n, params, b.tm.buffer, b.vgate.buffer, b.v_first.buffer, lw.vec, heads=h)
            time_mix_v7_wkv(g, n, params, buf.cursors, b.tm.buffer, lw.vec, st["wkv"], b.y.buffer, heads=h, slots=buf.slots)
        matmul(g, n, b.y, lw.output, buf.x, accumulate=True, label=f"{i}.att.out")
        self.record_norm_shift(g, buf, state, lw.vec, o, "ln2", st["ffn_shift"], "ffn.x_k", b.fmix, 1, label=f"{i}.ffn")
        matmul(g, n, b.fmix, lw.ffn_key, b.fk, act="relu_sq", label=f"{i}.ffn.key")
        matmul(g, n, b.fk, lw.ffn_value, buf.x, accumulate=True, label=f"{i}.ffn.value")
