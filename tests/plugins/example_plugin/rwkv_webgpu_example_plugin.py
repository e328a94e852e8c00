"""An example rwkv_webgpu plugin (see docs/plugins.md).

It adds the sampler "example-runner-up" (always the second most likely token), a model hook
"example-hook" (captures layer 0's output) and a callback that records every saved state.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rwkv_webgpu.plugins import hookimpl

saved: list[dict[str, Any]] = []  # what on_state_saved was told, for the tests


class RunnerUp:
    """Choose the second most likely token (argmax when greedy would pick the first)."""

    def __init__(self, model: Any, config: Any):
        self.calls = 0

    def __call__(self, logits: np.ndarray) -> int:
        self.calls += 1
        return int(np.argsort(-np.asarray(logits), kind="stable")[1])


def example_hook(frame: Any) -> None:
    """Read the residual stream leaving layer 0 back after every step (a hook_fired event each)."""
    frame.capture("example")


fired: list[str] = []  # the points hook_fired reported, for the tests


@hookimpl
def register_samplers(register: Any) -> None:
    register("example-runner-up", RunnerUp)


@hookimpl
def register_hooks(register: Any) -> None:
    register("example-hook", example_hook, "0.out")


@hookimpl
def on_hook_fired(model_id: str, hook: str, layer: int, data: Any) -> None:
    fired.append(hook)


@hookimpl
def on_state_saved(model_id: str, location: str, tokens: list[int]) -> None:
    saved.append({"model_id": model_id, "location": location, "tokens": tokens})
