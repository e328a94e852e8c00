"""The one table of tensor renames: official (RWKV-LM ``.pth``) names <-> web-rwkv ``.st`` names.

web-rwkv's ``convert_safetensors.py`` renames (substring replace, in this order, then the whole
name is lower-cased) and swaps the last two dimensions of every tensor whose *new* name contains
one of :data:`TRANSPOSED`. Everything else in the library sees official names and shapes only.

Going back is not a plain inverse: ``time_first`` and ``time_mix_k/v/r`` are legitimate V4 (and
V5 ``time_mix_*``) names, so :func:`detect_layout` and :class:`WebRwkvNames` decide from the
file as a whole which renames were applied.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping

from ..errors import CheckpointError

# official substring -> web-rwkv substring, applied in this order
RENAMES: tuple[tuple[str, str], ...] = (
    ("time_faaaa", "time_first"),
    ("time_maa", "time_mix"),
    ("lora_A", "lora.0"),
    ("lora_B", "lora.1"),
)

# a web-rwkv name containing any of these holds the tensor with its last two dims swapped
TRANSPOSED: tuple[str, ...] = (
    "time_mix_w1", "time_mix_w2", "time_decay_w1", "time_decay_w2",
    "w1", "w2", "a1", "a2", "g1", "g2", "v1", "v2",
    "time_state", "lora.0",
)  # fmt: skip


class Layout(enum.Enum):
    OFFICIAL = "official"
    WEB_RWKV = "web-rwkv"


# safetensors metadata key our writer sets, so our own files never need guessing
LAYOUT_KEY = "rwkv_layout"


def to_webrwkv(name: str) -> str:
    """Official name -> the name web-rwkv's converter gives it."""
    for old, new in RENAMES:
        name = name.replace(old, new)
    return name.lower()


def is_transposed(webrwkv_name: str) -> bool:
    """Whether web-rwkv stores this tensor with its last two dimensions swapped."""
    return any(t in webrwkv_name for t in TRANSPOSED)


def swap_last2(shape: tuple[int, ...]) -> tuple[int, ...]:
    return shape if len(shape) < 2 else (*shape[:-2], shape[-1], shape[-2])


def _v7_lora_layout(shapes: Mapping[str, tuple[int, ...]]) -> Layout | None:
    """V7 renames nothing, so only the orientation of ``w1`` (official (C, D)) tells."""
    emb = shapes.get("emb.weight")
    if emb is None or len(emb) != 2:
        return None
    c = emb[1]
    for name, shape in shapes.items():
        if name.endswith(".att.w1") and len(shape) == 2 and shape[0] != shape[1]:
            if shape[0] == c:
                return Layout.OFFICIAL
            if shape[1] == c:
                return Layout.WEB_RWKV
    return None


def detect_layout(
    shapes: Mapping[str, tuple[int, ...]],
    suffix: str = "",
    metadata: Mapping[str, str] | None = None,
) -> Layout:
    """Which naming a safetensors file uses, from its metadata, names and shapes.

    ``suffix`` (".st" or ".safetensors") breaks ties only where nothing else can: a V7 file
    whose LoRA width equals C, an RWKV-5.0 file, or a file holding only a ``time_state``.
    """
    tagged = (metadata or {}).get(LAYOUT_KEY)
    if tagged in (Layout.OFFICIAL.value, Layout.WEB_RWKV.value):
        return Layout(tagged)
    names = list(shapes)
    if any(m in n for n in names for m in ("time_maa", "time_faaaa", "lora_A", "lora_B")):
        return Layout.OFFICIAL
    if any(m in n for n in names for m in ("time_mix_x", "time_mix_w1", "lora.0", "lora.1")):
        return Layout.WEB_RWKV
    if any(".ln_x." in n for n in names):
        firsts = [s for n, s in shapes.items() if n.endswith(".att.time_first")]
        # V5 renamed time_faaaa; an official (H,) time_first is the log-space RWKV-5.0 one
        if firsts and (len(firsts[0]) > 1 or suffix == ".st"):
            return Layout.WEB_RWKV
        found = _v7_lora_layout(shapes)
        if found is not None:
            return found
    return Layout.WEB_RWKV if suffix == ".st" else Layout.OFFICIAL


class WebRwkvNames:
    """Maps the names of one web-rwkv file back to official names."""

    def __init__(self, webrwkv_names: Iterable[str]) -> None:
        names = list(webrwkv_names)
        # V6 renamed every time_maa_*; only V5/V6/V7 have ln_x (V4 keeps its own time_first)
        self._maa = any("time_mix_x" in n or "time_mix_w1" in n for n in names)
        self._faaaa = any(".ln_x." in n for n in names)
        self.official_of = {n: self.to_official(n) for n in names}
        if len(set(self.official_of.values())) != len(names):
            raise CheckpointError("two tensors map to the same official name")

    def to_official(self, name: str) -> str:
        name = name.replace("lora.0", "lora_A").replace("lora.1", "lora_B")
        if self._faaaa:
            name = name.replace("time_first", "time_faaaa")
        if self._maa:
            name = name.replace("time_mix", "time_maa")
        return name
