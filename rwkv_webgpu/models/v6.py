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

from ..gpu import Act, Graph, act_buffer, upload_matrices
from ..ops import Product, matmul, matmul_group, norm_lora, token_mix, token_mix_lora
from ..ops.time_mix_v5 import DecayLora, decay_lora
from ..ops.token_shift import lora_fits, norm_lora_fits
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
        # the five mix LoRA second halves read slices of one hidden buffer: one buffer, one dispatch
        w2s = upload_matrices(self.device, [w2[j].T for j in range(len(MAA))], [f"{att}time_maa_w2[{j}]" for j in range(len(MAA))])
        extra = {
            "maa_w1": self.matrix(ckpt, att + "time_maa_w1", transpose=True),  # (5 Dm, C)
            "decay_w2": self.matrix(ckpt, att + "time_decay_w2", transpose=True),
            **{f"maa_w2_{m}": w for m, w in zip(MAA, w2s)},
        }
        return {"extra": extra}

    # None: GPUs only (lavapipe, 128-token chunk: 230 ms in `mix_lora` against 55 ms for the five
    # products and `mix`); True / False: on / off on every adapter (tests check both paths)
    mix_lora_prompts_forced: bool | None = None

    def mix_lora_prompts(self) -> bool:
        """Whether prompt steps also compute the mix LoRA second halves inside the mix kernel."""
        forced = self.mix_lora_prompts_forced
        return not self.device.info.cpu if forced is None else forced

    def mix_products(self, att: str) -> list[tuple[str, str, bool]]:
        return [*super().mix_products(att), ("decay_w1", att + "time_decay_w1", True)]

    def alloc_layer_buffers(self, buf: Buffers) -> None:
        super().alloc_layer_buffers(buf)
        dev, c, t = self.device, self.info.num_emb, buf.tmax
        extra = self.layers[0].extra or {}
        hid = max(extra["maa_w1"].rows, extra["decay_w1"].rows)
        buf.xxx = act_buffer(dev, t, c, "att.maa_x")  # type: ignore[attr-defined]
        buf.hid = act_buffer(dev, t, hid, "att.lora")  # type: ignore[attr-defined]
        buf.delta = act_buffer(dev, t, c, "att.maa_delta", planes=5)  # type: ignore[attr-defined]

    def decay_hid(self, i: int, buf: Buffers) -> Act:
        """The decay LoRA first half's output [T, D] (its second half's input)."""
        dd = (self.layers[i].extra or {})["decay_w1"].rows
        return Act(buf.hid.buffer, dd, dd, 0, buf.tmax)  # type: ignore[attr-defined]

    def decay_lora(self, i: int, buf: Buffers) -> DecayLora | None:
        if not self.fuse_decode:
            return None
        return decay_lora((self.layers[i].extra or {})["decay_w2"], self.decay_hid(i, buf), self.info.num_emb)

    def record_projections(self, g: Graph, i: int, state: State, buf: Buffers) -> None:
        lw, n = self.layers[i], buf.tokens
        bb: Any = buf
        ex = lw.extra or {}
        plane = buf.tmax * self.info.num_emb
        shift = state.layers[i]["att_shift"]
        dm5 = ex["maa_w1"].rows
        dm = dm5 // 5
        o = lw.off
        hid = Act(bb.hid.buffer, dm5, dm5, 0, buf.tmax)
        # decoding steps: the norm, the maa_x mix and the mix LoRA first half as one kernel (a hook
        # on the normed row needs them apart)
        first = self.fuse_decode and norm_lora_fits(ex["maa_w1"], self.info.num_emb) and not self.hooks.active(f"{i}.att.norm")
        if first:
            with g.only_when(lambda: self.lora_inside(buf)):
                norm_lora(g, n, buf.cursors, buf.x, buf.xn, shift, lw.vec, o["ln1.weight"], o["ln1.bias"], o["att.maa_x"],
                          ex["maa_w1"], hid, slots=buf.slots, eps=LN_EPS, label=f"{i}.att.ln1_lora")  # fmt: skip
        with g.only_when(lambda: not (first and self.lora_inside(buf))):
            # the saved row is replaced by the second mix below, which reads the same normed rows
            self.record_norm_shift(g, buf, state, lw.vec, o, "ln1", shift, "att.maa_x", bb.xxx, 1, store=False,
                                   label=f"{i}.att")  # fmt: skip
            matmul(g, n, bb.xxx, ex["maa_w1"], hid, act="tanh", label=f"{i}.att.maa_w1")
        w2 = [ex[f"maa_w2_{m}"] for m in MAA]
        # the LoRA second halves inside the mix kernel (prompts too: K = D is too short for the tiles)
        fused = lora_fits(w2, self.info.num_emb)
        in_mix = lambda: fused and (buf.one_per_slot or self.mix_lora_prompts())
        if fused:
            with g.only_when(in_mix):
                token_mix_lora(g, n, buf.cursors, buf.xn, shift, lw.vec, o["att.mu"], bb.mix, w2=w2, hid=hid,
                               slots=buf.slots, plane=plane, store=True, label=f"{i}.att.mix_lora")  # fmt: skip
        with g.only_when(lambda: not in_mix()):
            deltas = [Product(Act(bb.hid.buffer, dm, dm5, j * dm, buf.tmax), w, bb.delta.at(j * plane),
                              label=f"{i}.att.maa_w2.{m}") for j, (m, w) in enumerate(zip(MAA, w2))]  # fmt: skip
            matmul_group(g, n, deltas, label=f"{i}.att.maa_w2")
            token_mix(g, n, buf.cursors, buf.xn, shift, lw.vec, o["att.mu"], bb.mix, mixes=5, slots=buf.slots,
                      plane=plane, delta=bb.delta.buffer, store=True, label=f"{i}.att.mix")  # fmt: skip
        mix = lambda m: bb.mix.at(MAA.index(m) * plane)
        tm = lambda m: bb.tm.at(TO_PLANE[m] * plane)
        assert lw.gate is not None
        dhid = self.decay_hid(i, buf)
        matmul_group(g, n, [
            Product(mix("r"), lw.receptance, tm("r"), label=f"{i}.att.r"),
            Product(mix("k"), lw.key, tm("k"), label=f"{i}.att.k"),
            Product(mix("v"), lw.value, tm("v"), label=f"{i}.att.v"),
            Product(mix("g"), lw.gate, tm("g"), "silu", label=f"{i}.att.g"),
            Product(mix("w"), ex["decay_w1"], dhid, "tanh", label=f"{i}.att.decay_w1"),
        ], label=f"{i}.att.mix_products")  # fmt: skip
        # decoding steps: the one-token time-mix kernel computes the second half itself
        inside = self.decay_lora(i, buf) is not None
        with g.only_when(lambda: not (inside and self.lora_inside(buf))):
            matmul(g, n, dhid, ex["decay_w2"], tm("w"), label=f"{i}.att.decay_w2")
