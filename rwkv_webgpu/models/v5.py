"""RWKV-5 (5.0, 5.1, 5.2): weights and the block as a list of op calls.

Per layer::

    xx = ln1(x);  xr, xk, xv, xg = token_mix(xx, 1 - time_mix_{r,k,v,g})
    r, k, v = W_r xr, W_k xk, W_v xv;  g = silu(W_g xg)               (no gate in 5.0)
    y = group_norm(wkv(r, k, v; w = exp(-exp(time_decay)), u = time_faaaa)) * g
    x += W_o y;  x += channel_mix(ln2(x))
Sub-versions differ only in weights: 5.0 has no gate and keeps u as log(time_first);
5.0/5.1 share one decay and bonus per head ((H,) tensors), 5.2 has one per channel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..gpu import Graph, Weight, act_buffer
from ..ops import Product, matmul, matmul_group, time_mix_v5
from ..ops.time_mix_v5 import DecayLora
from ..state import State, StateSpec
from .base import Buffers, Model, Progress, VectorPack
from .v4 import load_ffn

GN_EPS = 64e-5
# Decoding steps of fewer tokens than this compute RWKV-6's LoRA halves inside the fused kernels
# (token_shift `norm_lora`, the time mix's `decode`); bigger batches keep the products, which read
# each weight once for all their tokens (H100: batch 8 gained, 32 and 64 lost 2-5% fused).
LORA_INSIDE_UNTIL = 16
R, W, K, V, G = range(5)  # planes of the time-mix buffer


@dataclass
class V5Layer:
    vec: Any
    off: dict[str, int]
    receptance: Weight
    key: Weight
    value: Weight
    output: Weight
    gate: Weight | None
    ffn_key: Weight
    ffn_value: Weight
    ffn_receptance: Weight
    extra: dict[str, Weight] | None = None  # version-specific matrices (V6's LoRAs)


class V5Model(Model):
    layers: list[V5Layer]
    dynamic_decay = False
    fuse_decode = True  # decoding steps run the WKV and its group norm as one kernel

    def state_spec(self) -> StateSpec:
        c, h, n = self.info.num_emb, self.info.num_head, self.info.head_size
        return {"att_shift": (c,), "wkv": (h, n, n), "ffn_shift": (c,)}

    def per_channel(self, values: np.ndarray) -> np.ndarray:
        """A per-head (H,) or per-channel (H, N) tensor as C values."""
        flat = np.asarray(values, np.float64).reshape(-1)
        return np.repeat(flat, self.info.head_size) if flat.size == self.info.num_head else flat

    def load_att(self, ckpt: Any, i: int, pack: VectorPack) -> dict[str, Any]:
        att = f"blocks.{i}.att."
        gated = self.info.sub_version != "5.0"
        mixes = "rkvg" if gated else "rkv"
        pack.add("att.mu", np.stack([1.0 - ckpt.load(att + f"time_mix_{m}").reshape(-1) for m in mixes]))
        pack.add("decay", np.exp(-np.exp(self.per_channel(ckpt.load(att + "time_decay")))))
        if att + "time_faaaa" in ckpt:
            pack.add("u", self.per_channel(ckpt.load(att + "time_faaaa")))
        else:  # 5.0 stores the bonus in log space
            pack.add("u", np.exp(self.per_channel(ckpt.load(att + "time_first"))))
        return {}

    def mix_products(self, att: str) -> list[tuple[str, str, bool]]:
        """(field, checkpoint name, transpose) of the matrices that read the att token mix; they
        share one buffer so decoding runs them as one dispatch."""
        names = [(n, f"{att}{n}.weight", False) for n in ("receptance", "key", "value")]
        if self.info.sub_version != "5.0":
            names.append(("gate", att + "gate.weight", False))
        return names

    def load_layers(self, ckpt: Any, progress: Progress | None) -> None:
        self.layers = []
        for i in range(self.info.num_layer):
            att = f"blocks.{i}.att."
            pack = VectorPack()
            for name in ("ln1.weight", "ln1.bias"):
                pack.add(name, ckpt.load(f"blocks.{i}.{name}"))
            mats = self.load_att(ckpt, i, pack)
            for name in ("ln_x.weight", "ln_x.bias"):
                pack.add(name, ckpt.load(att + name))
            first = self.mix_products(att)
            loaded = dict(zip([f for f, *_ in first], self.matrices(ckpt, [(n, t) for _, n, t in first])))
            for field in ("receptance", "key", "value", "gate"):
                mats[field] = loaded.pop(field, None)
            if loaded:
                mats["extra"] = {**mats.get("extra", {}), **loaded}
            mats["output"] = self.matrix(ckpt, att + "output.weight")
            mats.update(load_ffn(self, ckpt, i, pack, maa=self.dynamic_decay))
            self.layers.append(V5Layer(vec=pack.upload(self.device, f"vec.{i}"), off=pack.off, **mats))
            if progress:
                progress(i + 1, self.info.num_layer, f"layer {i}")

    def alloc_layer_buffers(self, buf: Buffers) -> None:
        dev, c, t = self.device, self.info.num_emb, buf.tmax
        buf.mix = act_buffer(dev, t, c, "att.mix", planes=5)  # type: ignore[attr-defined]
        buf.tm = act_buffer(dev, t, c, "att.tm", planes=5)  # type: ignore[attr-defined]
        buf.y = act_buffer(dev, t, c, "att.y")  # type: ignore[attr-defined]
        self.alloc_gated_channel_mix(buf)

    def record_projections(self, g: Graph, i: int, state: State, buf: Buffers) -> None:
        """Fill the tm planes r, k, v, g (V5: from a plain token mix)."""
        lw, n, b = self.layers[i], buf.tokens, buf
        bb: Any = b
        plane = buf.tmax * self.info.num_emb
        mixes = 4 if lw.gate is not None else 3
        self.record_norm_shift(g, buf, state, lw.vec, lw.off, "ln1", state.layers[i]["att_shift"], "att.mu", bb.mix, mixes,
                               label=f"{i}.att")  # fmt: skip
        products = [Product(bb.mix.at(j * plane), m, bb.tm.at(out * plane), label=f"{i}.att.{'rkv'[j]}")
                    for j, (m, out) in enumerate(((lw.receptance, R), (lw.key, K), (lw.value, V)))]  # fmt: skip
        if lw.gate is not None:
            products.append(Product(bb.mix.at(3 * plane), lw.gate, bb.tm.at(G * plane), "silu", label=f"{i}.att.g"))
        matmul_group(g, n, products, label=f"{i}.att.mix_products")

    # None: GPUs only (CPU adapters keep the products: lavapipe 14.5 -> 10.1 tok/s inside);
    # True / False: on / off on every adapter (tests check both paths wherever they run)
    lora_inside_forced: bool | None = None

    def lora_inside(self, buf: Buffers) -> bool:
        """Whether this step computes RWKV-6's LoRA halves inside the fused decoding kernels."""
        if self.lora_inside_forced is False or (self.device.info.cpu and not self.lora_inside_forced):
            return False
        return buf.one_per_slot and buf.tokens.value < LORA_INSIDE_UNTIL

    def decay_lora(self, i: int, buf: Buffers) -> DecayLora | None:
        """Where the one-token time-mix kernel finds layer i's decay LoRA second half (RWKV-6),
        or None: the w plane holds the decay (or there is none)."""
        return None

    def record_layer(self, g: Graph, i: int, state: State, buf: Buffers) -> None:
        lw, n, st = self.layers[i], buf.tokens, state.layers[i]
        bb: Any = buf
        self.record_projections(g, i, state, buf)
        o = lw.off
        time_mix_v5(g, n, buf.cursors, bb.tm.buffer, lw.vec, st["wkv"], bb.y.buffer,
                    c=self.info.num_emb, heads=self.info.num_head, plane=buf.tmax * self.info.num_emb,
                    slots=buf.slots, dynamic_decay=self.dynamic_decay, gated=lw.gate is not None,
                    offsets={"decay": o["decay"], "u": o["u"], "lnw": o["ln_x.weight"], "lnb": o["ln_x.bias"]},
                    eps=GN_EPS, label=f"{i}.att.wkv", decode=(lambda: buf.one_per_slot) if self.fuse_decode else None,
                    lora=self.decay_lora(i, buf), lora_when=lambda: self.lora_inside(buf))  # fmt: skip
        matmul(g, n, bb.y, lw.output, buf.x, accumulate=True, label=f"{i}.att.out")
        self.record_gated_channel_mix(g, buf, state, lw, st["ffn_shift"], f"{i}.ffn")
