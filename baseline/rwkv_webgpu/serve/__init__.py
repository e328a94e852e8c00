"""Scale out on Ray (the ``[ray]`` extra): a Ray Serve deployment answering the OpenAI
completions and chat API, and a Ray Data predictor for ``Dataset.map_batches``.

``ServeConfig``, ``OpenAIServer`` and ``create_app`` need only FastAPI; ``build_app``,
``app_builder`` and ``RWKVDeployment`` import Ray Serve when first used.
"""

from __future__ import annotations

from typing import Any

from .batch import RWKVPredictor
from .server import OpenAIServer, ServeConfig

__all__ = ["OpenAIServer", "RWKVDeployment", "RWKVPredictor", "ServeConfig", "app_builder",
           "build_app", "create_app"]  # fmt: skip


def __getattr__(name: str) -> Any:
    # Ray Serve and FastAPI are imported on first use, not with the package
    if name in ("build_app", "app_builder", "RWKVDeployment"):
        from . import deployment

        return getattr(deployment, name)
    if name == "create_app":
        from .http import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
