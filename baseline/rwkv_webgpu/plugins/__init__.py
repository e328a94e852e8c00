"""Plugins: pluggy hooks for models, loaders, samplers, tokenizers, model hooks and state stores,
plus event callbacks. See docs/plugins.md.

A plugin is a module with :data:`hookimpl`-decorated functions named as in :mod:`.hookspecs`,
installed under the ``rwkv_webgpu`` entry-point group.
"""

from .hookspecs import hookimpl, hookspec
from .manager import (
    ENTRY_POINT_GROUP,
    EVENTS,
    LOAD_ENV,
    ModelLoader,
    ModelSource,
    Plugins,
    create_manager,
    get_plugins,
    listening,
    set_plugins,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "EVENTS",
    "LOAD_ENV",
    "ModelLoader",
    "ModelSource",
    "Plugins",
    "create_manager",
    "get_plugins",
    "hookimpl",
    "hookspec",
    "listening",
    "set_plugins",
]
