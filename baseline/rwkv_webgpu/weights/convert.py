"""Convert any readable checkpoint to web-rwkv's ``.st`` layout (fp16, renamed, transposed).

The output loads in web-rwkv / Ai00 as well as here. Tensors are streamed one at a time.
Like web-rwkv's converter, RWKV-5.1's per-head decay and bonus ``(H,)`` are repeated to
``(H, N)`` (so the file reads back as 5.2, which computes the same thing); RWKV-5.0's
log-space ``time_first`` is stored as its exponential, the bonus web-rwkv expects.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..config import ModelInfo, Version
from .checkpoint import Checkpoint, open_checkpoint
from .detect import detect
from .names import LAYOUT_KEY, Layout, is_transposed, swap_last2, to_webrwkv
from .safetensors_io import TensorSpec, write_safetensors

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class _Step:
    source: str  # official name
    spec: TensorSpec  # what is written
    transpose: bool
    exp: bool = False  # RWKV-5.0 time_first -> bonus
    repeat: int = 1  # RWKV-5.1 (H,) -> (H, N)


def _plan(ckpt: Checkpoint, info: ModelInfo | None) -> list[_Step]:
    v5 = info is not None and info.version is Version.V5
    steps = []
    for name in ckpt.names():
        shape = ckpt.shape(name)
        leaf = name.rsplit(".", 1)[-1]
        exp = v5 and leaf == "time_first"
        repeat = 1
        if v5 and info is not None and info.sub_version == "5.1" and leaf in (
            "time_decay", "time_faaaa", "time_first"
        ):  # fmt: skip
            repeat = info.head_size
            shape = (*shape, repeat)
        target = to_webrwkv(name)
        transpose = is_transposed(target) and len(shape) >= 2
        out_shape = swap_last2(shape) if transpose else shape
        steps.append(_Step(name, TensorSpec(target, "f16", out_shape), transpose, exp, repeat))
    return steps


def _produce(ckpt: Checkpoint, step: _Step) -> np.ndarray:
    arr: np.ndarray
    if step.exp:
        arr = np.exp(ckpt.load(step.source, np.float32)).astype(np.float16)
    else:
        arr = ckpt.load(step.source, np.float16)  # block-wise: ~1x the fp16 tensor in memory
    if step.repeat > 1:
        arr = np.repeat(arr[..., None], step.repeat, axis=-1)
    if step.transpose:
        arr = np.ascontiguousarray(arr.swapaxes(-1, -2))
    if ckpt.dtype(step.source) != "f16" and np.isinf(arr).any():
        log.warning("%s: %s overflows fp16 (stored as inf)", ckpt.path, step.source)
    return arr


def convert(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], progress: Progress | None = None
) -> None:
    """Write ``src`` (any format :func:`open_checkpoint` reads) to ``dst`` as a web-rwkv ``.st``.

    A full model is validated first (:func:`detect`); a file without ``emb.weight`` (a state
    or LoRA file) is converted name by name. ``progress(done, total, name)`` follows each
    tensor. ``dst`` is replaced atomically.
    """
    with open_checkpoint(src) as ckpt:
        info = detect(ckpt) if "emb.weight" in ckpt else None
        steps = _plan(ckpt, info)
        by_target = {s.spec.name: s for s in steps}
        write_safetensors(
            os.fspath(dst),
            [s.spec for s in steps],
            lambda spec: _produce(ckpt, by_target[spec.name]),
            metadata={"format": "pt", LAYOUT_KEY: Layout.WEB_RWKV.value},
            progress=None if progress is None else _by_source(progress, by_target),
        )


def _by_source(progress: Progress, by_target: dict[str, _Step]) -> Progress:
    """Report official names to the caller, not the written ones."""
    return lambda done, total, name: progress(done, total, by_target[name].source)
