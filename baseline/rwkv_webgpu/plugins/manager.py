"""The plugin manager: built-in pieces plus the plugins installed under the ``rwkv_webgpu``
entry-point group, and what they registered.

Nothing is loaded at import: :func:`get_plugins` builds the manager on first use. Installed plugins
are loaded unless the ``RWKV_WEBGPU_LOAD_PLUGINS`` environment variable says otherwise: empty loads
none, ``"a,b"`` only the entry points named a and b. The built-in plugin is always registered, and
registered first, so (pluggy calling the last registered first) a plugin's name wins over a
built-in one.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

import pluggy

from ..errors import RWKVError
from . import hookspecs

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "rwkv_webgpu"
LOAD_ENV = "RWKV_WEBGPU_LOAD_PLUGINS"
EVENTS = ("state_saved", "state_loaded", "hook_fired")

Listener = Callable[[str, dict[str, Any]], None]
_listeners: contextvars.ContextVar[tuple[Listener, ...]] = contextvars.ContextVar(
    "rwkv_webgpu_event_listeners", default=()
)


@dataclass(frozen=True)
class ModelSource:
    """Where a named model lives: its checkpoint and (optionally) its tokenizer."""

    path: str
    tokenizer: str | None = None
    description: str = ""


@dataclass(frozen=True)
class ModelLoader:
    """A checkpoint loader for the files whose names end with one of ``suffixes``."""

    name: str
    load: Callable[..., Any]
    suffixes: tuple[str, ...]


def _autoload_setting() -> bool | list[str]:
    # The one environment read outside cli.py: plugins are loaded by library users too
    # (LangChain, llm), who need the same switch as the command line.
    value = os.environ.get(LOAD_ENV)
    if value is None:
        return True
    return [name.strip() for name in value.split(",") if name.strip()]


def create_manager(autoload: bool | Sequence[str] | None = None) -> pluggy.PluginManager:
    """A plugin manager with the built-ins and the installed plugins ``autoload`` selects:
    True all, False none, a list of names those entry points; None reads ``RWKV_WEBGPU_LOAD_PLUGINS``."""
    from . import builtin

    pm = pluggy.PluginManager("rwkv_webgpu")
    pm.add_hookspecs(hookspecs)
    pm.register(builtin, name="rwkv_webgpu.builtin")
    which = _autoload_setting() if autoload is None else autoload
    if which is True:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    elif which:
        wanted = set(which)
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in wanted and pm.get_plugin(ep.name) is None:
                pm.register(ep.load(), name=ep.name)
    return pm


class Plugins:
    """A plugin manager and the things its plugins register, looked up by name."""

    def __init__(self, pm: pluggy.PluginManager):
        self.pm = pm

    def names(self) -> list[str]:
        """Names of the registered plugins, built-in first."""
        return [name for name, _ in self.pm.list_name_plugin()]

    def _collect(self, hook: str) -> dict[str, Any]:
        found: dict[str, Any] = {}

        def register(name: str, obj: Any, *extra: Any) -> None:
            if name in found:  # an earlier-called (later-registered) plugin already took it
                log.debug("%s: %r registered again, keeping the first", hook, name)
                return
            found[name] = (obj, *extra) if extra else obj

        getattr(self.pm.hook, hook)(register=register)
        return found

    def models(self) -> dict[str, ModelSource | Callable[[], ModelSource]]:
        return self._collect("register_models")

    def model_loaders(self) -> dict[str, ModelLoader]:
        return {n: ModelLoader(n, load, tuple(suf)) for n, (load, suf) in self._collect("register_model_loaders").items()}  # fmt: skip

    def samplers(self) -> dict[str, Callable[..., Any]]:
        return self._collect("register_samplers")

    def tokenizers(self) -> dict[str, Callable[[], Any]]:
        return self._collect("register_tokenizers")

    def hooks(self) -> dict[str, Any]:
        return self._collect("register_hooks")

    def attach_hooks(self, model: Any, model_id: str) -> list[str]:
        """Add every plugin hook to ``model`` (``register(name, fn, points="*")``: ``fn(frame)`` runs
        at each matching point, see docs/hooks.md) and report captured tensors as
        ``hook_fired`` events. Returns the names attached."""
        attached = []
        for name, entry in self.hooks().items():
            fn, points = entry if isinstance(entry, tuple) else (entry, "*")
            model.hooks.add(points, fn)
            attached.append(name)

        def fired(point: str, layer: int | None, data: Any) -> None:
            where = point.split(".", 1)[0]
            self.emit("hook_fired", model_id=model_id, hook=point, layer=int(where) if where.isdigit() else -1, data=data)

        model.hooks.on_fired = fired
        return attached

    def state_stores(self) -> dict[str, Any]:
        return self._collect("register_state_stores")

    def _lookup(self, kind: str, table: dict[str, Any], name: str) -> Any:
        if name not in table:
            known = ", ".join(sorted(table)) or "none"
            raise RWKVError(
                f"no {kind} named {name!r} is registered (known: {known}); is its plugin installed?"
            )
        return table[name]

    def sampler(self, name: str) -> Callable[..., Any]:
        """The factory of the sampler ``name``: ``factory(model, config)`` makes a sampler."""
        factory: Callable[..., Any] = self._lookup("sampler", self.samplers(), name)
        return factory

    def state_store(self, scheme: str) -> Any:
        return self._lookup("state store", self.state_stores(), scheme)

    def tokenizer(self, name: str) -> Any:
        """A new tokenizer from the factory registered as ``name``."""
        return self._lookup("tokenizer", self.tokenizers(), name)()

    def model_source(self, name: str) -> ModelSource | None:
        """The model registered as ``name``, or None."""
        source = self.models().get(name)
        if source is None or isinstance(source, ModelSource):
            return source
        resolved = source()
        if not isinstance(resolved, ModelSource):
            raise RWKVError(
                f"the provider of model {name!r} returned {resolved!r}, not a ModelSource"
            )
        return resolved

    def loader_for(self, path: str) -> ModelLoader:
        """The loader whose suffixes match ``path`` (the built-in one for unknown suffixes)."""
        loaders = self.model_loaders()
        for loader in loaders.values():
            if path.lower().endswith(tuple(s.lower() for s in loader.suffixes)):
                return loader
        fallback: ModelLoader = self._lookup("model loader", loaders, "rwkv")
        return fallback

    def emit(self, event: str, **data: Any) -> None:
        """Deliver ``event`` to the plugins' ``on_<event>`` hooks, then to this context's listeners.

        A failing callback is logged, never raised: an event must not undo the work it reports.
        """
        if event not in EVENTS:
            raise ValueError(f"unknown event {event!r}; events are {', '.join(EVENTS)}")
        try:
            getattr(self.pm.hook, f"on_{event}")(**data)
        except Exception:
            log.exception("a plugin's on_%s failed", event)
        for listener in _listeners.get():
            try:
                listener(event, data)
            except Exception:
                log.exception("an event listener failed on %s", event)


@contextlib.contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """Also send events emitted in this context (thread or task) to ``listener(event, data)``."""
    token = _listeners.set((*_listeners.get(), listener))
    try:
        yield
    finally:
        _listeners.reset(token)


_lock = threading.Lock()
_plugins: Plugins | None = None


def get_plugins() -> Plugins:
    """The process-wide plugins, loaded on first use."""
    global _plugins
    with _lock:
        if _plugins is None:
            _plugins = Plugins(create_manager())
        return _plugins


def set_plugins(plugins: Plugins | None) -> None:
    """Replace the process-wide plugins (None: load them again on next use). For tests and embedders."""
    global _plugins
    with _lock:
        _plugins = plugins
