"""LoRA merging at load time: a :class:`LoraCheckpoint` looks like the base checkpoint with
every LoRA already applied, so the model loader reads it unchanged.

A LoRA file (``.pth``, ``.safetensors`` or web-rwkv ``.st``) holds two kinds of tensors:

* low-rank pairs ``A (rank, in)``, ``B (out, rank)`` for a base matrix ``W (out, in)``, named
  ``blocks.3.att.key.lora_A`` (RWKV-LM-LoRA / RWKV-PEFT), ``blocks.3.att.key.weight.lora_A``,
  ``base_model.model.blocks.3.att.key.lora_A.weight`` (HF PEFT) or, in a web-rwkv ``.st``,
  ``blocks.3.att.key.lora.0`` (stored transposed; :class:`Checkpoint` swaps it back).
  Merge: ``W += (alpha / rank) * B @ A``.
* any other tensor under a base name (``blocks.0.att.time_decay``, ``blocks.1.ln1.weight``, ...)
  is a trained full value. It is *blended*: ``W = W + blend * (T - W)``; ``blend = 1`` (the
  default) replaces ``W`` by ``T``, as RWKV-LM's ``merge_lora.py`` does, and matches web-rwkv's
  vector rule ``alpha * T + (1 - alpha) * W`` (``src/model/loader.rs``, ``LoraBlend::full``).
  (web-rwkv *adds* ``alpha * T`` to att/ffn matrices and the embedding instead; we do not,
  because RWKV-LM training files store full trained values, not deltas.)

Within one LoRA the full value is applied first, then the low-rank update; LoRAs apply in the
order given, each only to the tensors its ``patterns`` select (fnmatch on official names).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from types import TracebackType

import numpy as np

from ..errors import CheckpointError, ShapeError
from .checkpoint import Checkpoint, open_checkpoint
from .names import to_webrwkv

log = logging.getLogger(__name__)

# safetensors metadata keys that may carry the LoRA alpha
ALPHA_KEYS = ("lora_alpha", "alpha")
_PEFT_PREFIX = "base_model.model."


@dataclass(frozen=True)
class LoraSpec:
    """Which LoRA file to apply, and how strongly.

    ``alpha``: the low-rank scale is ``alpha / rank``; None takes ``lora_alpha`` from the file's
    safetensors metadata, else uses ``rank`` (scale 1). ``patterns``: fnmatch patterns on official
    tensor names (``"blocks.*.att.*"``); a tensor is changed when any pattern matches.
    ``blend``: the factor for full tensors in the file (1 replaces the base value, 0 ignores it).
    """

    path: str | os.PathLike[str]
    alpha: float | None = None
    patterns: Sequence[str] = ("*",)
    blend: float = 1.0

    def __post_init__(self) -> None:
        pats = (self.patterns,) if isinstance(self.patterns, str) else tuple(self.patterns)
        object.__setattr__(self, "patterns", pats)
        for what, v in (("alpha", self.alpha), ("blend", self.blend)):
            if v is not None and not math.isfinite(v):
                raise ValueError(f"LoRA {what} must be finite, got {v}")

    def selects(self, name: str) -> bool:
        return any(fnmatchcase(name, p) for p in self.patterns)


@dataclass(frozen=True)
class LoraPair:
    """One low-rank update: tensor names in the LoRA file and the rank."""

    a: str
    b: str
    rank: int


@dataclass
class Lora:
    """An open LoRA file, indexed by the base tensor each entry changes (tensors load lazily)."""

    spec: LoraSpec
    ckpt: Checkpoint
    alpha: float | None  # spec.alpha, else the file's; None = rank (scale 1)
    pairs: dict[str, LoraPair] = field(default_factory=dict)
    full: dict[str, str] = field(default_factory=dict)  # base name -> name in the file

    @property
    def path(self) -> str:
        return self.ckpt.path

    def targets(self) -> list[str]:
        return list(dict.fromkeys([*self.full, *self.pairs]))

    def scale(self, target: str) -> float:
        rank = self.pairs[target].rank
        return (rank if self.alpha is None else self.alpha) / rank

    def delta(self, target: str) -> np.ndarray:
        """``(alpha / rank) * B @ A`` in float32, shape of the base matrix."""
        pair = self.pairs[target]
        a = self.ckpt.load(pair.a, np.float32)
        b = self.ckpt.load(pair.b, np.float32)
        out: np.ndarray = (b @ a) * np.float32(self.scale(target))
        return out

    def rename(self, old: str, new: str) -> None:
        """Re-key one target (after resolving it against the base's names)."""
        if old in self.pairs:
            self.pairs[new] = self.pairs.pop(old)
        if old in self.full:
            self.full[new] = self.full.pop(old)

    def close(self) -> None:
        self.ckpt.close()

    def __enter__(self) -> Lora:  # noqa: PYI034 - not meant to be subclassed
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _split(name: str) -> tuple[str, str | None]:
    """LoRA-file name -> (base tensor name, "A" | "B" | None for a full tensor)."""
    name = name.removeprefix(_PEFT_PREFIX)
    for part in ("A", "B"):
        tag = f".lora_{part}"
        if name.endswith(tag + ".weight"):  # HF PEFT: <module>.lora_A.weight
            return name[: -len(tag + ".weight")] + ".weight", part
        if name.endswith(".weight" + tag):  # <module>.weight.lora_A
            return name[: -len(tag)], part
        if name.endswith(tag):  # RWKV-LM: <module>.lora_A
            return name[: -len(tag)] + ".weight", part
    return name, None


def _file_alpha(ckpt: Checkpoint) -> float | None:
    meta = getattr(getattr(ckpt, "_reader", None), "metadata", None) or {}
    for key in ALPHA_KEYS:
        if key in meta:
            try:
                return float(meta[key])
            except ValueError:
                msg = f"{ckpt.path}: metadata {key}={meta[key]!r} is not a number"
                raise CheckpointError(msg) from None
    return None


def read_lora(spec: LoraSpec) -> Lora:
    """Open and index a LoRA file (either naming, any supported format). Close it when done."""
    ckpt = open_checkpoint(spec.path)
    try:
        lora = Lora(spec, ckpt, spec.alpha if spec.alpha is not None else _file_alpha(ckpt))
        halves: dict[str, dict[str, str]] = {}
        for name in ckpt.names():
            target, part = _split(name)
            if part is None:
                if target in lora.full:
                    raise CheckpointError(f"{ckpt.path}: two tensors for {target!r}")
                lora.full[target] = name
            elif halves.setdefault(target, {}).setdefault(part, name) != name:
                raise CheckpointError(f"{ckpt.path}: two lora_{part} tensors for {target!r}")
        for target, ab in halves.items():
            lora.pairs[target] = _pair(ckpt, target, ab)
        if not lora.pairs and not lora.full:
            raise CheckpointError(f"{ckpt.path}: no tensors in this LoRA file")
        log.info("%s: LoRA with %d low-rank pairs and %d full tensors, alpha %s",
                 ckpt.path, len(lora.pairs), len(lora.full), lora.alpha)  # fmt: skip
        return lora
    except BaseException:
        ckpt.close()
        raise


def _pair(ckpt: Checkpoint, target: str, ab: dict[str, str]) -> LoraPair:
    if set(ab) != {"A", "B"}:
        have = next(iter(ab.values()))
        raise CheckpointError(
            f"{ckpt.path}: {have!r} has no matching lora_{'B' if 'A' in ab else 'A'}"
        )
    sa, sb = ckpt.shape(ab["A"]), ckpt.shape(ab["B"])
    if len(sa) != 2 or len(sb) != 2 or sa[0] != sb[1]:
        raise ShapeError(
            f"{ckpt.path}: {ab['A']!r} {sa} and {ab['B']!r} {sb} are not a LoRA pair "
            "(expected A (rank, in) and B (out, rank))"
        )
    if sa[0] == 0:
        raise ShapeError(f"{ckpt.path}: {ab['A']!r} has rank 0")
    return LoraPair(ab["A"], ab["B"], sa[0])


def _squeezed(shape: Sequence[int]) -> tuple[int, ...]:
    return tuple(d for d in shape if d != 1)


class LoraCheckpoint:
    """A base checkpoint with LoRAs merged on load; the same interface as :class:`Checkpoint`.

    Owns ``base`` and every LoRA: :meth:`close` closes them all. Names, shapes and order are
    the base's; :meth:`load` of a tensor no selected LoRA touches reads the base unchanged.
    """

    def __init__(self, base: Checkpoint, loras: Sequence[Lora]) -> None:
        self._base = base
        self.path: str = base.path
        self.layout = getattr(base, "layout", None)
        self.loras = list(loras)
        # base name -> the LoRAs that change it, in order
        self._plan: dict[str, list[Lora]] = {}
        index = {to_webrwkv(n): n for n in base.names()}
        for lora in self.loras:
            for target in lora.targets():
                name = self._resolve(lora, target, index)
                if name is None:
                    continue
                self._check(lora, name)
                self._plan.setdefault(name, []).append(lora)
            if not any(lora in ls for ls in self._plan.values()):
                log.warning("%s: patterns %s select no tensor", lora.path, list(lora.spec.patterns))

    def _resolve(self, lora: Lora, target: str, index: dict[str, str]) -> str | None:
        """The base name a LoRA target changes (None when its patterns skip it)."""
        name = target
        if name not in self._base:
            # a web-rwkv file's renames are undone from its own names only; the base decides
            name = index.get(to_webrwkv(target), target)
            if name != target:
                lora.rename(target, name)
        if not lora.spec.selects(name):
            return None
        if name not in self._base:
            raise CheckpointError(
                f"{lora.path}: LoRA tensor for {target!r}, which {self.path} does not have"
            )
        return name

    def _check(self, lora: Lora, name: str) -> None:
        want = tuple(self._base.shape(name))
        if name in lora.full:
            got = tuple(lora.ckpt.shape(lora.full[name]))
            # a vector may differ in unit dimensions only ((C,) for (1, 1, C)); matrices exactly
            vector = len(_squeezed(want)) <= 1 and _squeezed(got) == _squeezed(want)
            if got != want and not vector:
                raise ShapeError(
                    f"{lora.path}: {lora.full[name]!r} has shape {got}, {name} is {want}"
                )
        if name in lora.pairs:
            pair = lora.pairs[name]
            out, rank = lora.ckpt.shape(pair.b)
            in_ = lora.ckpt.shape(pair.a)[1]
            if len(want) != 2 or (out, in_) != want:
                raise ShapeError(
                    f"{lora.path}: {pair.a!r}/{pair.b!r} give a ({out}, {in_}) update "
                    f"(rank {rank}), {name} is {want}"
                )

    # -- the Checkpoint interface -----------------------------------------------------------
    def __enter__(self) -> LoraCheckpoint:  # noqa: PYI034 - not meant to be subclassed
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __contains__(self, name: object) -> bool:
        return name in self._base

    def __len__(self) -> int:
        return len(self._base)

    def names(self) -> list[str]:
        return self._base.names()

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._base.shape(name))

    def dtype(self, name: str) -> str:
        """The base's stored dtype, or "f32" for a merged tensor (merging happens in f32)."""
        return "f32" if name in self._plan else self._base.dtype(name)

    def merged(self) -> list[str]:
        """Names of the tensors at least one LoRA changes."""
        return list(self._plan)

    def quantized(self, name: str) -> object | None:
        """A prefab base's ready quantized matrix, only where no LoRA changes it."""
        ready = getattr(self._base, "quantized", None)
        return None if ready is None or name in self._plan else ready(name)

    def load(self, name: str, dtype: np.dtype | type = np.float32) -> np.ndarray:
        """One tensor with every selected LoRA applied, as a new C-contiguous ``dtype`` array."""
        loras = self._plan.get(name)
        if not loras:
            return self._base.load(name, dtype)
        w = self._base.load(name, np.float32)
        for lora in loras:
            if name in lora.full:
                t = lora.ckpt.load(lora.full[name], np.float32).reshape(w.shape)
                w += np.float32(lora.spec.blend) * (t - w)
            if name in lora.pairs:
                w += lora.delta(name)
        return np.ascontiguousarray(w.astype(dtype, copy=False))

    def close(self) -> None:
        for lora in self.loras:
            lora.close()
        self._base.close()


def with_loras(base: Checkpoint, specs: Sequence[LoraSpec]) -> Checkpoint | LoraCheckpoint:
    """``base`` with ``specs`` applied in order (``base`` itself when there are none).

    Takes ownership of ``base``: on any error it is closed along with the LoRA files read so far.
    """
    if not specs:
        return base
    loras: list[Lora] = []
    try:
        for spec in specs:
            loras.append(read_lora(spec))
        return LoraCheckpoint(base, loras)
    except BaseException:
        for lora in loras:
            lora.close()
        base.close()
        raise
