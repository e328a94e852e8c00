"""Find the RWKV version and dimensions of a checkpoint from its tensor names and shapes.

Every tensor the version needs is then checked against :func:`expected_shapes` (exact
official PyTorch shapes), so model code can trust what it loads.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

from ..config import ModelInfo, Version
from ..errors import CheckpointError, ShapeError, UnknownVersionError
from .checkpoint import Checkpoint

log = logging.getLogger(__name__)

_BLOCK = re.compile(r"^blocks\.(\d+)\.")


def _version(names: Iterable[str]) -> Version:
    ends = {n.split(".", 2)[-1] for n in names if n.startswith("blocks.")}
    if "att.r_k" in ends or "att.x_r" in ends:
        return Version.V7
    if "att.time_maa_x" in ends:
        return Version.V6
    if "att.ln_x.weight" in ends and ends & {"att.time_faaaa", "att.time_first"}:
        return Version.V5
    if "att.time_first" in ends and "att.time_mix_k" in ends:
        return Version.V4
    raise UnknownVersionError(
        "tensor names match no known RWKV layout (V4-V7); some names: "
        + ", ".join(sorted(names)[:8])
    )


def _shape(ckpt: Checkpoint, name: str) -> tuple[int, ...]:
    if name not in ckpt:
        raise CheckpointError(f"{ckpt.path}: missing tensor {name!r}")
    return ckpt.shape(name)


def _dim(ckpt: Checkpoint, name: str, axis: int, ndim: int) -> int:
    shape = _shape(ckpt, name)
    if len(shape) != ndim:
        raise ShapeError(f"{ckpt.path}: tensor {name!r} should have {ndim} dims, has shape {shape}")
    return shape[axis]


def _heads(ckpt: Checkpoint, version: Version, c: int) -> tuple[int, int]:
    """(H, N): V4 has one head of size C; V5/V6 read H from time_faaaa, V7 reads (H, N) from r_k."""
    if version is Version.V4:
        return 1, c
    if version is Version.V7:
        h, n = (_dim(ckpt, "blocks.0.att.r_k", i, 2) for i in (0, 1))
    else:
        name = "blocks.0.att.time_faaaa"
        if name not in ckpt and version is Version.V5:
            name = "blocks.0.att.time_first"  # RWKV-5.0 (log-space first bonus)
        h = _shape(ckpt, name)[0]
        n = c // h if h else 0
    if h * n != c or h == 0:
        raise ShapeError(f"{ckpt.path}: {h} heads do not divide the embedding size C={c}")
    return h, n


def _v5_sub_version(ckpt: Checkpoint) -> str:
    # the official rule (rwkv pip model.py): a gate means >= 5.1; a per-channel decay means 5.2
    if "blocks.0.att.gate.weight" not in ckpt:
        return "5.0"
    decay = _shape(ckpt, "blocks.0.att.time_decay")
    return "5.2" if len(decay) > 1 and decay[1] > 1 else "5.1"


def _lora_width(ckpt: Checkpoint, name: str, c: int, multiple: int = 1) -> int:
    """Rank D of a LoRA down-projection, official shape (C, multiple * D)."""
    shape = _shape(ckpt, name)
    if len(shape) != 2 or shape[0] != c or shape[1] % multiple:
        want = f"({c}, {multiple} * rank)" if multiple > 1 else f"({c}, rank)"
        raise ShapeError(f"{ckpt.path}: tensor {name!r} should be {want}, is {shape}")
    return shape[1] // multiple


def _lora_ranks(
    ckpt: Checkpoint, version: Version, c: int, num_layer: int
) -> tuple[tuple[str, int], ...]:
    att = "blocks.0.att."
    if version is Version.V6:
        return (
            ("time_maa", _lora_width(ckpt, att + "time_maa_w1", c, multiple=5)),
            ("time_decay", _lora_width(ckpt, att + "time_decay_w1", c)),
        )
    if version is Version.V7:
        ranks = [(k, _lora_width(ckpt, f"{att}{k}1", c)) for k in ("w", "a", "g")]
        # block 0 has no v-LoRA (it makes v_first instead)
        v = _lora_width(ckpt, "blocks.1.att.v1", c) if num_layer > 1 else 0
        return (*ranks, ("v", v))
    return ()


def detect(ckpt: Checkpoint) -> ModelInfo:
    """Version and dimensions of ``ckpt``, after checking every tensor the version needs.

    Raises UnknownVersionError (layout not recognised), CheckpointError (a tensor missing)
    or ShapeError (a tensor with the wrong shape).
    """
    names = ckpt.names()
    version = _version(names)
    v, c = (_dim(ckpt, "emb.weight", i, 2) for i in (0, 1))
    num_layer = 1 + max(int(m.group(1)) for m in map(_BLOCK.match, names) if m)
    h, n = _heads(ckpt, version, c)
    info = ModelInfo(
        version=version,
        num_layer=num_layer,
        num_emb=c,
        num_head=h,
        head_size=n,
        num_vocab=v,
        ffn_size=_dim(ckpt, "blocks.0.ffn.key.weight", 0, 2),
        sub_version=_v5_sub_version(ckpt) if version is Version.V5 else "",
        has_time_state="blocks.0.att.time_state" in ckpt,
        lora_ranks=_lora_ranks(ckpt, version, c, num_layer),
    )
    expected = expected_shapes(info)
    if version is Version.V5 and "blocks.0.att.time_faaaa" not in ckpt:
        expected = {k.replace("time_faaaa", "time_first"): s for k, s in expected.items()}
    _check(ckpt, expected)
    extra = set(names) - set(expected)
    if extra:
        log.debug("%s: ignoring %d unused tensors, e.g. %s", ckpt.path, len(extra), min(extra))
    log.info("%s: %s", ckpt.path, info.describe())
    return info


def _check(ckpt: Checkpoint, expected: dict[str, tuple[int, ...]]) -> None:
    missing = [name for name in expected if name not in ckpt]
    if missing:
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise CheckpointError(f"{ckpt.path}: missing tensor(s) {', '.join(missing[:5])}{more}")
    for name, shape in expected.items():
        actual = ckpt.shape(name)
        if actual != shape:
            raise ShapeError(f"{ckpt.path}: tensor {name!r} should be {shape}, is {actual}")


def expected_shapes(info: ModelInfo) -> dict[str, tuple[int, ...]]:
    """Every tensor a model of ``info`` needs, with its official PyTorch shape.

    V5 names its first bonus ``time_faaaa`` here; a 5.0 checkpoint may carry the log-space
    ``time_first`` of the same shape instead (bonus u = exp(time_first)).
    """
    c, v = info.num_emb, info.num_vocab
    out: dict[str, tuple[int, ...]] = {
        "emb.weight": (v, c),
        "blocks.0.ln0.weight": (c,),
        "blocks.0.ln0.bias": (c,),
    }
    for i in range(info.num_layer):
        for ln in ("ln1", "ln2"):
            out[f"blocks.{i}.{ln}.weight"] = (c,)
            out[f"blocks.{i}.{ln}.bias"] = (c,)
        out.update({f"blocks.{i}.att.{k}": s for k, s in _att_shapes(info, i).items()})
        out.update({f"blocks.{i}.ffn.{k}": s for k, s in _ffn_shapes(info).items()})
    out.update({"ln_out.weight": (c,), "ln_out.bias": (c,), "head.weight": (v, c)})
    return out


def _att_shapes(info: ModelInfo, layer: int) -> dict[str, tuple[int, ...]]:
    c, h, n = info.num_emb, info.num_head, info.head_size
    vec, mat = (1, 1, c), (c, c)
    out: dict[str, tuple[int, ...]] = {}
    mats: tuple[str, ...]
    if info.version is Version.V4:
        out = {"time_decay": (c,), "time_first": (c,)}
        out.update({f"time_mix_{x}": vec for x in "kvr"})
        mats = ("key", "value", "receptance", "output")
    elif info.version is Version.V5:
        gated = info.sub_version != "5.0"
        per_head = (h, n) if info.sub_version == "5.2" else (h,)
        out = {f"time_mix_{x}": vec for x in ("kvrg" if gated else "kvr")}
        out.update({"time_decay": per_head, "time_faaaa": per_head})
        mats = (
            ("receptance", "key", "value", "gate", "output")
            if gated
            else ("receptance", "key", "value", "output")
        )
    elif info.version is Version.V6:
        dm, dd = info.lora_rank("time_maa"), info.lora_rank("time_decay")
        out = {f"time_maa_{x}": vec for x in "xwkvrg"}
        out.update({"time_maa_w1": (c, 5 * dm), "time_maa_w2": (5, dm, c)})
        out.update({"time_decay": vec, "time_decay_w1": (c, dd), "time_decay_w2": (dd, c)})
        out["time_faaaa"] = (h, n)
        mats = ("receptance", "key", "value", "gate", "output")
    else:
        out = {f"x_{x}": vec for x in "rwkvag"}
        for lora in ("w", "a", "v", "g"):
            if lora == "v" and layer == 0:
                continue  # block 0 makes v_first instead of mixing it in
            rank = info.lora_rank(lora)
            if lora != "g":
                out[f"{lora}0"] = vec
            out.update({f"{lora}1": (c, rank), f"{lora}2": (rank, c)})
        out.update({"k_k": vec, "k_a": vec, "r_k": (h, n)})
        mats = ("receptance", "key", "value", "output")
    out.update({f"{m}.weight": mat for m in mats})
    if info.version is not Version.V4:
        out.update({"ln_x.weight": (c,), "ln_x.bias": (c,)})
    if info.has_time_state:
        out["time_state"] = (h, n, n)
    return out


def _ffn_shapes(info: ModelInfo) -> dict[str, tuple[int, ...]]:
    c, f = info.num_emb, info.ffn_size
    vec = (1, 1, c)
    if info.version is Version.V7:
        return {"x_k": vec, "key.weight": (f, c), "value.weight": (c, f)}
    mix = "time_maa" if info.version is Version.V6 else "time_mix"
    return {
        f"{mix}_k": vec,
        f"{mix}_r": vec,
        "key.weight": (f, c),
        "receptance.weight": (c, c),
        "value.weight": (c, f),
    }
