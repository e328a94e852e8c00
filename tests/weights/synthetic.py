"""Tiny synthetic RWKV state dicts (official names and shapes), written out independently of
rwkv_webgpu.weights.detect so the tests do not check the code against itself."""

from __future__ import annotations

import numpy as np

from rwkv_webgpu.weights import save_safetensors

L, C, H, N, V, F = 2, 8, 2, 4, 11, 16
DM, DD = 3, 5  # V6 LoRA widths
DW, DA, DV, DG = 3, 4, 2, 6  # V7 LoRA widths


def _common(att: dict, ffn: dict) -> dict[str, tuple[int, ...]]:
    out: dict[str, tuple[int, ...]] = {
        "emb.weight": (V, C),
        "blocks.0.ln0.weight": (C,),
        "blocks.0.ln0.bias": (C,),
    }
    for i in range(L):
        for ln in ("ln1", "ln2"):
            out[f"blocks.{i}.{ln}.weight"] = (C,)
            out[f"blocks.{i}.{ln}.bias"] = (C,)
        layer_att = att(i) if callable(att) else att
        out.update({f"blocks.{i}.att.{k}": s for k, s in layer_att.items()})
        out.update({f"blocks.{i}.ffn.{k}": s for k, s in ffn.items()})
    out.update({"ln_out.weight": (C,), "ln_out.bias": (C,), "head.weight": (V, C)})
    return out


_FFN = {
    "time_mix_k": (1, 1, C),
    "time_mix_r": (1, 1, C),
    "key.weight": (F, C),
    "receptance.weight": (C, C),
    "value.weight": (C, F),
}


def v4() -> dict[str, tuple[int, ...]]:
    att = {
        "time_decay": (C,),
        "time_first": (C,),
        "time_mix_k": (1, 1, C),
        "time_mix_v": (1, 1, C),
        "time_mix_r": (1, 1, C),
        "key.weight": (C, C),
        "value.weight": (C, C),
        "receptance.weight": (C, C),
        "output.weight": (C, C),
    }
    return _common(att, _FFN)


def v5(sub: str) -> dict[str, tuple[int, ...]]:
    per_head = (H, N) if sub == "5.2" else (H,)
    att = {
        "time_mix_k": (1, 1, C),
        "time_mix_v": (1, 1, C),
        "time_mix_r": (1, 1, C),
        "time_decay": per_head,
        "time_first" if sub == "5.0" else "time_faaaa": per_head,
        "receptance.weight": (C, C),
        "key.weight": (C, C),
        "value.weight": (C, C),
        "output.weight": (C, C),
        "ln_x.weight": (C,),
        "ln_x.bias": (C,),
    }
    if sub != "5.0":
        att.update({"time_mix_g": (1, 1, C), "gate.weight": (C, C)})
    return _common(att, _FFN)


def v6(time_state: bool = False) -> dict[str, tuple[int, ...]]:
    att = {f"time_maa_{x}": (1, 1, C) for x in "xwkvrg"}
    att.update(
        {
            "time_maa_w1": (C, 5 * DM),
            "time_maa_w2": (5, DM, C),
            "time_decay": (1, 1, C),
            "time_decay_w1": (C, DD),
            "time_decay_w2": (DD, C),
            "time_faaaa": (H, N),
            **{f"{m}.weight": (C, C) for m in ("receptance", "key", "value", "gate", "output")},
            "ln_x.weight": (C,),
            "ln_x.bias": (C,),
        }
    )
    if time_state:
        att["time_state"] = (H, N, N)
    ffn = {
        "time_maa_k": (1, 1, C),
        "time_maa_r": (1, 1, C),
        "key.weight": (F, C),
        "receptance.weight": (C, C),
        "value.weight": (C, F),
    }
    return _common(att, ffn)


def v7(time_state: bool = False) -> dict[str, tuple[int, ...]]:
    def att(i: int) -> dict[str, tuple[int, ...]]:
        a = {f"x_{x}": (1, 1, C) for x in "rwkvag"}
        a.update(
            {
                "w0": (1, 1, C), "w1": (C, DW), "w2": (DW, C),
                "a0": (1, 1, C), "a1": (C, DA), "a2": (DA, C),
                "g1": (C, DG), "g2": (DG, C),
                "k_k": (1, 1, C), "k_a": (1, 1, C), "r_k": (H, N),
                **{f"{m}.weight": (C, C) for m in ("receptance", "key", "value", "output")},
                "ln_x.weight": (C,), "ln_x.bias": (C,),
            }
        )  # fmt: skip
        if i > 0:
            a.update({"v0": (1, 1, C), "v1": (C, DV), "v2": (DV, C)})
        if time_state:
            a["time_state"] = (H, N, N)
        return a

    return _common(att, {"x_k": (1, 1, C), "key.weight": (4 * C, C), "value.weight": (C, 4 * C)})


def arrays(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}


def write(path, shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, np.ndarray]:
    """Write random fp32 tensors of ``shapes`` with official names; return them."""
    tensors = arrays(shapes, seed)
    save_safetensors(tensors, str(path))
    return tensors
