"""Prefab files: a model as the engine stores it (LoRAs merged, matrices quantized), saved to
one safetensors file so it loads again without redoing that work, giving identical logits.

Layout: every tensor under its official name, except quantized matrices, stored as
``<name>.qcodes`` (u32) and ``<name>.qscales`` (f32) with their shape and kind in the metadata
(``quantized``: name -> [rows, k, kind]; files from before mixes were possible give one kind for
all in ``quant`` and [rows, k] per matrix).
Tensors are stored in f16 where that is exact, else f32 (the loader converts matrices to f16
either way, so the GPU sees the same values as from the original checkpoint).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from ..errors import CheckpointError, ConfigError
from .quant import INT8_BLOCK, Q4_BLOCK, Quant, QuantizedMatrix, QuantPlan, quant_for, quantize
from .safetensors_io import TensorSpec, tag_of, write_safetensors

FORMAT = "rwkv-webgpu-prefab"


def save_prefab(ckpt: Any, path: str | os.PathLike[str], *, quant: QuantPlan | Quant | str | None = None,
                quant_layers: Iterable[int] | None = None, num_layer: int = 0,
                extra_meta: dict[str, str] | None = None,
                progress: Callable[[int, int, str], None] | None = None) -> None:  # fmt: skip
    """Write ``ckpt`` (any Checkpoint-like view, e.g. with LoRAs merged) as a prefab file,
    quantizing what ``quant`` (a :class:`QuantPlan` or what it parses) selects in ``quant_layers``."""
    layers = set(range(num_layer)) if quant_layers is None else set(quant_layers)
    wanted = QuantPlan.parse(quant)
    quantized: dict[str, list[Any]] = {}
    specs: list[TensorSpec] = []
    cache: dict[str, Any] = {}
    for name in ckpt.names():
        ready = ckpt.quantized(name) if hasattr(ckpt, "quantized") else None  # a prefab's own
        kind = ready.quant if ready is not None else quant_for(name, wanted, layers)
        if kind is not Quant.NONE:
            rows, k = ckpt.shape(name)
            qm = ready if ready is not None else quantize(ckpt.load(name, np.float32), kind)
            cache[name] = qm
            quantized[name] = [rows, k, kind.value]
            specs.append(TensorSpec(f"{name}.qcodes", "u32", tuple(qm.codes.shape)))
            specs.append(TensorSpec(f"{name}.qscales", "f32", tuple(qm.scales.shape)))
        else:
            arr = ckpt.load(name, np.float32)
            half = arr.astype(np.float16)
            keep = half if np.array_equal(half.astype(np.float32), arr) else arr
            cache[name] = keep
            specs.append(TensorSpec(name, tag_of(keep.dtype), tuple(keep.shape)))
    kinds = sorted({kind for *_, kind in quantized.values()})
    meta = {"format": FORMAT, "quant": kinds[0] if len(kinds) == 1 else "mixed" if kinds else "none",
            "quantized": json.dumps(quantized)}  # fmt: skip
    meta.update(extra_meta or {})

    def produce(spec: TensorSpec) -> np.ndarray:
        if spec.name.endswith(".qcodes"):
            return cache[spec.name[: -len(".qcodes")]].codes
        if spec.name.endswith(".qscales"):
            return cache.pop(spec.name[: -len(".qscales")]).scales
        return cache.pop(spec.name)

    write_safetensors(os.fspath(path), specs, produce, meta, progress)


class PrefabView:
    """Wraps the Checkpoint of a prefab file: quantized matrices appear under their official
    names (with :meth:`quantized` giving them ready to upload)."""

    def __init__(self, ckpt: Any, meta: dict[str, str]):
        self._ckpt = ckpt
        self.path = ckpt.path
        self.layout = getattr(ckpt, "layout", None)
        try:
            entries = json.loads(meta.get("quantized", "{}"))
            whole = meta.get("quant", "none")  # the kind of every matrix in files without one each
            self._shapes = {k: (int(v[0]), int(v[1])) for k, v in entries.items()}
            self._kinds = {k: Quant.parse(v[2] if len(v) > 2 else whole) for k, v in entries.items()}
        except (ValueError, TypeError, IndexError, KeyError, AttributeError, ConfigError) as exc:
            raise CheckpointError(f"{self.path}: damaged prefab metadata ({exc})") from exc
        if any(kind is Quant.NONE for kind in self._kinds.values()):
            raise CheckpointError(f"{self.path}: damaged prefab metadata (a quantized matrix without its kind)")
        # file order, each quantized matrix where its codes are
        self._names = [n.removesuffix(".qcodes")
                       for n in ckpt.names() if not n.endswith(".qscales")]  # fmt: skip

    def __enter__(self) -> PrefabView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __contains__(self, name: object) -> bool:
        return name in self._shapes or (name in self._ckpt and not str(name).endswith((".qcodes", ".qscales")))

    def __len__(self) -> int:
        return len(self._names)

    def names(self) -> list[str]:
        return list(self._names)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._shapes[name] if name in self._shapes else tuple(self._ckpt.shape(name))

    def dtype(self, name: str) -> str:
        return self._kinds[name].value if name in self._shapes else str(self._ckpt.dtype(name))

    def quantized(self, name: str) -> QuantizedMatrix | None:
        if name not in self._shapes:
            return None
        rows, k = self._shapes[name]
        codes = self._ckpt.load(f"{name}.qcodes", np.uint32)
        scales = self._ckpt.load(f"{name}.qscales", np.float32)
        kind = self._kinds[name]
        block = INT8_BLOCK if kind is Quant.INT8 else Q4_BLOCK
        return QuantizedMatrix(kind, rows, k, -(-k // block) * block, codes, scales)

    def load(self, name: str, dtype: Any = np.float32) -> np.ndarray:
        q = self.quantized(name)
        if q is not None:
            return q.dequantize().astype(dtype)
        return self._ckpt.load(name, dtype)

    def close(self) -> None:
        self._ckpt.close()


def prefab_metadata(ckpt: Any) -> dict[str, str] | None:
    """The prefab metadata of an open safetensors checkpoint, or None for any other file."""
    reader = getattr(ckpt, "_reader", None)
    meta = getattr(reader, "metadata", None) or {}
    return dict(meta) if meta.get("format") == FORMAT else None
