"""`load_model`: open a checkpoint, detect its version, stream weights to the GPU."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .config import Version
from .errors import UnknownVersionError
from .gpu import get_device
from .models.base import Model, Progress
from .weights.quant import QuantPlan

log = logging.getLogger(__name__)


def _model_class(version: Version) -> type[Model]:
    from .models.v4 import V4Model
    from .models.v5 import V5Model
    from .models.v6 import V6Model
    from .models.v7 import V7Model

    classes: dict[Version, type[Model]] = {
        Version.V4: V4Model,
        Version.V5: V5Model,
        Version.V6: V6Model,
        Version.V7: V7Model,
    }
    if version not in classes:
        raise UnknownVersionError(f"RWKV {version.value} models are not supported by this build yet")
    return classes[version]


def load_model(
    path: str | os.PathLike[str],
    *,
    adapter: str | None = None,
    token_chunk_size: int | None = None,
    tokenizer: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
    device: Any = None,
    state_file: str | os.PathLike[str] | None = None,
    quant: str | Mapping[str, str] | None = None,
    quant_layers: int | Iterable[int] | None = None,
    lora: Sequence[Any] = (),
) -> Model:
    """Load an RWKV checkpoint (official ``.pth``, safetensors, or web-rwkv ``.st``) onto a GPU.

    ``adapter`` filters adapters by name/backend words ("vulkan", "nvidia", ...); None picks the
    high-performance one. ``token_chunk_size`` is the most tokens one GPU submission processes
    (None: 1024 on GPUs, where a 1024-token prompt runs 2-20% faster in one chunk than in two
    of 512 and about twice as fast as in 128-token chunks, and 128 on CPU adapters such as
    lavapipe).
    ``tokenizer`` is "world", a ``tokenizer.json`` or a vocab file; None picks "world" for 65536-token
    vocabularies. ``progress(done, total, what)`` is called as layers reach the GPU.
    ``state_file`` is a state-tuning checkpoint (``blocks.{i}.att.time_state``) whose state
    every new slot starts from; ``time_state`` tensors inside the model file are used too.
    ``quant`` ("int8", "nf4", "sf4") stores the large attention/FFN matrices quantized on the
    GPU, or a mix per block or matrix: ``{"att": "int8", "ffn": "nf4"}`` (``"att.key"`` and the
    like name one matrix, winning over its block; the string ``"att=int8,ffn=nf4"`` is the same);
    ``quant_layers`` limits it to the first N layers (an int) or to a set of layer indices.
    ``lora`` is a list of :class:`rwkv_webgpu.LoraSpec` merged in order at load.
    """
    from .weights.detect import detect

    dev = device or get_device(adapter)
    with open_model_file(path, lora) as ckpt:
        info = detect(ckpt)
        log.info("loading %s from %s", info.describe(), path)
        chunk = token_chunk_size
        if chunk is None:
            chunk = 128 if dev.info.cpu else 1024
        model = _model_class(info.version)(info, dev, token_chunk_size=chunk)
        layers = range(quant_layers) if isinstance(quant_layers, int) else quant_layers
        model.set_quantization(QuantPlan.parse(quant), layers)
        model.load_common(ckpt, progress)
        model.load_layers(ckpt, progress)
        if info.has_time_state:
            model.load_time_state(ckpt, os.fspath(path))
    if state_file is not None:
        from .weights import open_checkpoint

        with open_checkpoint(state_file) as sckpt:
            model.load_time_state(sckpt, os.fspath(state_file))
    model.path = os.fspath(path)
    model.lora = tuple(lora)  # type: ignore[attr-defined]
    model.tokenizer = _tokenizer_for(model, tokenizer)
    return model


def open_model_file(path: str | os.PathLike[str], lora: Sequence[Any] = ()) -> Any:
    """The checkpoint view the loader reads: a prefab file's quantized matrices included, and
    the given LoRAs (``LoraSpec``) merged in order as tensors are loaded."""
    from .weights import open_checkpoint
    from .weights.lora import with_loras
    from .weights.prefab import PrefabView, prefab_metadata

    ckpt = open_checkpoint(path)
    meta = prefab_metadata(ckpt)
    view: Any = PrefabView(ckpt, meta) if meta is not None else ckpt  # both offer the Checkpoint API
    return with_loras(view, lora)


def _tokenizer_for(model: Model, spec: str | os.PathLike[str] | None) -> Any:
    from .tokenizer import load_tokenizer

    if spec is not None:
        return load_tokenizer(spec)
    if model.info.num_vocab == 65536:
        return load_tokenizer("world")
    return None

