"""The built-in pieces, registered through the same hooks a third-party plugin implements."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import CheckpointError
from .hookspecs import hookimpl
from .manager import ModelSource

if TYPE_CHECKING:
    from ..models.base import Model
    from ..state import State

PREFIX_FORMAT = "rwkv-webgpu-prefix"


class FileStateStore:
    """A one-slot state in a file: the state at ``location`` (:meth:`State.save`), its tokens in
    ``location + ".json"``. The state follows all the tokens but the last ``pending``."""

    def save(self, state: State, location: str, tokens: Sequence[int], pending: int = 0) -> str:
        path = Path(location)
        path.parent.mkdir(parents=True, exist_ok=True)
        state.save(path)
        side = {
            "format": PREFIX_FORMAT,
            "format_version": 1,
            "tokens": [int(t) for t in tokens],
            "pending": pending,
        }
        tmp = path.with_name(path.name + ".json.tmp")
        tmp.write_text(json.dumps(side))
        os.replace(tmp, path.with_name(path.name + ".json"))
        return os.fspath(path)

    def load(self, model: Model, location: str) -> tuple[State, list[int], int]:
        path = Path(location)
        side = path.with_name(path.name + ".json")
        try:
            meta = json.loads(side.read_text())
        except (OSError, ValueError) as exc:
            raise CheckpointError(
                f"{side}: cannot read the tokens of the saved state ({exc})"
            ) from exc
        if meta.get("format") != PREFIX_FORMAT:
            raise CheckpointError(
                f"{side} is not a saved rwkv-webgpu prefix (format {meta.get('format')!r})"
            )
        return model.load_state(path), [int(t) for t in meta["tokens"]], int(meta.get("pending", 0))


@hookimpl
def register_models(register: Any) -> None:
    from ..cli import demo_model_path

    path = demo_model_path()
    if path is not None:
        register(
            "demo",
            ModelSource(str(path), str(path.with_name("tokenizer.json")), "the bundled demo model"),
        )


@hookimpl
def register_model_loaders(register: Any) -> None:
    from ..loader import load_model

    register("rwkv", load_model, (".pth", ".safetensors", ".st"))


@hookimpl
def register_samplers(register: Any) -> None:
    from ..sampling import Sampler

    register("default", Sampler.for_model)


@hookimpl
def register_tokenizers(register: Any) -> None:
    from ..tokenizer import load_tokenizer

    register("world", lambda: load_tokenizer("world"))


@hookimpl
def register_state_stores(register: Any) -> None:
    register("file", FileStateStore())
