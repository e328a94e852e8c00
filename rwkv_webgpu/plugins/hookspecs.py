"""The hooks a plugin implements (decorate each with :data:`hookimpl`). Argument names are the API:
an implementation may take fewer of them, never others."""

from __future__ import annotations

from typing import Any

from pluggy import HookimplMarker, HookspecMarker

hookspec = HookspecMarker("rwkv_webgpu")
hookimpl = HookimplMarker("rwkv_webgpu")


@hookspec
def register_models(register: Any) -> None:
    """Name models: ``register(name, source)``, source a ModelSource or a callable returning one."""


@hookspec
def register_model_loaders(register: Any) -> None:
    """Load checkpoint formats: ``register(name, loader, suffixes)``, ``loader(path, **options) -> Model``.

    Options are ``tokenizer`` and ``adapter``, and ``quant`` (a ``QuantPlan``) only when the
    user asked for quantization; a loader without that keyword is reported as unable to quantize."""


@hookspec
def register_samplers(register: Any) -> None:
    """Add samplers: ``register(name, factory)``, ``factory(model, config)(logits) -> token id``."""


@hookspec
def register_tokenizers(register: Any) -> None:
    """Add tokenizers: ``register(name, factory)``, ``factory() -> Tokenizer``."""


@hookspec
def register_hooks(register: Any) -> None:
    """Add model hooks: ``register(name, fn, points="*")``, ``fn(frame)`` at matching points (docs/hooks.md)."""


@hookspec
def register_state_stores(register: Any) -> None:
    """Add state stores: ``register(scheme, store)`` with ``store.save(...)``/``store.load(...)``."""


@hookspec
def on_state_saved(model_id: str, location: str, tokens: list[int]) -> None:
    """Called after the state after ``tokens`` was saved to ``location``."""


@hookspec
def on_state_loaded(model_id: str, location: str, tokens: list[int]) -> None:
    """Called after the state after ``tokens`` was loaded from ``location``."""


@hookspec
def on_hook_fired(model_id: str, hook: str, layer: int, data: Any) -> None:
    """Called after a step for each tensor a model hook captured (``hook`` is the capture key)."""
